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
use crate::db::categories::{self as store};
use crate::db::store::Writer;
use crate::db::{quote, table};
use crate::model::wire::Row;
use crate::web::error::{ApiError, ApiResult, Issue};
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

/// Most buckets one aggregation returns.
pub const MAX_BUCKETS: i64 = 100_000;

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

/// Most records one request inserts or returns.
pub const MAX_BATCH: usize = 10_000;

const OPS: &[(&str, &str)] = &[
    ("eq", "="),
    ("ne", "<>"),
    ("gt", ">"),
    ("gte", ">="),
    ("lt", "<"),
    ("lte", "<="),
];

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
        auth.principal().require_write(&name.0)?;
        if body.len() > MAX_BATCH {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_BATCH} records per request; split the batch"
            )));
        }
        let schema = state.schemas.get(&state.pool, &name.0).await?;
        let now = Utc::now();
        let mut ok = vec![];
        let mut errors = vec![];
        for (i, rec) in body.0.iter().enumerate() {
            match schema.validate(rec, now) {
                Ok(r) => ok.push(r),
                Err(problems) => errors.extend(problems.into_iter().map(|p| Issue::at(i, p))),
            }
        }
        let rejected = body.len() - ok.len();
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
        w.records(&mut tx, &schema, &[(None, &rows)]).await?;
        let written = w.finish(&mut tx).await?;
        tx.commit().await?;
        if let Some(js) = &state.nats {
            let live = written.live.into_iter().map(|c| {
                let msg_id = format!("live-api-{}", uuid::Uuid::new_v4());
                (c.category, msg_id, c.records)
            });
            crate::pipeline::publish_live(js, live).await;
        }
        let result = InsertResult {
            accepted: ok.len() as u64,
            rejected: rejected as u64,
            schema_version: schema.version,
            errors,
        };
        Ok(if rejected == 0 {
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
    ) -> ApiResult<RecordPageResponse> {
        auth.principal().require_read(&name.0)?;
        let schema = state.schemas.get(&state.pool, &name.0).await?;
        let limit = limit.0.unwrap_or(1000).clamp(1, MAX_BATCH as u32) as i64;
        let cols: Vec<String> = schema.fields.iter().map(|f| quote(&f.name)).collect();
        let mut sql = format!(
            "SELECT jsonb_strip_nulls(to_jsonb(x) - 'id')::text AS rec, x.ts, x.id FROM (SELECT id, target, ts, schema_version{}{} FROM {} WHERE true",
            if cols.is_empty() { "" } else { ", " },
            cols.join(", "),
            quote(&table(&schema.category))
        );
        let mut binds: Vec<(String, &'static str)> = vec![];
        if let Some(t) = &target.0 {
            binds.push((t.to_string(), "text"));
            sql.push_str(&format!(" AND target = ${}::text", binds.len()));
        }
        if let Some(f) = from.0 {
            binds.push((f.to_rfc3339(), "timestamptz"));
            sql.push_str(&format!(" AND ts >= ${}::timestamptz", binds.len()));
        }
        if let Some(t) = to.0 {
            binds.push((t.to_rfc3339(), "timestamptz"));
            sql.push_str(&format!(" AND ts < ${}::timestamptz", binds.len()));
        }
        for f in &filter.0 {
            let mut parts = f.splitn(3, ':');
            let (Some(field), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(ApiError::bad_request(format!(
                    "filter `{f}` must be FIELD:OP:VALUE"
                )));
            };
            let Some(def) = schema.fields.iter().find(|x| x.name == field) else {
                return Err(ApiError::bad_request(format!(
                    "filter `{f}`: `{field}` is not a field of {}",
                    schema.category
                )));
            };
            let Some((_, sql_op)) = OPS.iter().find(|(o, _)| *o == op) else {
                return Err(ApiError::bad_request(format!(
                    "filter `{f}`: unknown operator `{op}` (eq ne gt gte lt lte)"
                )));
            };
            binds.push((value.to_string(), def.kind.sql()));
            sql.push_str(&format!(
                " AND {} {sql_op} ${}::{}",
                quote(&def.name),
                binds.len(),
                def.kind.sql()
            ));
        }
        if let Some(c) = &cursor.0 {
            let (ts, id) = c
                .split_once('~')
                .and_then(|(t, i)| {
                    Some((
                        DateTime::parse_from_rfc3339(t).ok()?,
                        uuid::Uuid::parse_str(i).ok()?,
                    ))
                })
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid cursor; pass next_cursor from the previous page unchanged",
                    )
                })?;
            binds.push((ts.to_rfc3339(), "timestamptz"));
            binds.push((id.to_string(), "uuid"));
            sql.push_str(&format!(
                " AND (ts, id) > (${}::timestamptz, ${}::uuid)",
                binds.len() - 1,
                binds.len()
            ));
        }
        sql.push_str(&format!(
            " ORDER BY ts, id LIMIT {}) x ORDER BY x.ts, x.id",
            limit + 1
        ));
        // PostgreSQL renders each record as JSON text, spliced into the body as is:
        // no parse into values and serialise again on this side.
        let mut q =
            sqlx::query_as::<_, (String, DateTime<Utc>, uuid::Uuid)>(sqlx::AssertSqlSafe(sql));
        for (v, _) in &binds {
            q = q.bind(v);
        }
        let mut rows = q.fetch_all(&state.pool).await.map_err(|e| match &e {
            sqlx::Error::Database(d)
                if d.code().as_deref() == Some("22P02") || d.code().as_deref() == Some("22007") =>
            {
                ApiError::bad_request(format!(
                    "a filter value does not fit its field's type: {}",
                    d.message()
                ))
            }
            _ => ApiError::from(e),
        })?;
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|(_, ts, id)| {
                format!(
                    "{}~{id}",
                    ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                )
            })
        } else {
            None
        };
        let mut body = Vec::with_capacity(rows.iter().map(|r| r.0.len() + 1).sum::<usize>() + 64);
        body.extend_from_slice(b"{\"records\":[");
        for (i, (rec, _, _)) in rows.iter().enumerate() {
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
    /// from 2000-01-01T00:00:00Z. `1m` and `1h` come from the rollups maintained as
    /// records are stored when `from`/`to` fall on bucket boundaries; other intervals
    /// and windows are computed from the records.
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
        /// Compute from the records even when rollups exist (`1m` and `1h` are
        /// otherwise read from the rollups the data-consumer maintains).
        raw: Query<Option<bool>>,
    ) -> ApiResult<BucketsResponse> {
        auth.principal().require_read(&name.0)?;
        let schema = state.schemas.get(&state.pool, &name.0).await?;
        let f = schema
            .fields
            .iter()
            .find(|f| f.name == field.0)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{}` is not a field of {}",
                    field.0, schema.category
                ))
            })?;
        if !matches!(
            f.kind,
            crate::model::schema::FieldType::Int | crate::model::schema::FieldType::Float
        ) {
            return Err(ApiError::bad_request(format!(
                "`{}` is not numeric; aggregate an int or float field",
                f.name
            )));
        }
        let width = humantime::parse_duration(&interval.0)
            .ok()
            .filter(|d| d.as_secs() >= 1)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "interval `{}` must be a duration of at least 1s, e.g. 1m",
                    interval.0
                ))
            })?;
        let rollup = match width.as_secs() {
            60 => Some("1m"),
            3600 => Some("1h"),
            _ => None,
        };
        // Rollups answer when the window starts and ends on bucket boundaries; otherwise
        // the partial buckets at its edges are computed from the records.
        let aligned = |t: &Option<DateTime<Utc>>| {
            t.is_none_or(|t| {
                t.timestamp_subsec_nanos() == 0 && t.timestamp() % width.as_secs() as i64 == 0
            })
        };
        let rollup = rollup.filter(|_| aligned(&from.0) && aligned(&to.0));
        if let Some(w) = rollup.filter(|_| raw.0 != Some(true)) {
            let (n, body): (i64, String) = sqlx::query_as(
                "SELECT count(*), coalesce(json_agg(json_build_object('target', target, 'bucket', bucket, 'count', count, \
                 'min', min, 'max', max, 'avg', sum / count, 'sum', sum) ORDER BY target, bucket), '[]')::text FROM (\
                 SELECT * FROM rollups WHERE category = $1 AND width = $2 AND field = $3 AND ($4::text IS NULL OR target = $4) \
                 AND ($5::timestamptz IS NULL OR bucket >= $5) AND ($6::timestamptz IS NULL OR bucket < $6) \
                 ORDER BY target, bucket LIMIT $7) b",
            )
            .bind(&schema.category)
            .bind(w)
            .bind(&f.name)
            .bind(target.0)
            .bind(from.0)
            .bind(to.0)
            .bind(MAX_BUCKETS + 1)
            .fetch_one(&state.pool)
            .await?;
            if n > MAX_BUCKETS {
                return Err(ApiError::bad_request(format!(
                    "more than {MAX_BUCKETS} buckets; narrow the time range or widen the interval"
                )));
            }
            return Ok(BucketsResponse::Buckets(poem_openapi::payload::Binary(
                body.into_bytes(),
            )));
        }
        let col = quote(&f.name);
        // PostgreSQL renders the buckets as one JSON array, sent as the body.
        let sql = format!(
            "SELECT count(*), coalesce(json_agg(json_build_object('target', target, 'bucket', bucket, 'count', n, \
             'min', lo, 'max', hi, 'avg', mean, 'sum', total) ORDER BY target, bucket), '[]')::text FROM (\
             SELECT target, date_bin(make_interval(secs => $1), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, \
             count({col}) AS n, min({col})::float8 AS lo, max({col})::float8 AS hi, avg({col})::float8 AS mean, sum({col})::float8 AS total \
             FROM {} WHERE {col} IS NOT NULL AND ($2::text IS NULL OR target = $2) AND ($3::timestamptz IS NULL OR ts >= $3) AND ($4::timestamptz IS NULL OR ts < $4) \
             GROUP BY target, bucket LIMIT {}) b",
            quote(&table(&schema.category)),
            MAX_BUCKETS + 1
        );
        let (n, body): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(width.as_secs_f64())
            .bind(target.0)
            .bind(from.0)
            .bind(to.0)
            .fetch_one(&state.pool)
            .await?;
        if n > MAX_BUCKETS {
            return Err(ApiError::bad_request(format!(
                "more than {MAX_BUCKETS} buckets; narrow the time range or widen the interval"
            )));
        }
        Ok(BucketsResponse::Buckets(poem_openapi::payload::Binary(
            body.into_bytes(),
        )))
    }

    /// Export records (streamed, oldest first) as NDJSON or CSV.
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
    ) -> ApiResult<ExportResponse> {
        auth.principal().require_read(&name.0)?;
        let schema = state.schemas.get(&state.pool, &name.0).await?;
        let format = format.0.unwrap_or(ExportFormat::Ndjson);
        let body = crate::api::export::stream(
            state.pool.clone(),
            (*schema).clone(),
            format == ExportFormat::Csv,
            target.0.map(Checked::into_string),
            from.0,
            to.0,
        );
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
        auth.principal().require_read(&name.0)?;
        let schema = state.schemas.get(&state.pool, &name.0).await?;
        let cols: Vec<String> = schema.fields.iter().map(|f| quote(&f.name)).collect();
        let sql = format!(
            "SELECT jsonb_strip_nulls(to_jsonb(x)) FROM (SELECT DISTINCT ON (target) target, ts, schema_version{}{} FROM {} \
             WHERE $1::text IS NULL OR target = $1 ORDER BY target, ts DESC) x",
            if cols.is_empty() { "" } else { ", " },
            cols.join(", "),
            quote(&table(&schema.category))
        );
        let rows: Vec<Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(target.0)
            .fetch_all(&state.pool)
            .await?;
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
        auth.principal().require_read(&name.0)?;
        state.schemas.get(&state.pool, &name.0).await?;
        let after = last_event_id.0.or(since.0);
        let stream = crate::api::live::follow(state.jetstream()?, &name.0, after).await?;
        Ok(poem_openapi::payload::EventStream::new(stream)
            .keep_alive(std::time::Duration::from_secs(15))
            .to_event(|e| {
                poem::web::sse::Event::message(serde_json::to_string(&e.data).expect("json"))
                    .id(e.seq.to_string())
                    .event_type(e.kind.clone())
            }))
    }
}
