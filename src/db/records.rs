//! Reading a category's records: a page (keyset: `(ts, id)` after a cursor, never an
//! offset or a count), the newest record's time, the latest record per target,
//! time-bucket aggregation (from the rollups where they answer, otherwise from the
//! records), and the rows of an export as a stream.
//!
//! Every read takes a [`Selection`]: its target, time range and field filters become
//! one `WHERE` clause built here, with every value a bind parameter cast to its
//! field's type. PostgreSQL renders records and buckets as JSON text, which the
//! callers send as they are.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use sqlx::PgPool;

use super::{quote, table};
use crate::model::query::{Cursor, Order, Selection};
use crate::model::schema::Schema;

/// Bind parameters of one statement, each bound as text and cast in the SQL.
#[derive(Default)]
struct Binds(Vec<String>);

impl Binds {
    /// Adds `value`; its placeholder cast to `sql_type`.
    fn push(&mut self, value: impl Into<String>, sql_type: &str) -> String {
        self.0.push(value.into());
        format!("${}::{sql_type}", self.0.len())
    }
}

/// ` AND …` for every condition of `sel`, its time range on the column `time`.
fn conditions(sel: &Selection, b: &mut Binds, time: &str) -> String {
    let mut sql = String::new();
    if let Some(t) = &sel.target {
        sql.push_str(&format!(" AND target = {}", b.push(t.clone(), "text")));
    }
    if let Some(f) = sel.from {
        sql.push_str(&format!(
            " AND {time} >= {}",
            b.push(f.to_rfc3339(), "timestamptz")
        ));
    }
    if let Some(t) = sel.to {
        sql.push_str(&format!(
            " AND {time} < {}",
            b.push(t.to_rfc3339(), "timestamptz")
        ));
    }
    for f in &sel.filters {
        let placeholder = b.push(f.value.clone(), f.kind.sql());
        sql.push_str(&format!(
            " AND {} {} {placeholder}",
            quote(&f.field),
            f.op.sql()
        ));
    }
    sql
}

/// `, "a", "b"` for the fields of `schema`.
fn columns(schema: &Schema) -> String {
    schema
        .fields
        .iter()
        .map(|f| format!(", {}", quote(&f.name)))
        .collect()
}

/// One record of a page: as JSON text (`target`, `ts`, `schema_version` and the
/// fields that have values) and its cursor.
pub type PageRow = (String, Cursor);

/// Up to `limit` records of `sel` in `order`, after `after` (in that order).
pub async fn page(
    pool: &PgPool,
    schema: &Schema,
    sel: &Selection,
    order: Order,
    limit: i64,
    after: Option<Cursor>,
) -> Result<Vec<PageRow>, sqlx::Error> {
    let mut b = Binds::default();
    let mut cond = conditions(sel, &mut b, "ts");
    if let Some(c) = after {
        let ts = b.push(c.ts.to_rfc3339(), "timestamptz");
        let id = b.push(c.id.to_string(), "uuid");
        // The plain bound on ts lets an index on ts (or target, ts) start there; the
        // row comparison then skips the records of that instant already shown.
        let (cmp, bound) = match order {
            Order::Asc => (">", ">="),
            Order::Desc => ("<", "<="),
        };
        cond.push_str(&format!(
            " AND ts {bound} {ts} AND (ts, id) {cmp} ({ts}, {id})"
        ));
    }
    let dir = order.sql();
    let sql = format!(
        "SELECT jsonb_strip_nulls(to_jsonb(x) - 'id')::text AS rec, x.ts, x.id FROM (\
         SELECT id, target, ts, schema_version{} FROM {} WHERE true{cond} ORDER BY ts {dir}, id {dir} LIMIT {limit}) x \
         ORDER BY x.ts {dir}, x.id {dir}",
        columns(schema),
        quote(&table(&schema.category)),
    );
    let mut q = sqlx::query_as::<_, (String, DateTime<Utc>, uuid::Uuid)>(sqlx::AssertSqlSafe(sql));
    for v in b.0 {
        q = q.bind(v);
    }
    Ok(q.fetch_all(pool)
        .await?
        .into_iter()
        .map(|(rec, ts, id)| (rec, Cursor { ts, id }))
        .collect())
}

/// The time of the newest record of `sel`, if there is one.
pub async fn newest(
    pool: &PgPool,
    schema: &Schema,
    sel: &Selection,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let mut b = Binds::default();
    let cond = conditions(sel, &mut b, "ts");
    let sql = format!(
        "SELECT ts FROM {} WHERE true{cond} ORDER BY ts DESC LIMIT 1",
        quote(&table(&schema.category)),
    );
    let mut q = sqlx::query_scalar::<_, DateTime<Utc>>(sqlx::AssertSqlSafe(sql));
    for v in b.0 {
        q = q.bind(v);
    }
    q.fetch_optional(pool).await
}

/// The latest record of every target (or of `target`), as JSON.
pub async fn latest(
    pool: &PgPool,
    schema: &Schema,
    target: Option<&str>,
) -> Result<Vec<Value>, sqlx::Error> {
    let sql = format!(
        "SELECT jsonb_strip_nulls(to_jsonb(x)) FROM (SELECT DISTINCT ON (target) target, ts, schema_version{} FROM {} \
         WHERE $1::text IS NULL OR target = $1 ORDER BY target, ts DESC) x",
        columns(schema),
        quote(&table(&schema.category))
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(target)
        .fetch_all(pool)
        .await
}

/// Buckets as JSON text (an array of `{target, bucket, count, min, max, avg, sum}`,
/// by target then time) and how many there are; at most `max` + 1 are rendered, so a
/// count above `max` says "too many" without building them all.
pub type Buckets = (i64, String);

/// Buckets of the field in rollup slot `slot` of `category`, `width_secs` wide (a
/// whole number of `rollup_secs`), merged from the maintained rollups `rollup_secs`
/// wide (60, 3600): counts and sums add up, minima and maxima of minima and maxima.
/// `sel`'s ends fall on `rollup_secs` boundaries.
pub async fn buckets_from_rollups(
    pool: &PgPool,
    category: &str,
    rollup_secs: i32,
    slot: usize,
    width_secs: f64,
    sel: &Selection,
    max: i64,
) -> Result<Buckets, sqlx::Error> {
    // Only the conditions that apply, each a bound value: a condition written as
    // `$n IS NULL OR …` cannot use the index in the plan PostgreSQL reuses after a
    // statement's fifth run (seen: every fifth chart read the whole rollups table).
    let mut b = Binds::default();
    let mut cond = format!(
        "s.category = {} AND r.width = {}",
        b.push(category, "text"),
        b.push(rollup_secs.to_string(), "int")
    );
    // A selection with field filters is never answered from the rollups.
    debug_assert!(sel.filters.is_empty());
    cond.push_str(&conditions(sel, &mut b, "bucket"));
    let width = b.push(width_secs.to_string(), "float8");
    // Arrays are 1-based; an element past a row's end (a field added later) is NULL.
    let i = slot + 1;
    let sql = format!(
        "SELECT count(*), coalesce(json_agg(json_build_object('target', target, 'bucket', b, 'count', n, \
         'min', lo, 'max', hi, 'avg', total / n, 'sum', total) ORDER BY target, b), '[]')::text FROM (\
         SELECT s.target, date_bin(make_interval(secs => {width}), r.bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b, \
         sum(r.count[{i}])::bigint AS n, min(r.min[{i}]) AS lo, max(r.max[{i}]) AS hi, sum(r.sum[{i}]) AS total \
         FROM rollup_series s JOIN rollups r ON r.series = s.id WHERE {cond} AND r.count[{i}] > 0 \
         GROUP BY s.target, b ORDER BY s.target, b LIMIT {}) x",
        max + 1
    );
    let mut q = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql));
    for v in b.0 {
        q = q.bind(v);
    }
    q.fetch_one(pool).await
}

/// Buckets of `field` of `width_secs` computed from the records of `sel` (buckets
/// start at multiples of the width from 2000-01-01T00:00:00Z).
pub async fn buckets(
    pool: &PgPool,
    schema: &Schema,
    field: &str,
    width_secs: f64,
    sel: &Selection,
    max: i64,
) -> Result<Buckets, sqlx::Error> {
    let mut b = Binds::default();
    let width = b.push(width_secs.to_string(), "float8");
    let cond = conditions(sel, &mut b, "ts");
    let col = quote(field);
    let sql = format!(
        "SELECT count(*), coalesce(json_agg(json_build_object('target', target, 'bucket', bucket, 'count', n, \
         'min', lo, 'max', hi, 'avg', mean, 'sum', total) ORDER BY target, bucket), '[]')::text FROM (\
         SELECT target, date_bin(make_interval(secs => {width}), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, \
         count({col}) AS n, min({col})::float8 AS lo, max({col})::float8 AS hi, avg({col})::float8 AS mean, sum({col})::float8 AS total \
         FROM {} WHERE {col} IS NOT NULL{cond} GROUP BY target, bucket LIMIT {}) b",
        quote(&table(&schema.category)),
        max + 1
    );
    let mut q = sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql));
    for v in b.0 {
        q = q.bind(v);
    }
    q.fetch_one(pool).await
}

/// Every record of `sel` in `order`, read through a server-side cursor (memory stays
/// flat whatever the size), each as JSON with `target`, `ts`, `schema_version` and
/// every field of `schema` (null where it has no value).
pub fn rows(
    pool: PgPool,
    schema: &Schema,
    sel: &Selection,
    order: Order,
) -> BoxStream<'static, Result<Value, sqlx::Error>> {
    let mut b = Binds::default();
    let cond = conditions(sel, &mut b, "ts");
    let dir = order.sql();
    let sql = format!(
        "SELECT to_jsonb(x) FROM (SELECT target, ts, schema_version{} FROM {} WHERE true{cond} ORDER BY ts {dir}, id {dir}) x",
        columns(schema),
        quote(&table(&schema.category))
    );
    let binds = b.0;
    async_stream(pool, sql, binds)
}

/// One record reduced to what a rule looks at: target, time, and a numeric field's
/// value (None without one).
pub type Point = (String, DateTime<Utc>, Option<f64>);

/// The records of `sel` oldest first as [`Point`]s of `field` (None: no field),
/// at most `limit`.
pub async fn points(
    pool: &PgPool,
    schema: &Schema,
    sel: &Selection,
    field: Option<&str>,
    limit: i64,
) -> Result<Vec<Point>, sqlx::Error> {
    let mut b = Binds::default();
    let cond = conditions(sel, &mut b, "ts");
    let value = match field {
        Some(f) => format!("{}::float8", quote(f)),
        None => "NULL::float8".into(),
    };
    let sql = format!(
        "SELECT target, ts, {value} FROM {} WHERE true{cond} ORDER BY ts, id LIMIT {limit}",
        quote(&table(&schema.category))
    );
    let mut q = sqlx::query_as::<_, Point>(sqlx::AssertSqlSafe(sql));
    for v in b.0 {
        q = q.bind(v);
    }
    q.fetch_all(pool).await
}

/// The rows of `sql` with `binds`, as a stream owning what it needs.
fn async_stream(
    pool: PgPool,
    sql: String,
    binds: Vec<String>,
) -> BoxStream<'static, Result<Value, sqlx::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Value, sqlx::Error>>(256);
    tokio::spawn(async move {
        let mut q = sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(sql));
        for v in &binds {
            q = q.bind(v);
        }
        let mut rows = q.fetch(&pool);
        while let Some(row) = rows.next().await {
            let failed = row.is_err();
            if tx.send(row).await.is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
        .boxed()
}
