//! Dead letters as stored: written by the data-consumer from `tmidb.dead.{category}`,
//! listed, edited and replayed through the api.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::model::wire::DeadLetter;

/// One reason a record was rejected.
#[derive(Debug, Clone, PartialEq, Object, serde::Serialize, serde::Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct Reason {
    /// The field concerned, if any.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

/// A dead letter as the api shows it.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct StoredDeadLetter {
    /// Id.
    pub id: Uuid,
    /// Category.
    pub category: String,
    /// Source name.
    pub source: String,
    /// Where in the source it was.
    pub position: String,
    /// The record as a replay sends it: as received, or as last edited.
    pub raw: Value,
    /// The record as received, once it has been edited (absent before any edit).
    pub original: Option<Value>,
    /// Why it was rejected (the latest attempt).
    pub reasons: Vec<Reason>,
    /// Schema version of the latest attempt.
    pub schema_version: i32,
    /// `pending` or `replayed`.
    pub status: String,
    /// First rejected.
    pub created_at: DateTime<Utc>,
    /// Last edited or replayed.
    pub updated_at: DateTime<Utc>,
}

/// A `dead_letters` row.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    category: String,
    source: String,
    position: String,
    raw: Value,
    original: Option<Value>,
    reasons: Value,
    schema_version: i32,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, category, source, position, raw, original, reasons, schema_version, status, created_at, updated_at";

fn from_row(r: Row) -> StoredDeadLetter {
    StoredDeadLetter {
        id: r.id,
        category: r.category,
        source: r.source,
        position: r.position,
        raw: r.raw,
        original: r.original,
        reasons: serde_json::from_value(r.reasons).unwrap_or_default(),
        schema_version: r.schema_version,
        status: r.status,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Stores dead letters (a letter already stored is kept as it is). Part of the
/// consumer's transaction.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    letters: &[DeadLetter],
) -> Result<(), sqlx::Error> {
    if letters.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = letters
        .iter()
        .map(|l| {
            // A dead letter keeps what the records table could not: NULs become ␀.
            crate::model::schema::without_nul(&serde_json::json!({"id": l.id,
                "category": l.category, "source": l.source, "position": l.position,
                "raw": l.raw, "reasons": l.reasons, "schema_version": l.schema_version}))
        })
        .collect();
    sqlx::query(
        "INSERT INTO dead_letters (id, category, source, position, raw, reasons, schema_version)
         SELECT id, category, source, position, raw, reasons, schema_version FROM jsonb_to_recordset($1)
           AS x(id uuid, category text, source text, position text, raw jsonb, reasons jsonb, schema_version int)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(Value::Array(rows))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Which dead letters a list shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    /// Of this category.
    pub category: Option<&'a str>,
    /// From this source.
    pub source: Option<&'a str>,
    /// `pending` or `replayed`.
    pub status: Option<&'a str>,
}

/// Dead letters, oldest first, by `filter`; `after` (a letter's id) pages.
pub async fn list(
    pool: &PgPool,
    filter: Filter<'_>,
    limit: i64,
    after: Option<Uuid>,
) -> Result<Vec<StoredDeadLetter>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE ($1::text IS NULL OR category = $1) AND ($2::text IS NULL OR status = $2)
           AND ($5::text IS NULL OR source = $5)
           AND ($4::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM dead_letters WHERE id = $4))
         ORDER BY created_at, id LIMIT $3"
    )))
    .bind(filter.category)
    .bind(filter.status)
    .bind(limit)
    .bind(after)
    .bind(filter.source)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The letters of `ids` (those that exist), oldest first.
pub async fn get_many(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<StoredDeadLetter>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = ANY($1) ORDER BY created_at, id"
    )))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// One dead letter.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<StoredDeadLetter>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(from_row))
}

/// Replaces a letter's payload (a user's fix; the payload as received is kept in
/// `original` at the first edit); it is pending again. With `expected`, only while
/// the letter is as last seen (`updated_at`); None when there is no such letter or
/// it changed since.
pub async fn edit(
    pool: &PgPool,
    id: Uuid,
    raw: &Value,
    expected: Option<DateTime<Utc>>,
) -> Result<Option<StoredDeadLetter>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE dead_letters SET original = coalesce(original, raw), raw = $2, status = 'pending', updated_at = now()
         WHERE id = $1 AND ($3::timestamptz IS NULL OR updated_at = $3) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(raw)
    .bind(expected)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(from_row))
}

/// Records the outcome of a replay, in one transaction: the letters `replayed` (their
/// records are in the pipeline) are marked so; the `failed` ones stay pending with
/// their new reasons; both with the schema version they were checked against.
pub async fn replayed(
    pool: &PgPool,
    version: i32,
    replayed: &[Uuid],
    failed: &[(Uuid, Vec<Reason>)],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE dead_letters SET status = 'replayed', schema_version = $2, updated_at = now() WHERE id = ANY($1)",
    )
    .bind(replayed)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = failed.iter().map(|(id, _)| *id).collect();
    let reasons: Vec<Value> = failed
        .iter()
        .map(|(_, r)| serde_json::to_value(r).expect("json"))
        .collect();
    sqlx::query(
        "UPDATE dead_letters d SET reasons = x.reasons, schema_version = $3, updated_at = now()
         FROM unnest($1::uuid[], $2::jsonb[]) AS x(id, reasons) WHERE d.id = x.id",
    )
    .bind(&ids)
    .bind(&reasons)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Deletes a letter (given up on); false if there was none.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM dead_letters WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        > 0)
}
