//! Storing batches of validated records: one statement of typed arrays inserts them
//! (conflicting ids skipped) and says which rows it added, with each one's checksum
//! term; the added rows' rollup deltas are computed here and merged for the whole
//! transaction, then applied with one upsert in key order ([`apply_rollups`], so
//! concurrent writers lock rollup rows in the same order and cannot deadlock), and the
//! batch is recorded in the ledger ([`record`]) that the integrity reconciliation
//! reads. The data-consumer and the api's direct inserts both come through here, so
//! rollups and the ledger cover every row.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::api::schema::{FieldType, Record, Schema, quote, table};

/// Rollup widths and their lengths in seconds.
pub const WIDTHS: &[(&str, i64)] = &[("1m", 60), ("1h", 3600)];

/// A rollup row's key: category, width, field, target, bucket start (the primary key
/// order).
pub type RollupKey = (String, &'static str, String, String, DateTime<Utc>);

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

/// Rollup deltas of a transaction, merged by key, in the table's key order (bytewise,
/// as its `COLLATE "C"` keys compare).
#[derive(Debug, Default)]
pub struct Rollups(pub BTreeMap<RollupKey, Agg>);

impl Rollups {
    /// Adds one value to the bucket of `key`.
    pub fn add(&mut self, key: RollupKey, value: f64) {
        let one = Agg {
            count: 1,
            min: value,
            max: value,
            sum: value,
        };
        self.0
            .entry(key)
            .and_modify(|a| a.merge(one))
            .or_insert(one);
    }
}

/// One record to store, with its id (borrowed from a pipeline batch or an api insert).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// Content id (unique per category).
    pub id: uuid::Uuid,
    /// Target.
    pub target: &'a str,
    /// Time.
    pub ts: DateTime<Utc>,
    /// Field values by name.
    pub values: &'a BTreeMap<String, Value>,
}

impl Row<'_> {
    /// The row as the api shows a stored record (what `GET …/records` answers): `target`,
    /// `ts` as PostgreSQL writes it, `schema_version`, then the fields that have a value.
    pub fn stored_json(&self, schema_version: i32) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("target".into(), self.target.into());
        m.insert("ts".into(), crate::api::schema::stored_time(self.ts).into());
        m.insert("schema_version".into(), schema_version.into());
        for (k, v) in self.values.iter().filter(|(_, v)| !v.is_null()) {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl<'a> From<&'a crate::pipeline::WireRecord> for Row<'a> {
    fn from(r: &'a crate::pipeline::WireRecord) -> Self {
        Row {
            id: r.id,
            target: &r.target,
            ts: r.ts,
            values: &r.values,
        }
    }
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

impl LedgerEntry {
    /// The entry of `rows` given what [`insert`] said of each.
    pub fn of(
        stream: Option<(&str, u64)>,
        category: Option<&str>,
        added: &[Option<i64>],
    ) -> LedgerEntry {
        LedgerEntry {
            stream: stream.map(|(s, _)| s.to_string()),
            stream_seq: stream.map(|(_, q)| q),
            category: category.map(str::to_string),
            records: added.len() as i64,
            new_rows: added.iter().flatten().count() as i64,
            checksum: added.iter().flatten().fold(0, |x, h| x ^ h),
        }
    }
}

/// Binds one field of `rows` as a typed array (PostgreSQL's binary format), NULL where
/// a record has no value.
fn bind_column<'q, O>(
    q: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    category: &str,
    field: &str,
    kind: FieldType,
    rows: &[Row],
) -> Result<sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>, sqlx::Error> {
    fn typed<T>(
        rows: &[Row],
        field: &str,
        convert: impl Fn(&Value) -> Option<T>,
        bad: impl Fn(&Value) -> sqlx::Error,
    ) -> Result<Vec<Option<T>>, sqlx::Error> {
        rows.iter()
            .map(|r| match r.values.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => convert(v).map(Some).ok_or_else(|| bad(v)),
            })
            .collect()
    }
    // Validated records always convert; anything else is a bug worth stopping for.
    let bad = |v: &Value| {
        sqlx::Error::Protocol(format!(
            "{category}.{field}: {v} is not a valid {} (the record skipped validation)",
            kind.sql()
        ))
    };
    Ok(match kind {
        FieldType::Int => q.bind(typed(rows, field, Value::as_i64, bad)?),
        FieldType::Float => q.bind(typed(rows, field, Value::as_f64, bad)?),
        FieldType::Bool => q.bind(typed(rows, field, Value::as_bool, bad)?),
        FieldType::Text => q.bind(typed(rows, field, |v| v.as_str().map(str::to_string), bad)?),
        FieldType::Timestamp => q.bind(typed(
            rows,
            field,
            |v| {
                let t = DateTime::parse_from_rfc3339(v.as_str()?).ok()?;
                Some(t.with_timezone(&Utc))
            },
            bad,
        )?),
        FieldType::Json => q.bind(typed(
            rows,
            field,
            |v| Some(sqlx::types::Json(v.clone())),
            bad,
        )?),
    })
}

fn insert_sql(schema: &Schema) -> String {
    let mut cols = String::new();
    let mut select = String::new();
    let mut arrays = String::new();
    let mut aliases = String::new();
    for (i, f) in schema.fields.iter().enumerate() {
        cols.push_str(&format!(", {}", quote(&f.name)));
        select.push_str(&format!(", x.f{i}"));
        arrays.push_str(&format!(", ${}::{}[]", i + 5, f.kind.sql()));
        aliases.push_str(&format!(", f{i}"));
    }
    format!(
        "WITH ins AS (INSERT INTO {} (id, target, ts, schema_version{cols}) \
         SELECT x.id, x.target, x.ts, $4{select} \
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]{arrays}) AS x(id, target, ts{aliases}) \
         ON CONFLICT DO NOTHING RETURNING id) \
         SELECT coalesce(array_agg(id), '{{}}'), coalesce(array_agg(hashtextextended(id::text, 0)), '{{}}') FROM ins",
        quote(&table(&schema.category)),
    )
}

/// Start of the `secs`-wide bucket holding `ts`: what `date_bin` from 2000-01-01 gives
/// for widths that divide a day.
fn bucket(ts: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let start = ts.timestamp().div_euclid(secs) * secs;
    DateTime::from_timestamp(start, 0).unwrap_or(ts)
}

/// Inserts records with their ids (ids already stored, or repeated earlier in `rows`,
/// are skipped) in one statement of typed arrays, and adds the added rows' rollup
/// deltas to `rollups`. Answers, per row, the checksum term
/// (`hashtextextended(id::text, 0)`) of a row it added, None for a row skipped. Part
/// of the caller's transaction.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    schema: &Schema,
    rows: &[Row<'_>],
    rollups: &mut Rollups,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(insert_sql(schema)))
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.target).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.ts).collect::<Vec<_>>())
        .bind(schema.version);
    for f in &schema.fields {
        q = bind_column(q, &schema.category, &f.name, f.kind, rows)?;
    }
    let (ids, hashes): (Vec<uuid::Uuid>, Vec<i64>) = q.fetch_one(&mut **tx).await?;
    let mut new: std::collections::HashMap<uuid::Uuid, i64> = ids.into_iter().zip(hashes).collect();
    let numeric: Vec<&str> = schema
        .fields
        .iter()
        .filter(|f| matches!(f.kind, FieldType::Int | FieldType::Float))
        .map(|f| f.name.as_str())
        .collect();
    let mut added = Vec::with_capacity(rows.len());
    for r in rows {
        // The first occurrence of an id is the one stored.
        let hash = new.remove(&r.id);
        if hash.is_some() {
            for field in &numeric {
                let Some(v) = r.values.get(*field).and_then(Value::as_f64) else {
                    continue;
                };
                for &(width, secs) in WIDTHS {
                    let key = (
                        schema.category.clone(),
                        width,
                        field.to_string(),
                        r.target.to_string(),
                        bucket(r.ts, secs),
                    );
                    rollups.add(key, v);
                }
            }
        }
        added.push(hash);
    }
    Ok(added)
}

/// Applies merged rollup deltas: one upsert of typed arrays, in key order (the map's
/// order, which is the order of the rows in the arrays and so the order in which every
/// writer locks them: concurrent writers cannot deadlock on rollup rows).
pub async fn apply_rollups(
    tx: &mut Transaction<'_, Postgres>,
    rollups: &Rollups,
) -> Result<(), sqlx::Error> {
    if rollups.0.is_empty() {
        return Ok(());
    }
    let keys = rollups.0.keys();
    let aggs = rollups.0.values();
    sqlx::query(
        "INSERT INTO rollups (category, width, field, target, bucket, count, min, max, sum)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                              $6::bigint[], $7::float8[], $8::float8[], $9::float8[])
         ON CONFLICT (category, width, field, target, bucket) DO UPDATE SET
           count = rollups.count + excluded.count, min = least(rollups.min, excluded.min),
           max = greatest(rollups.max, excluded.max), sum = rollups.sum + excluded.sum",
    )
    .bind(keys.clone().map(|k| k.0.as_str()).collect::<Vec<_>>())
    .bind(keys.clone().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.clone().map(|k| k.2.as_str()).collect::<Vec<_>>())
    .bind(keys.clone().map(|k| k.3.as_str()).collect::<Vec<_>>())
    .bind(keys.map(|k| k.4).collect::<Vec<_>>())
    .bind(aggs.clone().map(|a| a.count).collect::<Vec<_>>())
    .bind(aggs.clone().map(|a| a.min).collect::<Vec<_>>())
    .bind(aggs.clone().map(|a| a.max).collect::<Vec<_>>())
    .bind(aggs.map(|a| a.sum).collect::<Vec<_>>())
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

/// Stores records outside the pipeline (the api's direct inserts) with their content
/// ids, as the pipeline does (a record already stored is skipped): rollups, alert
/// evaluation and a ledger entry in one transaction. Returns the rows it added, as the
/// api shows them (for live followers).
pub async fn insert_direct(
    pool: &sqlx::PgPool,
    schema: &Schema,
    records: &[Record],
) -> Result<Vec<Value>, sqlx::Error> {
    if records.is_empty() {
        return Ok(vec![]);
    }
    let rows: Vec<Row> = records
        .iter()
        .map(|r| Row {
            id: r.content_id(&schema.category),
            target: &r.target,
            ts: r.ts,
            values: &r.values,
        })
        .collect();
    let mut rollups = Rollups::default();
    let mut tx = pool.begin().await?;
    let added = insert(&mut tx, schema, &rows, &mut rollups).await?;
    let new: Vec<Row> = rows
        .into_iter()
        .zip(&added)
        .filter_map(|(r, a)| a.map(|_| r))
        .collect();
    crate::alerts::evaluate(&mut tx, &schema.category, &new).await?;
    apply_rollups(&mut tx, &rollups).await?;
    let entry = LedgerEntry::of(None, Some(&schema.category), &added);
    record(&mut tx, std::slice::from_ref(&entry)).await?;
    tx.commit().await?;
    Ok(new.iter().map(|r| r.stored_json(schema.version)).collect())
}
