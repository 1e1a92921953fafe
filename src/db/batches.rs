//! Storing batches of validated records: one statement inserts them (conflicting ids
//! skipped) and returns what it added, its checksum and its rollup deltas; the caller
//! merges the deltas of a whole transaction, applies them with one sorted upsert
//! ([`apply_rollups`], so concurrent writers lock rollup rows in the same order and
//! cannot deadlock) and records the batch in the ledger ([`record`]) that the
//! integrity reconciliation reads. The data-consumer and the api's direct inserts both
//! come through here, so rollups and the ledger cover every row.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::api::schema::{FieldType, Record, Schema, quote, table};

/// Rollup widths and their PostgreSQL intervals.
pub const WIDTHS: &[(&str, &str)] = &[("1m", "1 minute"), ("1h", "1 hour")];

/// A rollup row's key: category, width, field, target, bucket start (the primary key
/// order).
pub type RollupKey = (String, String, String, String, DateTime<Utc>);

/// Count, min, max and sum of one rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    /// Values.
    pub count: i64,
    /// Lowest.
    pub min: f64,
    /// Highest.
    pub max: f64,
    /// Sum.
    pub sum: f64,
}

impl Agg {
    fn merge(&mut self, o: Agg) {
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }
}

/// Rollup deltas of a transaction, merged by key.
#[derive(Debug, Default)]
pub struct Rollups(pub BTreeMap<RollupKey, Agg>);

impl Rollups {
    /// Adds one delta.
    pub fn add(&mut self, key: RollupKey, agg: Agg) {
        self.0
            .entry(key)
            .and_modify(|a| a.merge(agg))
            .or_insert(agg);
    }
}

/// What one inserted batch added.
#[derive(Debug, Default)]
pub struct Inserted {
    /// Ids of the rows added (conflicting ids were already stored).
    pub new_ids: Vec<uuid::Uuid>,
    /// `bit_xor(hashtextextended(id::text, 0))` over the rows added.
    pub checksum: i64,
}

/// One ledger entry: a stored batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerEntry {
    /// Stream (`TMIDB_DATA@<created>`) the message came from; None for api inserts.
    pub stream: Option<String>,
    /// Its stream sequence.
    pub stream_seq: Option<u64>,
    /// Category (None for a message that was not a record batch).
    pub category: Option<String>,
    /// Records in the batch.
    pub records: i64,
    /// Rows it added.
    pub new_rows: i64,
    /// Checksum of the rows it added.
    pub checksum: i64,
}

fn numeric(schema: &Schema) -> Vec<&str> {
    schema
        .fields
        .iter()
        .filter(|f| matches!(f.kind, FieldType::Int | FieldType::Float))
        .map(|f| f.name.as_str())
        .collect()
}

fn insert_sql(schema: &Schema) -> String {
    let names: Vec<String> = schema.fields.iter().map(|f| quote(&f.name)).collect();
    let defs: Vec<String> = schema
        .fields
        .iter()
        .map(|f| format!("{} {}", quote(&f.name), f.kind.sql()))
        .collect();
    let comma = if names.is_empty() { "" } else { ", " };
    let nums = numeric(schema);
    let returning: String = nums.iter().map(|n| format!(", {}", quote(n))).collect();
    let rollups = if nums.is_empty() {
        "'[]'::jsonb".to_string()
    } else {
        let values: Vec<String> = nums
            .iter()
            .map(|n| format!("('{n}', ins.{}::float8)", quote(n)))
            .collect();
        let widths: Vec<String> = WIDTHS
            .iter()
            .map(|(w, iv)| format!("('{w}', interval '{iv}')"))
            .collect();
        format!(
            "(SELECT coalesce(jsonb_agg(jsonb_build_array(width, field, target, bucket, n, lo, hi, total)), '[]'::jsonb) FROM (\
             SELECT w.width, v.field, ins.target, date_bin(w.iv, ins.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, \
             count(*) AS n, min(v.val) AS lo, max(v.val) AS hi, sum(v.val) AS total \
             FROM ins CROSS JOIN LATERAL (VALUES {}) AS v(field, val) CROSS JOIN (VALUES {}) AS w(width, iv) \
             WHERE v.val IS NOT NULL GROUP BY 1, 2, 3, 4) r)",
            values.join(", "),
            widths.join(", ")
        )
    };
    format!(
        "WITH ins AS (INSERT INTO {} (id, target, ts, schema_version{comma}{cols}) SELECT id, target, ts, $2{comma}{cols} \
         FROM jsonb_to_recordset($1) AS x(id uuid, target text, ts timestamptz{comma}{defs}) ON CONFLICT DO NOTHING \
         RETURNING id, target, ts{returning}) \
         SELECT (SELECT coalesce(array_agg(id), '{{}}') FROM ins), \
         (SELECT coalesce(bit_xor(hashtextextended(id::text, 0)), 0) FROM ins), {rollups}",
        quote(&table(&schema.category)),
        cols = names.join(", "),
        defs = defs.join(", ")
    )
}

fn rows_json(records: &[(uuid::Uuid, Record)]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|(id, r)| {
                let mut m = serde_json::Map::new();
                m.insert("id".into(), id.to_string().into());
                m.insert("target".into(), r.target.clone().into());
                m.insert("ts".into(), r.ts.to_rfc3339().into());
                for (k, v) in &r.values {
                    m.insert(k.clone(), v.clone());
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// Inserts records with their ids (ids already stored are skipped) and adds the new
/// rows' rollup deltas to `rollups`. Part of the caller's transaction.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    schema: &Schema,
    records: &[(uuid::Uuid, Record)],
    rollups: &mut Rollups,
) -> Result<Inserted, sqlx::Error> {
    if records.is_empty() {
        return Ok(Inserted::default());
    }
    let (new_ids, checksum, deltas): (Vec<uuid::Uuid>, i64, Value) =
        sqlx::query_as(sqlx::AssertSqlSafe(insert_sql(schema)))
            .bind(rows_json(records))
            .bind(schema.version)
            .fetch_one(&mut **tx)
            .await?;
    for d in deltas.as_array().into_iter().flatten() {
        let (Some(width), Some(field), Some(target), Some(bucket)) =
            (d[0].as_str(), d[1].as_str(), d[2].as_str(), d[3].as_str())
        else {
            continue;
        };
        let Ok(bucket) = DateTime::parse_from_rfc3339(bucket) else {
            continue;
        };
        rollups.add(
            (
                schema.category.clone(),
                width.into(),
                field.into(),
                target.into(),
                bucket.with_timezone(&Utc),
            ),
            Agg {
                count: d[4].as_i64().unwrap_or(0),
                min: d[5].as_f64().unwrap_or(f64::NAN),
                max: d[6].as_f64().unwrap_or(f64::NAN),
                sum: d[7].as_f64().unwrap_or(0.0),
            },
        );
    }
    Ok(Inserted { new_ids, checksum })
}

/// Applies merged rollup deltas: one upsert in primary-key order.
pub async fn apply_rollups(
    tx: &mut Transaction<'_, Postgres>,
    rollups: &Rollups,
) -> Result<(), sqlx::Error> {
    if rollups.0.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = rollups
        .0
        .iter()
        .map(|((c, w, f, t, b), a)| {
            serde_json::json!({"category": c, "width": w, "field": f, "target": t,
                "bucket": b.to_rfc3339(), "count": a.count, "min": a.min, "max": a.max, "sum": a.sum})
        })
        .collect();
    sqlx::query(
        "INSERT INTO rollups (category, width, field, target, bucket, count, min, max, sum)
         SELECT category, width, field, target, bucket, count, min, max, sum FROM jsonb_to_recordset($1)
           AS x(category text, width text, field text, target text, bucket timestamptz, count bigint,
                min float8, max float8, sum float8)
         ORDER BY category, width, field, target, bucket
         ON CONFLICT (category, width, field, target, bucket) DO UPDATE SET
           count = rollups.count + excluded.count, min = least(rollups.min, excluded.min),
           max = greatest(rollups.max, excluded.max), sum = rollups.sum + excluded.sum",
    )
    .bind(Value::Array(rows))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records stored batches in the ledger (a batch already recorded, i.e. a redelivered
/// message, is skipped).
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[LedgerEntry],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ingest_batches (stream, stream_seq, category, records, new_rows, checksum)
         SELECT stream, stream_seq, category, records, new_rows, checksum FROM jsonb_to_recordset($1)
           AS x(stream text, stream_seq bigint, category text, records int, new_rows int, checksum bigint)
         ON CONFLICT (stream, stream_seq) DO NOTHING",
    )
    .bind(serde_json::to_value(entries).expect("json"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores records outside the pipeline (the api's direct inserts): fresh ids, rollups
/// and a ledger entry in one transaction; returns how many were stored.
pub async fn insert_direct(
    pool: &sqlx::PgPool,
    schema: &Schema,
    records: Vec<Record>,
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let with_ids: Vec<(uuid::Uuid, Record)> = records
        .into_iter()
        .map(|r| (uuid::Uuid::new_v4(), r))
        .collect();
    let mut rollups = Rollups::default();
    let mut tx = pool.begin().await?;
    let ins = insert(&mut tx, schema, &with_ids, &mut rollups).await?;
    apply_rollups(&mut tx, &rollups).await?;
    record(
        &mut tx,
        &[LedgerEntry {
            stream: None,
            stream_seq: None,
            category: Some(schema.category.clone()),
            records: with_ids.len() as i64,
            new_rows: ins.new_ids.len() as i64,
            checksum: ins.checksum,
        }],
    )
    .await?;
    tx.commit().await?;
    Ok(ins.new_ids.len() as u64)
}
