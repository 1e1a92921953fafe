//! Ingestion sources as stored (`sources`, `source_state`). Every change is announced on
//! the `tmidb_sources` channel (LISTEN/NOTIFY, delivered at commit), which is how the
//! data-manager picks it up without a restart.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::model::source::{Source, SourceKind};

/// The channel announcing source changes.
pub const CHANNEL: &str = "tmidb_sources";

/// A `sources` row.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    category: String,
    kind: String,
    config: Value,
    transform: Value,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, name, category, kind, config, transform, enabled, created_at, updated_at";

fn from_row(r: Row) -> Source {
    Source {
        id: r.id,
        name: r.name,
        category: r.category,
        kind: SourceKind::parse(&r.kind),
        config: r.config,
        transform: serde_json::from_value(r.transform).unwrap_or_default(),
        enabled: r.enabled,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// Every source, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Source>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sources ORDER BY name"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// One source by id or name.
pub async fn get(pool: &PgPool, key: &str) -> Result<Option<Source>, sqlx::Error> {
    let id = Uuid::parse_str(key).ok();
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sources WHERE id = $1 OR name = $2"
    )))
    .bind(id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(from_row))
}

/// The enabled source of `kind` for `category` whose transformation applies to records
/// arriving without a named source (pushes, NATS messages): the first by name.
pub async fn implicit(
    pool: &PgPool,
    category: &str,
    kind: SourceKind,
) -> Result<Option<Source>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM sources WHERE category = $1 AND kind = $2 AND enabled ORDER BY name LIMIT 1"
    )))
    .bind(category)
    .bind(kind.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(from_row))
}

/// Stores a source (new when `id` is unknown, replaced otherwise) and announces it.
/// With `expected`, a replacement is made only while the stored source is as last
/// seen (`updated_at`); None when it changed since.
pub async fn save(
    pool: &PgPool,
    s: &Source,
    expected: Option<DateTime<Utc>>,
) -> Result<Option<Source>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sources (id, name, category, kind, config, transform, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET name = $2, category = $3, kind = $4, config = $5, transform = $6,
           enabled = $7, updated_at = clock_timestamp()
         WHERE $8::timestamptz IS NULL OR sources.updated_at = $8
         RETURNING {COLUMNS}"
    )))
    .bind(s.id)
    .bind(&s.name)
    .bind(&s.category)
    .bind(s.kind.as_str())
    .bind(&s.config)
    .bind(serde_json::to_value(&s.transform).expect("json"))
    .bind(s.enabled)
    .bind(expected)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    super::notify(&mut tx, CHANNEL, &s.id.to_string()).await?;
    tx.commit().await?;
    Ok(Some(from_row(row)))
}

/// Deletes a source; false if there was none.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM sources WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    super::notify(&mut tx, CHANNEL, &id.to_string()).await?;
    tx.commit().await?;
    Ok(n > 0)
}

/// What a source remembered (None: nothing yet).
pub async fn load_state(pool: &PgPool, id: Uuid) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT state FROM source_state WHERE source_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Remembers a source's state.
pub async fn save_state(pool: &PgPool, id: Uuid, state: &Value) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO source_state (source_id, state) VALUES ($1, $2)
         ON CONFLICT (source_id) DO UPDATE SET state = $2, updated_at = now()",
    )
    .bind(id)
    .bind(state)
    .execute(pool)
    .await?;
    Ok(())
}

/// What the data-manager last said of a source's runner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Status {
    /// `running`, `failed` or `stopped`.
    pub state: String,
    /// Why (a failure's message).
    pub detail: String,
    /// When it said so.
    pub at: DateTime<Utc>,
}

/// Records what a source's runner is doing (`running`, `failed` with why, `stopped`).
pub async fn set_status(
    pool: &PgPool,
    id: Uuid,
    state: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO source_status (source_id, state, detail) VALUES ($1, $2, $3)
         ON CONFLICT (source_id) DO UPDATE SET state = $2, detail = $3, at = now()",
    )
    .bind(id)
    .bind(state)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// A source's recent activity, by the name its records and dead letters carry.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Activity {
    /// The source's name (`http_push`, `nats`, `api`, `store` for records that came
    /// without a defined source).
    pub source: String,
    /// Records stored in the last hour.
    pub stored: i64,
    /// Records rejected (dead letters) in the last hour.
    pub rejected: i64,
    /// When a batch of it was last stored.
    pub last_record: Option<DateTime<Utc>>,
}

/// Every source's activity of the last hour and its last stored batch: the defined
/// sources, and the names records arrived under without one in the last hour.
pub async fn activity(pool: &PgPool) -> Result<Vec<Activity>, sqlx::Error> {
    // Each figure per source name is an index range: (source, committed_at) for the
    // ledger, created_at for dead letters.
    sqlx::query_as(
        "WITH names AS (
           SELECT name AS source FROM sources
           UNION SELECT DISTINCT source FROM ingest_batches
             WHERE committed_at > now() - interval '1 hour' AND source IS NOT NULL
           UNION SELECT DISTINCT source FROM dead_letters WHERE created_at > now() - interval '1 hour')
         SELECT n.source,
           coalesce((SELECT sum(new_rows) FROM ingest_batches b
                     WHERE b.source = n.source AND b.committed_at > now() - interval '1 hour'), 0)::bigint AS stored,
           (SELECT count(*) FROM dead_letters d
            WHERE d.source = n.source AND d.created_at > now() - interval '1 hour') AS rejected,
           (SELECT max(committed_at) FROM ingest_batches b WHERE b.source = n.source) AS last_record
         FROM names n ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}

/// The runners' statuses by source id.
pub async fn statuses(pool: &PgPool) -> Result<Vec<(Uuid, Status)>, sqlx::Error> {
    let rows: Vec<(Uuid, String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT source_id, state, detail, at FROM source_status")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, state, detail, at)| (id, Status { state, detail, at }))
        .collect())
}
