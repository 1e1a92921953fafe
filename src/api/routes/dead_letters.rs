//! `/api/v1/dead-letters`: records that failed transformation or validation; list them,
//! fix one, replay one or all of a category (after a schema change), or give up on one.
//! A replay goes through the same transformation and validator as the source did and
//! is published to the pipeline like any other record.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::db::dead_letters::{self as store, Reason, StoredDeadLetter};
use crate::ingest::payload::Item;
use crate::model::transform::Transform;
use crate::web::error::{ApiError, ApiResult};
use crate::web::names::CategoryName;

/// Dead-letter routes.
#[derive(Default)]
pub struct DeadLettersApi;

/// Whether a dead letter still waits (`pending`) or was replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum LetterStatus {
    /// Not replayed yet.
    Pending,
    /// Replayed into its category.
    Replayed,
}

/// A fixed payload.
#[derive(Debug, Object)]
pub struct DeadLetterEdit {
    /// The record to replay instead of the one received.
    pub raw: Value,
}

/// What a replay did.
#[derive(Debug, Object)]
pub struct ReplayResult {
    /// Letters now valid and published to the pipeline.
    pub replayed: u64,
    /// Letters still invalid (their reasons are updated).
    pub failed: u64,
    /// Why each failed one failed, by dead-letter id.
    pub errors: Vec<LetterIssue>,
}

/// One reason a dead letter is still invalid.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LetterIssue {
    /// The dead letter.
    pub id: Uuid,
    /// The field concerned, if any.
    pub field: Option<String>,
    /// Why it is invalid.
    pub reason: String,
}

/// Most letters one replay-all handles (call again for more).
pub const MAX_REPLAY: i64 = 10_000;

async fn find(state: &AppState, id: Uuid) -> ApiResult<StoredDeadLetter> {
    store::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))
}

/// Replays letters: per category and source, the source's current transformation and
/// the category's current schema.
async fn replay(state: &AppState, letters: Vec<StoredDeadLetter>) -> ApiResult<ReplayResult> {
    let js = state.jetstream()?;
    let mut groups: BTreeMap<(String, String), Vec<StoredDeadLetter>> = BTreeMap::new();
    for l in letters {
        groups
            .entry((l.category.clone(), l.source.clone()))
            .or_default()
            .push(l);
    }
    let mut out = ReplayResult {
        replayed: 0,
        failed: 0,
        errors: vec![],
    };
    for ((category, source), letters) in groups {
        let transform = crate::db::sources::get(&state.pool, &source)
            .await?
            .filter(|s| s.category == category)
            .map(|s| s.transform)
            .unwrap_or_else(Transform::default);
        let items = letters
            .iter()
            .map(|l| Item::new(l.position.clone(), l.raw.clone()))
            .collect();
        let schema = state.schemas.get(&state.pool, &category).await?;
        let mut p = crate::ingest::prepare(&schema, &source, &transform, items);
        // Failed letters are stored already: only their reasons change.
        p.dead.clear();
        crate::ingest::publish(js, &state.cfg, &category, &p).await?;
        let failed: HashSet<u64> = p.errors.iter().filter_map(|e| e.index).collect();
        for (i, l) in letters.iter().enumerate() {
            if failed.contains(&(i as u64)) {
                let reasons: Vec<Reason> = p
                    .errors
                    .iter()
                    .filter(|e| e.index == Some(i as u64))
                    .map(|e| Reason {
                        field: e.field.clone(),
                        reason: e.reason.clone(),
                    })
                    .collect();
                store::replayed(&state.pool, l.id, Err((p.schema_version, &reasons))).await?;
                out.failed += 1;
                out.errors.extend(reasons.into_iter().map(|r| LetterIssue {
                    id: l.id,
                    field: r.field,
                    reason: r.reason,
                }));
            } else {
                store::replayed(&state.pool, l.id, Ok(p.schema_version)).await?;
                out.replayed += 1;
            }
        }
    }
    Ok(out)
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::DeadLetters")]
impl DeadLettersApi {
    /// Dead letters, oldest first (`category` needs read access to it; without it, an
    /// admin sees all).
    #[oai(
        path = "/dead-letters",
        method = "get",
        operation_id = "listDeadLetters"
    )]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        category: Query<Option<CategoryName>>,
        /// `pending` (default) or `replayed`.
        status: Query<Option<LetterStatus>>,
        /// Page size (default 100, at most 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
        /// The last id of the previous page.
        after: Query<Option<Uuid>>,
    ) -> ApiResult<Json<Vec<StoredDeadLetter>>> {
        match &category.0 {
            Some(c) => auth.principal().require_read(c)?,
            None => auth.principal().require_admin()?,
        }
        let status = match status.0.unwrap_or(LetterStatus::Pending) {
            LetterStatus::Pending => "pending",
            LetterStatus::Replayed => "replayed",
        };
        let limit = limit.0.unwrap_or(100).clamp(1, 1000);
        Ok(Json(
            store::list(
                &state.pool,
                category.0.as_deref(),
                Some(status),
                limit,
                after.0,
            )
            .await?,
        ))
    }

    /// One dead letter.
    #[oai(
        path = "/dead-letters/:id",
        method = "get",
        operation_id = "getDeadLetter"
    )]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<StoredDeadLetter>> {
        let l = find(&state, id.0).await?;
        auth.principal().require_read(&l.category)?;
        Ok(Json(l))
    }

    /// Fix a dead letter's payload (it is replayed only when asked).
    #[oai(
        path = "/dead-letters/:id",
        method = "put",
        operation_id = "editDeadLetter"
    )]
    async fn edit(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<DeadLetterEdit>,
    ) -> ApiResult<Json<StoredDeadLetter>> {
        let l = find(&state, id.0).await?;
        auth.principal().require_write(&l.category)?;
        let l = store::edit(&state.pool, id.0, &body.raw)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no dead letter {}", id.0)))?;
        Ok(Json(l))
    }

    /// Replay one dead letter: valid now, it is published and marked `replayed`;
    /// otherwise its reasons are updated and returned.
    #[oai(
        path = "/dead-letters/:id/replay",
        method = "post",
        operation_id = "replayDeadLetter"
    )]
    async fn replay_one(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<ReplayResult>> {
        let l = find(&state, id.0).await?;
        auth.principal().require_write(&l.category)?;
        Ok(Json(replay(&state, vec![l]).await?))
    }

    /// Replay every pending dead letter of a category (e.g. after a schema change), at
    /// most 10 000 per call.
    #[oai(
        path = "/dead-letters/replay",
        method = "post",
        operation_id = "replayDeadLetters"
    )]
    async fn replay_all(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        category: Query<CategoryName>,
    ) -> ApiResult<Json<ReplayResult>> {
        auth.principal().require_write(&category.0)?;
        // A category that does not exist is 404, not "replayed 0".
        state.schemas.get(&state.pool, &category.0).await?;
        let letters = store::list(
            &state.pool,
            Some(&category.0),
            Some("pending"),
            MAX_REPLAY,
            None,
        )
        .await?;
        let r = replay(&state, letters).await?;
        tracing::info!(category = %category.0, replayed = r.replayed, failed = r.failed, by = %auth.principal().username, "dead letters replayed");
        Ok(Json(r))
    }

    /// Give up on a dead letter.
    #[oai(
        path = "/dead-letters/:id",
        method = "delete",
        operation_id = "deleteDeadLetter"
    )]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        let l = find(&state, id.0).await?;
        auth.principal().require_write(&l.category)?;
        store::delete(&state.pool, id.0).await?;
        Ok(NoContent::Done)
    }
}
