//! A category's records, for both front-ends of the api (the REST routes and the
//! console): storing records through the one write path, and reading them by a
//! [`Selection`] (pages, aggregation buckets, the latest per target, exports, live
//! followers). Access is checked here, against the caller's principal.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::AppState;
use crate::db::categories as store;
use crate::db::store::Writer;
use crate::model::access::Principal;
use crate::model::query::{Cursor, Order, Selection};
use crate::model::schema::{FieldType, Schema};
use crate::model::wire::Row;
use crate::web::error::{ApiError, ApiResult, Issue};
use crate::web::intake::InsertResult;

/// Most records one request inserts or returns.
pub const MAX_BATCH: usize = 10_000;

/// Most buckets one aggregation returns.
pub const MAX_BUCKETS: i64 = 100_000;

/// What a reader asks for, as the REST query string and the console's URL say it.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this target.
    pub target: Option<String>,
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Field filters, `FIELD:OP:VALUE`.
    pub filters: Vec<String>,
}

/// The schema of `category` for a reader `p`, and the selection `q` over it.
async fn selection(
    state: &AppState,
    p: &Principal,
    category: &str,
    q: &Query,
) -> ApiResult<(Arc<Schema>, Selection)> {
    p.require_read(category)?;
    let schema = state.schemas.get(&state.pool, category).await?;
    let sel =
        Selection::new(&schema, q.target.clone(), q.from, q.to, &q.filters).map_err(|errors| {
            let message = errors.join("; ");
            ApiError::bad_request(message)
        })?;
    Ok((schema, sel))
}

/// A database error of a read: a value the database would not cast is the caller's.
fn read_error(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(d)
            if d.code().as_deref() == Some("22P02") || d.code().as_deref() == Some("22007") =>
        {
            ApiError::bad_request(format!(
                "a filter value does not fit its field's type: {}",
                d.message()
            ))
        }
        _ => ApiError::from(e),
    }
}

/// Stores `records` of `category` for `p`: each is validated against the current
/// schema; valid ones are stored (a record identical to a stored one is kept once)
/// and published on the category's live stream, invalid ones reported by index.
pub async fn insert(
    state: &AppState,
    p: &Principal,
    category: &str,
    records: &[Value],
) -> ApiResult<InsertResult> {
    p.require_write(category)?;
    if records.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BATCH} records per request; split the batch"
        )));
    }
    let schema = state.schemas.get(&state.pool, category).await?;
    let now = Utc::now();
    let mut ok = vec![];
    let mut errors = vec![];
    for (i, rec) in records.iter().enumerate() {
        match schema.validate(rec, now) {
            Ok(r) => ok.push(r),
            Err(problems) => errors.extend(problems.into_iter().map(|p| Issue::at(i, p))),
        }
    }
    let rejected = records.len() - ok.len();
    if ok.is_empty() && rejected > 0 {
        return Err(ApiError::invalid(
            format!("all {rejected} records were rejected"),
            errors,
        ));
    }
    store::ensure_partitions(
        &state.pool,
        state.storage,
        &state.partitions,
        &schema.category,
        ok.iter().map(|r| r.ts),
    )
    .await?;
    let rows: Vec<Row> = ok
        .iter()
        .map(|r| Row {
            id: r.content_id(&schema.category),
            target: &r.target,
            ts: r.ts,
            values: &r.values,
        })
        .collect();
    let mut tx = state.pool.begin().await?;
    let mut w = Writer::default();
    w.records(
        &mut tx,
        &schema,
        &[(crate::db::store::Origin::api(), &rows)],
    )
    .await?;
    let written = w.finish(&mut tx).await?;
    tx.commit().await?;
    if let Some(js) = &state.nats {
        let live = written.live.into_iter().map(|c| {
            let msg_id = format!("live-api-{}", uuid::Uuid::new_v4());
            (c.category, msg_id, c.records)
        });
        crate::pipeline::publish_live(js, live).await;
    }
    Ok(InsertResult {
        accepted: ok.len() as u64,
        rejected: rejected as u64,
        schema_version: schema.version,
        errors,
    })
}

/// A page of records.
#[derive(Debug)]
pub struct Page {
    /// The schema the selection was read with (the current one).
    pub schema: Arc<Schema>,
    /// The records, each as JSON text (`target`, `ts`, `schema_version` and the
    /// fields that have values), in the order asked for.
    pub records: Vec<String>,
    /// Where the next page starts; None on the last page.
    pub next: Option<Cursor>,
}

/// Up to `limit` (1..=[`MAX_BATCH`]) records of `q` in `order`, after `cursor` (the
/// `next` of the previous page, as its text).
pub async fn page(
    state: &AppState,
    p: &Principal,
    category: &str,
    q: &Query,
    order: Order,
    limit: u32,
    cursor: Option<&str>,
) -> ApiResult<Page> {
    let (schema, sel) = selection(state, p, category, q).await?;
    let after = match cursor {
        None => None,
        Some(c) => Some(Cursor::parse(c).ok_or_else(|| {
            ApiError::bad_request(
                "invalid cursor; pass next_cursor from the previous page unchanged",
            )
        })?),
    };
    let limit = limit.clamp(1, MAX_BATCH as u32) as i64;
    let mut rows = crate::db::records::page(&state.reads, &schema, &sel, order, limit + 1, after)
        .await
        .map_err(read_error)?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|(_, c)| *c)
    } else {
        None
    };
    Ok(Page {
        schema,
        records: rows.into_iter().map(|(r, _)| r).collect(),
        next,
    })
}

/// The time of the newest record of `q`.
pub async fn newest(
    state: &AppState,
    p: &Principal,
    category: &str,
    q: &Query,
) -> ApiResult<Option<DateTime<Utc>>> {
    let (schema, sel) = selection(state, p, category, q).await?;
    crate::db::records::newest(&state.reads, &schema, &sel)
        .await
        .map_err(read_error)
}

/// Aggregation buckets of the numeric `field` over `q`, `width` wide: JSON text of
/// `[{target, bucket, count, min, max, avg, sum}]`, by target then time. A width of
/// whole minutes (hours) over a window whose ends fall on minute (hour) boundaries is
/// read from the rollups the writers maintain when the selection has no field filter
/// (and `raw` is false); otherwise the buckets are computed from the records. More
/// than [`MAX_BUCKETS`] is refused.
pub async fn aggregate(
    state: &AppState,
    p: &Principal,
    category: &str,
    q: &Query,
    field: &str,
    width: std::time::Duration,
    raw: bool,
) -> ApiResult<String> {
    let (schema, sel) = selection(state, p, category, q).await?;
    let f = schema
        .fields
        .iter()
        .find(|f| f.name == field)
        .ok_or_else(|| {
            ApiError::bad_request(format!("`{field}` is not a field of {}", schema.category))
        })?;
    if !matches!(f.kind, FieldType::Int | FieldType::Float) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not numeric; aggregate an int or float field",
            f.name
        )));
    }
    if width.as_secs() < 1 {
        return Err(ApiError::bad_request(
            "the interval must be at least 1s, e.g. 1m",
        ));
    }
    // The rollups answer a width that is a whole number of their own (1 hour, else 1
    // minute) over a window whose ends fall on their boundaries: each rollup bucket
    // then lies wholly inside one bucket asked for and wholly inside or outside the
    // window. Otherwise, or with field filters, the buckets come from the records.
    let on = |unit: u64| {
        let t_ok = |t: &Option<DateTime<Utc>>| {
            t.is_none_or(|t| t.timestamp_subsec_nanos() == 0 && t.timestamp() % unit as i64 == 0)
        };
        width.subsec_nanos() == 0 && width.as_secs() % unit == 0 && t_ok(&sel.from) && t_ok(&sel.to)
    };
    let rollup = crate::model::rollup::WIDTHS
        .iter()
        .rev()
        .copied()
        .find(|unit| on(*unit as u64))
        .zip(schema.rollup_slots.get(&f.name))
        .filter(|_| !raw && sel.filters.is_empty());
    let (n, body) = match rollup {
        Some((rollup_secs, slot)) => {
            crate::db::records::buckets_from_rollups(
                &state.reads,
                &schema.category,
                rollup_secs,
                *slot,
                width.as_secs_f64(),
                &sel,
                MAX_BUCKETS,
            )
            .await?
        }
        None => crate::db::records::buckets(
            &state.reads,
            &schema,
            &f.name,
            width.as_secs_f64(),
            &sel,
            MAX_BUCKETS,
        )
        .await
        .map_err(read_error)?,
    };
    if n > MAX_BUCKETS {
        return Err(ApiError::bad_request(format!(
            "more than {MAX_BUCKETS} buckets; narrow the time range or widen the interval"
        )));
    }
    Ok(body)
}

/// The latest record of every target (or of `target`).
pub async fn latest(
    state: &AppState,
    p: &Principal,
    category: &str,
    target: Option<&str>,
) -> ApiResult<Vec<Value>> {
    p.require_read(category)?;
    let schema = state.schemas.get(&state.pool, category).await?;
    Ok(crate::db::records::latest(&state.reads, &schema, target).await?)
}

/// An export body: every record of `q` in `order`, streamed as CSV or NDJSON.
pub async fn export(
    state: &AppState,
    p: &Principal,
    category: &str,
    q: &Query,
    order: Order,
    csv: bool,
) -> ApiResult<poem::Body> {
    let (schema, sel) = selection(state, p, category, q).await?;
    let rows = crate::db::records::rows(state.reads.clone(), &schema, &sel, order);
    Ok(super::export::stream(&schema, rows, csv))
}

/// Live records of `q` (and alerts of the category) after event `after` (None: new
/// ones only): the category's events with records outside the selection left out,
/// and events left with no record dropped.
pub async fn follow(
    state: &AppState,
    p: &Principal,
    category: &str,
    q: &Query,
    after: Option<u64>,
) -> ApiResult<futures_util::stream::BoxStream<'static, super::live::LiveEvent>> {
    use futures_util::StreamExt;
    let (_, sel) = selection(state, p, category, q).await?;
    let events = super::live::follow(state.jetstream()?, category, after).await?;
    if sel == Selection::default() {
        return Ok(events);
    }
    Ok(events
        .filter_map(move |mut e| {
            let keep = match e.data.get_mut("records").and_then(Value::as_array_mut) {
                Some(records) => {
                    records.retain(|r| r.as_object().is_some_and(|m| sel.matches(m)));
                    !records.is_empty()
                }
                None => true,
            };
            futures_util::future::ready(keep.then_some(e))
        })
        .boxed())
}
