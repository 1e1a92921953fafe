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
    /// The record as received (or as last edited).
    pub raw: Value,
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
    reasons: Value,
    schema_version: i32,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, category, source, position, raw, reasons, schema_version, status, created_at, updated_at";

fn from_row(r: Row) -> StoredDeadLetter {
    StoredDeadLetter {
        id: r.id,
        category: r.category,
        source: r.source,
        position: r.position,
        raw: r.raw,
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

/// Dead letters, oldest first, filtered by category and status; `after` pages.
pub async fn list(
    pool: &PgPool,
    category: Option<&str>,
    status: Option<&str>,
    limit: i64,
    after: Option<Uuid>,
) -> Result<Vec<StoredDeadLetter>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE ($1::text IS NULL OR category = $1) AND ($2::text IS NULL OR status = $2)
           AND ($4::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM dead_letters WHERE id = $4))
         ORDER BY created_at, id LIMIT $3"
    )))
    .bind(category)
    .bind(status)
    .bind(limit)
    .bind(after)
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

/// Replaces a letter's payload (a user's fix); it is pending again.
pub async fn edit(
    pool: &PgPool,
    id: Uuid,
    raw: &Value,
) -> Result<Option<StoredDeadLetter>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE dead_letters SET raw = $2, status = 'pending', updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(raw)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(from_row))
}

/// Records the outcome of a replay: `replayed`, or still pending with new reasons.
pub async fn replayed(
    pool: &PgPool,
    id: Uuid,
    outcome: Result<i32, (i32, &[Reason])>,
) -> Result<(), sqlx::Error> {
    match outcome {
        Ok(version) => {
            sqlx::query(
                "UPDATE dead_letters SET status = 'replayed', schema_version = $2, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(version)
            .execute(pool)
            .await?
        }
        Err((version, reasons)) => {
            sqlx::query(
                "UPDATE dead_letters SET reasons = $2, schema_version = $3, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(serde_json::to_value(reasons).expect("json"))
            .bind(version)
            .execute(pool)
            .await?
        }
    };
    Ok(())
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
