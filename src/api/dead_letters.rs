//! Dead letters, for both front-ends of the api: records that failed transformation
//! or validation, listed, fixed and replayed.
//!
//! - A fix is checked before it is stored: it goes through the letter's source
//!   transformation and the category's current schema, as its replay will, and is
//!   refused with the reasons if it would fail again. The payload as received stays
//!   beside it (`original`). An edit made on a page that showed an older state of the
//!   letter is refused, not applied.
//! - A replay works in chunks: each chunk's records are published and acknowledged
//!   by JetStream before its letters are marked `replayed`, so a replay cut short
//!   (an error, a restart) leaves the rest pending, and replaying a letter twice
//!   stores its record once (content ids). Progress is reported after every chunk.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use crate::db::dead_letters::{self as store, Filter, Reason, StoredDeadLetter};
use crate::ingest::payload::Item;
use crate::model::access::Principal;
use crate::model::transform::Transform;
use crate::web::error::{ApiError, ApiResult, Issue};

/// Most letters one replay-all handles (call again for more).
pub const MAX_REPLAY: i64 = 10_000;

/// Letters replayed per chunk (one publish and acknowledgement, one update).
const CHUNK: usize = 200;

/// What a replay did.
#[derive(Debug, Clone, Default, Object)]
pub struct ReplayResult {
    /// Letters now valid and published to the pipeline.
    pub replayed: u64,
    /// Letters still invalid (their reasons are updated).
    pub failed: u64,
    /// Why each failed one failed, by dead-letter id.
    pub errors: Vec<LetterIssue>,
}

/// One reason a dead letter is still invalid.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LetterIssue {
    /// The dead letter.
    pub id: Uuid,
    /// The field concerned, if any.
    pub field: Option<String>,
    /// Why it is invalid.
    pub reason: String,
}

/// How far a replay has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Letters handled so far.
    pub done: u64,
    /// Letters to handle.
    pub total: u64,
    /// Of those handled, now replayed.
    pub replayed: u64,
    /// Of those handled, still failing.
    pub failed: u64,
}

/// One letter, for a reader of its category.
pub async fn get(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<StoredDeadLetter> {
    let l = store::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))?;
    p.require_read(&l.category)?;
    Ok(l)
}

/// Letters by `filter`, oldest first, `limit` after the letter `after`: a category's
/// need read access to it; all categories at once need an admin.
pub async fn list(
    state: &AppState,
    p: &Principal,
    filter: Filter<'_>,
    limit: i64,
    after: Option<Uuid>,
) -> ApiResult<Vec<StoredDeadLetter>> {
    match filter.category {
        Some(c) => p.require_read(c)?,
        None => p.require_admin()?,
    }
    Ok(store::list(&state.pool, filter, limit.clamp(1, 1000), after).await?)
}

/// The transformation of the letters of `source` into `category`: the source's, or
/// none when it no longer exists (or now feeds another category).
async fn transform_of(state: &AppState, source: &str, category: &str) -> ApiResult<Transform> {
    Ok(crate::db::sources::get(&state.pool, source)
        .await?
        .filter(|s| s.category == category)
        .map(|s| s.transform)
        .unwrap_or_default())
}

/// Replaces a letter's payload with `raw` (a writer of its category), after checking
/// that it now passes the source's transformation and the category's current schema
/// (400 with the reasons if not). With `expected`, only while the letter is as last
/// seen (409 otherwise). It is replayed only when asked.
pub async fn edit(
    state: &AppState,
    p: &Principal,
    id: Uuid,
    raw: &Value,
    expected: Option<DateTime<Utc>>,
) -> ApiResult<StoredDeadLetter> {
    let l = get(state, p, id).await?;
    p.require_write(&l.category)?;
    let schema = state.schemas.get(&state.pool, &l.category).await?;
    let transform = transform_of(state, &l.source, &l.category).await?;
    let checked = crate::ingest::prepare(
        &schema,
        &l.source,
        &transform,
        vec![Item::new(l.position.clone(), raw.clone())],
    );
    if !checked.errors.is_empty() {
        return Err(ApiError::invalid(
            format!(
                "the fix would be rejected again by {} version {}; correct what is named",
                l.category, schema.version
            ),
            checked
                .errors
                .into_iter()
                .map(|e| Issue { index: None, ..e })
                .collect(),
        ));
    }
    match store::edit(&state.pool, id, raw, expected).await? {
        Some(l) => {
            tracing::info!(letter = %id, category = %l.category, by = %p.username, "dead letter fixed");
            Ok(l)
        }
        None => Err(ApiError::conflict(
            "this dead letter changed since it was opened (edited or replayed); reload it and fix it again",
        )),
    }
}

/// Gives up on a letter (a writer of its category).
pub async fn delete(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<()> {
    let l = get(state, p, id).await?;
    p.require_write(&l.category)?;
    store::delete(&state.pool, id).await?;
    tracing::info!(letter = %id, category = %l.category, by = %p.username, "dead letter deleted");
    Ok(())
}

/// The letters of `ids` that exist, for a writer of each one's category.
pub async fn selected(
    state: &AppState,
    p: &Principal,
    ids: &[Uuid],
) -> ApiResult<Vec<StoredDeadLetter>> {
    let letters = store::get_many(&state.pool, ids).await?;
    for l in &letters {
        p.require_write(&l.category)?;
    }
    Ok(letters)
}

/// Every pending letter of `category` (at most [`MAX_REPLAY`]), for a writer of it.
pub async fn pending_of(
    state: &AppState,
    p: &Principal,
    category: &str,
) -> ApiResult<Vec<StoredDeadLetter>> {
    p.require_write(category)?;
    // A category that does not exist is 404, not "nothing to replay".
    state.schemas.get(&state.pool, category).await?;
    let filter = Filter {
        category: Some(category),
        status: Some("pending"),
        ..Filter::default()
    };
    Ok(store::list(&state.pool, filter, MAX_REPLAY, None).await?)
}

/// Replays `letters` (taken through [`selected`] or [`pending_of`]): per category and
/// source, the source's current transformation and the category's current schema,
/// chunk by chunk; `progress` hears of each chunk.
pub async fn replay(
    state: &AppState,
    p: &Principal,
    letters: Vec<StoredDeadLetter>,
    progress: Option<&tokio::sync::mpsc::Sender<Progress>>,
) -> ApiResult<ReplayResult> {
    let js = state.jetstream()?;
    let total = letters.len() as u64;
    let mut groups: BTreeMap<(String, String), Vec<StoredDeadLetter>> = BTreeMap::new();
    for l in letters {
        groups
            .entry((l.category.clone(), l.source.clone()))
            .or_default()
            .push(l);
    }
    let mut out = ReplayResult::default();
    for ((category, source), letters) in groups {
        let transform = transform_of(state, &source, &category).await?;
        for chunk in letters.chunks(CHUNK) {
            let schema = state.schemas.get(&state.pool, &category).await?;
            let items = chunk
                .iter()
                .map(|l| Item::new(l.position.clone(), l.raw.clone()))
                .collect();
            let mut prepared = crate::ingest::prepare(&schema, &source, &transform, items);
            // Failed letters are stored already: only their reasons change.
            prepared.dead.clear();
            crate::ingest::publish(js, &state.cfg, &category, &prepared).await?;
            let failed: HashSet<u64> = prepared.errors.iter().filter_map(|e| e.index).collect();
            let mut ok = vec![];
            let mut still = vec![];
            for (i, l) in chunk.iter().enumerate() {
                if !failed.contains(&(i as u64)) {
                    ok.push(l.id);
                    continue;
                }
                let reasons: Vec<Reason> = prepared
                    .errors
                    .iter()
                    .filter(|e| e.index == Some(i as u64))
                    .map(|e| Reason {
                        field: e.field.clone(),
                        reason: e.reason.clone(),
                    })
                    .collect();
                out.errors.extend(reasons.iter().map(|r| LetterIssue {
                    id: l.id,
                    field: r.field.clone(),
                    reason: r.reason.clone(),
                }));
                still.push((l.id, reasons));
            }
            store::replayed(&state.pool, prepared.schema_version, &ok, &still).await?;
            out.replayed += ok.len() as u64;
            out.failed += still.len() as u64;
            if let Some(tx) = progress {
                let _ = tx
                    .send(Progress {
                        done: out.replayed + out.failed,
                        total,
                        replayed: out.replayed,
                        failed: out.failed,
                    })
                    .await;
            }
        }
    }
    tracing::info!(replayed = out.replayed, failed = out.failed, by = %p.username, "dead letters replayed");
    Ok(out)
}
