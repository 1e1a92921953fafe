//! `/api/v1/categories/{name}/records` and what reads a category's records: queries,
//! the latest per target, aggregation buckets, export and the live stream.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use super::ApiTags;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::api::records::{self as domain, Query as Selecting};
use crate::model::query::Order;
use crate::web::error::{ApiError, ApiResult};
use crate::web::intake::InsertResult;
use crate::web::names::{CategoryName, Checked, Target};

/// Record routes.
#[derive(Default)]
pub struct RecordsApi;

/// Insert answers.
#[derive(ApiResponse)]
pub enum InsertResponse {
    /// Every record stored.
    #[oai(status = 201)]
    Created(Json<InsertResult>),
    /// Some records stored, some rejected (listed by index).
    #[oai(status = 200)]
    Partial(Json<InsertResult>),
}

/// A page of records.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RecordPage {
    /// Records: `target`, `ts`, `schema_version` and the fields that have values.
    pub records: Vec<Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One time bucket of one target.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Bucket {
    /// Target.
    pub target: String,
    /// Start of the bucket.
    pub bucket: DateTime<Utc>,
    /// Records with a value.
    pub count: i64,
    /// Lowest value.
    pub min: Option<f64>,
    /// Highest value.
    pub max: Option<f64>,
    /// Mean value.
    pub avg: Option<f64>,
    /// Sum of values.
    pub sum: Option<f64>,
}

pub use crate::api::live::LiveEvent;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON record per line.
    Ndjson,
    /// A header line, then one line per record.
    Csv,
}

/// An export, streamed in its format. One 200 answer with two media types: the
/// `ApiResponse` derive would give each its own 200, and the document keeps one.
pub struct ExportResponse {
    format: ExportFormat,
    body: poem::Body,
}

impl ExportFormat {
    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv",
        }
    }
}

impl poem::IntoResponse for ExportResponse {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .content_type(self.format.content_type())
            .body(self.body)
    }
}

impl ApiResponse for ExportResponse {
    fn meta() -> poem_openapi::registry::MetaResponses {
        use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses};
        use poem_openapi::types::Type;
        let media = |f: ExportFormat| MetaMediaType {
            content_type: f.content_type(),
            schema: <poem_openapi::types::Binary<Vec<u8>> as Type>::schema_ref(),
        };
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The records: NDJSON (`format=ndjson`) or CSV (`format=csv`).",
                status: Some(200),
                status_range: None,
                content: vec![media(ExportFormat::Ndjson), media(ExportFormat::Csv)],
                headers: vec![],
            }],
        }
    }

    fn register(_: &mut poem_openapi::registry::Registry) {}
}

/// Aggregation buckets, built as JSON text by PostgreSQL (documented as [`Bucket`]s).
#[derive(ApiResponse)]
pub enum BucketsResponse {
    /// One entry per target and bucket, ordered by target then time.
    #[oai(status = 200, actual_type = "Json<Vec<Bucket>>")]
    Buckets(poem_openapi::payload::Binary<Vec<u8>>),
}

/// A page of records, built as JSON text (documented as [`RecordPage`]).
#[derive(ApiResponse)]
pub enum RecordPageResponse {
    /// The records of this page, oldest first.
    #[oai(status = 200, actual_type = "Json<RecordPage>")]
    Page(poem_openapi::payload::Binary<Vec<u8>>),
}

/// What the query parameters select.
fn selecting(
    target: Option<Target>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    filters: Vec<String>,
) -> Selecting {
    Selecting {
        target: target.map(Checked::into_string),
        from,
        to,
        filters,
    }
}

// Each operation is tagged Categories (the impl) and Records (its own), as before the
// split, so the document is unchanged.
#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Categories")]
impl RecordsApi {
    /// Insert records (a JSON array, at most 10 000): each is validated against the
    /// current schema; valid ones are stored, invalid ones reported by index. A record
    /// identical to one stored (target, time to the microsecond, values) is kept once, as
    /// through the ingest endpoint; the records stored appear on the category's stream.
    #[oai(
        path = "/categories/:name/records",
        method = "post",
        operation_id = "insertRecords",
        tag = "ApiTags::Records"
    )]
    async fn insert(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        body: Json<Vec<Value>>,
    ) -> ApiResult<InsertResponse> {
        let result = domain::insert(&state, auth.principal(), &name.0, &body.0).await?;
        Ok(if result.rejected == 0 {
            InsertResponse::Created(Json(result))
        } else {
            InsertResponse::Partial(Json(result))
        })
    }

    /// Query records by target and time range, oldest first, with field filters
    /// (`filter=FIELD:OP:VALUE`, OP one of eq ne gt gte lt lte) and keyset pagination.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/categories/:name/records",
        method = "get",
        operation_id = "queryRecords",
        tag = "ApiTags::Records"
    )]
    async fn query(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        /// Only this target.
        target: Query<Option<Target>>,
        /// From this time (inclusive).
        from: Query<Option<DateTime<Utc>>>,
        /// Until this time (exclusive).
        to: Query<Option<DateTime<Utc>>>,
        /// Field filters, `FIELD:OP:VALUE` (repeat for several).
        #[oai(default)]
        filter: Query<Vec<String>>,
        /// Page size (default 1000, at most 10 000).
        #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// `asc` (oldest first, the default) or `desc` (newest first); pass the same
        /// order with each page's cursor.
        order: Query<Option<Order>>,
    ) -> ApiResult<RecordPageResponse> {
        let page = domain::page(
            &state,
            auth.principal(),
            &name.0,
            &selecting(target.0, from.0, to.0, filter.0),
            order.0.unwrap_or_default(),
            limit.0.unwrap_or(1000),
            cursor.0.as_deref(),
        )
        .await?;
        let rows = &page.records;
        let next_cursor = page.next.map(|c| c.to_string());
        let mut body = Vec::with_capacity(rows.iter().map(|r| r.len() + 1).sum::<usize>() + 64);
        body.extend_from_slice(b"{\"records\":[");
        for (i, rec) in rows.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(rec.as_bytes());
        }
        body.push(b']');
        // Absent on the last page, as documented (never null).
        if let Some(c) = next_cursor {
            body.extend_from_slice(b",\"next_cursor\":");
            body.extend_from_slice(serde_json::to_string(&c).expect("json").as_bytes());
        }
        body.push(b'}');
        Ok(RecordPageResponse::Page(poem_openapi::payload::Binary(
            body,
        )))
    }

    /// Time-bucket aggregation of a numeric field per target: count, min, max, avg and
    /// sum per `interval` (e.g. `1m`, `1h`); buckets start at multiples of the interval
    /// from 2000-01-01T00:00:00Z. Whole minutes (hours) come from the 1-minute
    /// (1-hour) rollups maintained as records are stored when `from`/`to` fall on
    /// minute (hour) boundaries and no `filter` is given; other intervals and windows
    /// are computed from the records.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/categories/:name/aggregate",
        method = "get",
        operation_id = "aggregateRecords",
        tag = "ApiTags::Records"
    )]
    async fn aggregate(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        /// A numeric field.
        field: Query<String>,
        /// Bucket width: `30s`, `1m`, `1h`, `1d`.
        interval: Query<String>,
        /// Only this target.
        target: Query<Option<Target>>,
        /// From this time (inclusive).
        from: Query<Option<DateTime<Utc>>>,
        /// Until this time (exclusive).
        to: Query<Option<DateTime<Utc>>>,
        /// Compute from the records even where the rollups the writers maintain
        /// would answer.
        raw: Query<Option<bool>>,
        /// Field filters, `FIELD:OP:VALUE` (repeat for several; the buckets are then
        /// computed from the records).
        #[oai(default)]
        filter: Query<Vec<String>>,
    ) -> ApiResult<BucketsResponse> {
        let width = humantime::parse_duration(&interval.0)
            .ok()
            .filter(|d| d.as_secs() >= 1)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "interval `{}` must be a duration of at least 1s, e.g. 1m",
                    interval.0
                ))
            })?;
        let body = domain::aggregate(
            &state,
            auth.principal(),
            &name.0,
            &selecting(target.0, from.0, to.0, filter.0),
            &field.0,
            width,
            raw.0 == Some(true),
        )
        .await?;
        Ok(BucketsResponse::Buckets(poem_openapi::payload::Binary(
            body.into_bytes(),
        )))
    }

    /// Export records (streamed, oldest first unless `order=desc`) as NDJSON or CSV,
    /// selected as `GET …/records` selects them.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/categories/:name/export",
        method = "get",
        operation_id = "exportRecords",
        tag = "ApiTags::Records"
    )]
    async fn export(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        /// `ndjson` (default) or `csv`.
        format: Query<Option<ExportFormat>>,
        /// Only this target.
        target: Query<Option<Target>>,
        /// From this time (inclusive).
        from: Query<Option<DateTime<Utc>>>,
        /// Until this time (exclusive).
        to: Query<Option<DateTime<Utc>>>,
        /// Field filters, `FIELD:OP:VALUE` (repeat for several).
        #[oai(default)]
        filter: Query<Vec<String>>,
        /// `asc` (oldest first, the default) or `desc`.
        order: Query<Option<Order>>,
    ) -> ApiResult<ExportResponse> {
        let format = format.0.unwrap_or(ExportFormat::Ndjson);
        let body = domain::export(
            &state,
            auth.principal(),
            &name.0,
            &selecting(target.0, from.0, to.0, filter.0),
            order.0.unwrap_or_default(),
            format == ExportFormat::Csv,
        )
        .await?;
        Ok(ExportResponse { format, body })
    }

    /// The latest record of every target (or of one).
    #[oai(
        path = "/categories/:name/records/latest",
        method = "get",
        operation_id = "latestRecords",
        tag = "ApiTags::Records"
    )]
    async fn latest(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        target: Query<Option<Target>>,
    ) -> ApiResult<Json<Vec<Value>>> {
        let rows = domain::latest(&state, auth.principal(), &name.0, target.0.as_deref()).await?;
        Ok(Json(rows))
    }

    /// Live records and alerts of a category as Server-Sent Events: `records` events
    /// (the records of one committed batch, each as `GET …/records` shows it) and
    /// `alert` events. Each event's id is its sequence in the event stream; reconnecting
    /// with `Last-Event-ID` (or `since`) resumes right after it, without gaps, for 24
    /// hours of history.
    #[oai(
        path = "/categories/:name/stream",
        method = "get",
        operation_id = "streamCategory",
        tag = "ApiTags::Records"
    )]
    async fn stream(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        /// The id of the last event received (sent by EventSource on reconnect).
        #[oai(name = "Last-Event-ID")]
        last_event_id: poem_openapi::param::Header<Option<u64>>,
        /// Same as `Last-Event-ID`, for clients that cannot set headers.
        since: Query<Option<u64>>,
    ) -> ApiResult<
        poem_openapi::payload::EventStream<futures_util::stream::BoxStream<'static, LiveEvent>>,
    > {
        let after = last_event_id.0.or(since.0);
        let everything = Selecting::default();
        let stream = domain::follow(&state, auth.principal(), &name.0, &everything, after).await?;
        Ok(poem_openapi::payload::EventStream::new(stream)
            .keep_alive(std::time::Duration::from_secs(15))
            .to_event(|e| {
                poem::web::sse::Event::message(serde_json::to_string(&e.data).expect("json"))
                    .id(e.seq.to_string())
                    .event_type(e.kind.clone())
            }))
    }
}
