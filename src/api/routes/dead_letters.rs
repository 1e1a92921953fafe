//! `/api/v1/dead-letters`: records that failed transformation or validation; list them,
//! fix one, replay one or all of a category (after a schema change), or give up on one.
//! A replay goes through the same transformation and validator as the source did and
//! is published to the pipeline like any other record.

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
use crate::api::dead_letters::{self as domain, ReplayResult};
use crate::db::dead_letters::{Filter, StoredDeadLetter};
use crate::web::error::ApiResult;
use crate::web::names::{CategoryName, Name};

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

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::DeadLetters")]
impl DeadLettersApi {
    /// Dead letters, oldest first (`category` needs read access to it; without it, an
    /// admin sees all).
    #[allow(clippy::too_many_arguments)]
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
        /// Only the letters of this source.
        source: Query<Option<Name>>,
    ) -> ApiResult<Json<Vec<StoredDeadLetter>>> {
        let status = match status.0.unwrap_or(LetterStatus::Pending) {
            LetterStatus::Pending => "pending",
            LetterStatus::Replayed => "replayed",
        };
        let filter = Filter {
            category: category.0.as_deref(),
            source: source.0.as_deref(),
            status: Some(status),
        };
        let limit = limit.0.unwrap_or(100);
        Ok(Json(
            domain::list(&state, auth.principal(), filter, limit, after.0).await?,
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
        Ok(Json(domain::get(&state, auth.principal(), id.0).await?))
    }

    /// Fix a dead letter's payload (it is replayed only when asked).
    ///
    /// The fix must pass the letter's source transformation and the category's
    /// current schema (400 with the reasons otherwise); the payload as received is
    /// kept as `original`.
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
        Ok(Json(
            domain::edit(&state, auth.principal(), id.0, &body.raw, None).await?,
        ))
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
        let p = auth.principal();
        let letter = domain::get(&state, p, id.0).await?;
        let letters = domain::selected(&state, p, &[letter.id]).await?;
        Ok(Json(domain::replay(&state, p, letters, None).await?))
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
        let p = auth.principal();
        let letters = domain::pending_of(&state, p, &category.0).await?;
        Ok(Json(domain::replay(&state, p, letters, None).await?))
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
        domain::delete(&state, auth.principal(), id.0).await?;
        Ok(NoContent::Done)
    }
}
