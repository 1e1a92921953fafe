//! Integrity reconciliation: does what was written match what is stored?
//!
//! - Stream: every data-stream sequence up to the writers' ack floor must have a ledger
//!   row (`ingest_batches`); a missing one is a gap (a message acknowledged but never
//!   stored).
//! - Rows: per category, the rows the ledger says were added (count and `bit_xor` of
//!   `hashtextextended(id::text, 0)`) must equal the rows in the table. Fewer rows is
//!   data lost; more is data stored outside the ledger or twice.
//!
//! The rows are read in one snapshot with the ledger, in block ranges ([`Pace`]): a
//! table of millions of rows is read without taking the cores the writers need.
//!
//! The data-consumer runs it every `ingest.reconcile_interval` and logs the result;
//! `GET /api/v1/integrity` runs it on demand. The last report is kept in `settings`
//! ([`last`]) for the console's dashboard.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::db::{quote, table};

/// The data stream against the ledger.
#[derive(Debug, Clone, PartialEq, Object, Serialize, Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct StreamCheck {
    /// The stream incarnation (`TMIDB_DATA@<created>`).
    pub stream: String,
    /// Every message up to this sequence has been acknowledged by a writer.
    pub ack_floor: u64,
    /// Messages not yet acknowledged.
    pub pending: u64,
    /// Where the ledger starts (0, or the ack floor when an upgraded installation
    /// first ran a ledger-keeping data-consumer).
    pub ledger_start: u64,
    /// Ledger rows up to the ack floor.
    pub ledgered: u64,
    /// Acknowledged messages without a ledger row.
    pub gaps: u64,
    /// The first missing sequences (at most 20).
    pub missing: Vec<u64>,
    /// Seconds the oldest message not yet stored has waited (0: none waits).
    pub oldest_pending_secs: u64,
    /// Its stream sequence, when it has waited longer than `ingest.max_pending_age`:
    /// the writers are stalled (or the database is away). Absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_seq: Option<u64>,
}

/// One category's stored rows against the ledger.
#[derive(Debug, Clone, PartialEq, Object, Serialize, Deserialize)]
pub struct CategoryCheck {
    /// Category.
    pub category: String,
    /// Rows the ledger says were added.
    pub ledger_rows: i64,
    /// Rows in the table.
    pub stored_rows: i64,
    /// Records that arrived again and were skipped (redeliveries, re-sent records).
    pub skipped_duplicates: i64,
    /// Ledger rows missing from the table.
    pub missing_rows: i64,
    /// Rows in the table the ledger does not account for.
    pub unexpected_rows: i64,
    /// Whether the id checksums agree.
    pub checksum_ok: bool,
}

/// A reconciliation.
#[derive(Debug, Clone, PartialEq, Object, Serialize, Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct Report {
    /// When it ran.
    pub checked_at: DateTime<Utc>,
    /// True when there are no gaps and every category matches.
    pub ok: bool,
    /// The stream (absent when NATS could not be asked).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamCheck>,
    /// Per category.
    pub categories: Vec<CategoryCheck>,
}

fn start_key(epoch: &str) -> String {
    format!("ledger_start:{epoch}")
}

/// Records, once per stream incarnation, the ack floor at which the ledger starts (0
/// for a new stream; an installation upgraded with messages already acknowledged
/// starts from there).
pub async fn mark_ledger_start(
    pool: &PgPool,
    stream: &async_nats::jetstream::stream::Stream,
    epoch: &str,
) {
    let Ok(info) = stream.consumer_info(crate::pipeline::CONSUMER).await else {
        return;
    };
    let floor = info.ack_floor.stream_sequence;
    let r = sqlx::query(
        "INSERT INTO settings (key, value) SELECT $1, $2 WHERE NOT EXISTS
           (SELECT 1 FROM ingest_batches WHERE stream = $3) ON CONFLICT (key) DO NOTHING",
    )
    .bind(start_key(epoch))
    .bind(floor.to_string())
    .bind(epoch)
    .execute(pool)
    .await;
    if let Err(e) = r {
        tracing::warn!("cannot record where the ledger starts: {e}");
    }
}

/// How fast the row check reads the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as one backend can (someone is waiting for the answer).
    Now,
    /// With a pause after each [`CHUNK_BLOCKS`] as long as the chunk took: at most half
    /// a core, so the writers' latency does not notice (a data-consumer's loop).
    Background,
}

/// Heap blocks (8 KiB) the row check reads per statement: a few tens of milliseconds.
pub const CHUNK_BLOCKS: i64 = 256;

/// Runs a reconciliation (`js`: JetStream, to read the writers' ack floor).
///
/// The rows are checked in one read-only repeatable-read transaction, so the ledger
/// and the tables are seen at the same instant however busy the writers are; each
/// table is read in block ranges (`ctid`), one leaf (partition, chunk) at a time,
/// without parallel workers, at `pace`.
pub async fn reconcile(
    pool: &PgPool,
    js: Option<&async_nats::jetstream::Context>,
    max_pending_age: std::time::Duration,
    pace: Pace,
) -> Result<Report, sqlx::Error> {
    let mut stream_check = None;
    if let Some(js) = js
        && let Ok(mut stream) = js.get_stream(crate::pipeline::STREAM).await
        && let Ok(epoch) = crate::pipeline::stream_epoch(&mut stream).await
        && let Ok(info) = stream.consumer_info(crate::pipeline::CONSUMER).await
        && let Ok(state) = stream.info().await.map(|i| i.state.clone())
    {
        // A work queue: what is still in the stream is not stored yet, and the first
        // message is the one that has waited longest.
        let oldest_pending_secs = if state.messages > 0 {
            let first =
                chrono::DateTime::<Utc>::from_timestamp(state.first_timestamp.unix_timestamp(), 0)
                    .unwrap_or_else(Utc::now);
            (Utc::now() - first).num_seconds().max(0) as u64
        } else {
            0
        };
        let stalled_seq =
            (oldest_pending_secs > max_pending_age.as_secs()).then_some(state.first_sequence);
        let floor = info.ack_floor.stream_sequence;
        let start: u64 =
            sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
                .bind(start_key(&epoch))
                .fetch_optional(pool)
                .await?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        let ledgered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ingest_batches WHERE stream = $1 AND stream_seq > $2 AND stream_seq <= $3",
        )
        .bind(&epoch)
        .bind(start as i64)
        .bind(floor as i64)
        .fetch_one(pool)
        .await?;
        let gaps = floor.saturating_sub(start).saturating_sub(ledgered as u64);
        let missing: Vec<i64> = if gaps > 0 {
            sqlx::query_scalar(
                "SELECT s FROM generate_series($2::bigint + 1, $3) AS s WHERE NOT EXISTS
                   (SELECT 1 FROM ingest_batches WHERE stream = $1 AND stream_seq = s) ORDER BY s LIMIT 20",
            )
            .bind(&epoch)
            .bind(start as i64)
            .bind(floor as i64)
            .fetch_all(pool)
            .await?
        } else {
            vec![]
        };
        stream_check = Some(StreamCheck {
            stream: epoch,
            ack_floor: floor,
            ledger_start: start,
            pending: info.num_pending + info.num_ack_pending as u64,
            ledgered: ledgered as u64,
            gaps,
            missing: missing.into_iter().map(|s| s as u64).collect(),
            oldest_pending_secs,
            stalled_seq,
        });
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
        .execute(&mut *tx)
        .await?;
    // The first query takes the snapshot every later one reads.
    let ledger: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT c.name, coalesce(sum(b.new_rows), 0)::bigint, coalesce(sum(b.records - b.new_rows), 0)::bigint,
                coalesce(bit_xor(b.checksum), 0)
         FROM categories c LEFT JOIN ingest_batches b ON b.category = c.name GROUP BY c.name ORDER BY c.name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut categories = vec![];
    for (name, ledger_rows, skipped, ledger_sum) in ledger {
        let (stored, sum) = stored_rows(&mut tx, &table(&name), pace).await?;
        categories.push(CategoryCheck {
            category: name,
            ledger_rows,
            stored_rows: stored,
            skipped_duplicates: skipped,
            missing_rows: (ledger_rows - stored).max(0),
            unexpected_rows: (stored - ledger_rows).max(0),
            checksum_ok: sum == ledger_sum,
        });
    }
    tx.commit().await?;
    let ok = stream_check
        .as_ref()
        .is_none_or(|s| s.gaps == 0 && s.stalled_seq.is_none())
        && categories
            .iter()
            .all(|c| c.missing_rows == 0 && c.unexpected_rows == 0 && c.checksum_ok);
    let report = Report {
        checked_at: Utc::now(),
        ok,
        stream: stream_check,
        categories,
    };
    // Kept for whoever asks between runs (the console's dashboard).
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ('integrity:last', $1)
         ON CONFLICT (key) DO UPDATE SET value = $1",
    )
    .bind(serde_json::to_string(&report).expect("json"))
    .execute(pool)
    .await?;
    Ok(report)
}

/// Count and `bit_xor(hashtextextended(id::text, 0))` of the rows of `table` visible
/// to the transaction's snapshot: every leaf of its inheritance tree (the table itself,
/// its partitions, TimescaleDB's chunks) read in ranges of [`CHUNK_BLOCKS`] blocks,
/// the last range open-ended so a leaf that grew since its size was read is read whole.
async fn stored_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    table: &str,
    pace: Pace,
) -> Result<(i64, i64), sqlx::Error> {
    let leaves: Vec<(String, i64)> = sqlx::query_as(
        "WITH RECURSIVE tree(oid) AS (
           SELECT $1::regclass::oid
           UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid)
         SELECT c.oid::regclass::text, pg_relation_size(c.oid) / current_setting('block_size')::bigint
         FROM tree t JOIN pg_class c ON c.oid = t.oid WHERE c.relkind = 'r'",
    )
    .bind(quote(table))
    .fetch_all(&mut **tx)
    .await?;
    let (mut count, mut sum) = (0i64, 0i64);
    for (leaf, blocks) in leaves {
        let mut from = 0;
        loop {
            let last = from + CHUNK_BLOCKS >= blocks;
            let upper = if last {
                String::new()
            } else {
                format!(" AND ctid < '({},0)'", from + CHUNK_BLOCKS)
            };
            let started = std::time::Instant::now();
            // `leaf` is a regclass the catalog printed (quoted where needed).
            let (n, x): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT count(*), coalesce(bit_xor(hashtextextended(id::text, 0)), 0)
                 FROM ONLY {leaf} WHERE ctid >= '({from},0)'{upper}"
            )))
            .fetch_one(&mut **tx)
            .await?;
            count += n;
            sum ^= x;
            if last {
                break;
            }
            from += CHUNK_BLOCKS;
            if pace == Pace::Background {
                tokio::time::sleep(started.elapsed()).await;
            }
        }
    }
    Ok((count, sum))
}

/// The last report [`reconcile`] made (by a data-consumer's loop or on demand).
pub async fn last(pool: &PgPool) -> Result<Option<Report>, sqlx::Error> {
    let text: Option<String> =
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'integrity:last'")
            .fetch_optional(pool)
            .await?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Logs a report: one info line when all is well, an error per problem otherwise.
pub fn log(r: &Report) {
    if r.ok {
        tracing::info!(
            categories = r.categories.len(),
            ack_floor = r.stream.as_ref().map(|s| s.ack_floor),
            "integrity: stream and rows reconcile"
        );
        return;
    }
    if let Some(s) = r.stream.as_ref().filter(|s| s.gaps > 0) {
        tracing::error!(gaps = s.gaps, missing = ?s.missing, "integrity: acknowledged stream messages were never stored");
    }
    if let Some(s) = r.stream.as_ref().filter(|s| s.stalled_seq.is_some()) {
        tracing::error!(
            seq = s.stalled_seq,
            waited_secs = s.oldest_pending_secs,
            "integrity: a message has waited too long to be stored (ingest.max_pending_age)"
        );
    }
    for c in r
        .categories
        .iter()
        .filter(|c| c.missing_rows > 0 || c.unexpected_rows > 0 || !c.checksum_ok)
    {
        tracing::error!(
            category = %c.category,
            ledger_rows = c.ledger_rows,
            stored_rows = c.stored_rows,
            checksum_ok = c.checksum_ok,
            "integrity: stored rows differ from the ledger"
        );
    }
}
