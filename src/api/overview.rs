//! The platform at a glance, for the console's dashboard: records stored per minute
//! over the last hour (per category and per source, from the ledger), dead letters of
//! the last hour, the JetStream backlog and the writers' lag, the last integrity
//! report, and the disk each service uses. Each figure is read from where it is kept
//! (the ledger's time index, JetStream's own counters, the last reconciliation); none
//! scans a record table.

use std::collections::BTreeMap;
use std::path::Path;

use super::AppState;
use crate::model::access::Principal;
use crate::web::error::ApiResult;

/// Minutes an ingest series covers.
pub const MINUTES: usize = 60;

/// Records stored per minute over the last hour, oldest minute first.
pub type Series = Vec<f64>;

/// What was stored in the last hour.
#[derive(Debug, Default)]
pub struct Ingest {
    /// Per category the caller may read.
    pub categories: BTreeMap<String, Series>,
    /// Per source (name records arrived under), over those categories.
    pub sources: BTreeMap<String, Series>,
    /// Dead letters of the last hour per category.
    pub rejected: BTreeMap<String, i64>,
}

/// What was stored and rejected in the last hour, in the categories `p` may read.
pub async fn ingest(state: &AppState, p: &Principal) -> ApiResult<Ingest> {
    let rows: Vec<(Option<String>, Option<String>, i32, i64)> = sqlx::query_as(
        "SELECT category, source, (59 - floor(extract(epoch FROM now() - committed_at) / 60))::int AS minute,
                sum(new_rows)::bigint
         FROM ingest_batches WHERE committed_at > now() - interval '1 hour' AND new_rows > 0
         GROUP BY 1, 2, 3",
    )
    .fetch_all(&state.pool)
    .await?;
    let mut out = Ingest::default();
    for (category, source, minute, n) in rows {
        let (Some(category), Ok(minute)) = (category, usize::try_from(minute)) else {
            continue;
        };
        if minute >= MINUTES || p.require_read(&category).is_err() {
            continue;
        }
        let series = |m: &mut BTreeMap<String, Series>, k: String| {
            m.entry(k).or_insert_with(|| vec![0.0; MINUTES])[minute] += n as f64;
        };
        series(&mut out.categories, category);
        series(
            &mut out.sources,
            source.unwrap_or_else(|| "(before 0.2)".into()),
        );
    }
    let rejected: Vec<(String, i64)> = sqlx::query_as(
        "SELECT category, count(*) FROM dead_letters WHERE created_at > now() - interval '1 hour' GROUP BY 1",
    )
    .fetch_all(&state.pool)
    .await?;
    out.rejected = rejected
        .into_iter()
        .filter(|(c, _)| p.require_read(c).is_ok())
        .collect();
    Ok(out)
}

/// The last integrity reconciliation, if there was one and it can be read.
pub async fn integrity(state: &AppState) -> Option<crate::integrity::Report> {
    crate::integrity::last(&state.pool).await.ok().flatten()
}

/// The pipeline's queues.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Raw NATS records the data-manager has not taken yet.
    pub ingest_pending: u64,
    /// Validated batches in `TMIDB_DATA` (kept until every writer acked them).
    pub data_messages: u64,
    /// Their size.
    pub data_bytes: u64,
    /// Batches not yet delivered to a data-consumer (the writers' lag).
    pub writer_pending: u64,
    /// Batches delivered and not yet acknowledged (being written).
    pub writer_ack_pending: u64,
}

/// The JetStream backlog and the writers' lag (None: NATS cannot be asked).
pub async fn backlog(state: &AppState) -> Option<Backlog> {
    use crate::pipeline::{CONSUMER, INGEST_CONSUMER, INGEST_STREAM, STREAM};
    let js = state.nats.as_ref()?;
    let mut out = Backlog::default();
    let mut data = js.get_stream(STREAM).await.ok()?;
    let info = data.info().await.ok()?;
    out.data_messages = info.state.messages;
    out.data_bytes = info.state.bytes;
    if let Ok(c) = data.consumer_info(CONSUMER).await {
        out.writer_pending = c.num_pending;
        out.writer_ack_pending = c.num_ack_pending as u64;
    }
    if let Ok(s) = js.get_stream(INGEST_STREAM).await
        && let Ok(c) = s.consumer_info(INGEST_CONSUMER).await
    {
        out.ingest_pending = c.num_pending + c.num_ack_pending as u64;
    }
    Some(out)
}

/// Disk used, in bytes (None where it cannot be read).
#[derive(Debug, Default)]
pub struct Disk {
    /// PostgreSQL's databases.
    pub postgresql: Option<u64>,
    /// The pipeline's JetStream streams.
    pub nats: Option<u64>,
    /// SeaweedFS's data directory.
    pub seaweedfs: Option<u64>,
}

/// The disk each service uses.
pub async fn disk(state: &AppState) -> Disk {
    let postgresql: Option<i64> =
        sqlx::query_scalar("SELECT sum(pg_database_size(datname))::bigint FROM pg_database")
            .fetch_one(&state.pool)
            .await
            .ok()
            .flatten();
    let nats = match &state.nats {
        Some(js) => {
            let mut total = Some(0);
            for name in crate::pipeline::STREAMS {
                let bytes = match js.get_stream(name).await {
                    Ok(mut s) => s.info().await.ok().map(|i| i.state.bytes),
                    Err(_) => None,
                };
                total = total.zip(bytes).map(|(t, b)| t + b);
            }
            total
        }
        None => None,
    };
    let dir = state.cfg.data_dir.join("seaweedfs");
    let seaweedfs = tokio::task::spawn_blocking(move || du(&dir))
        .await
        .ok()
        .flatten();
    Disk {
        postgresql: postgresql.map(|n| n as u64),
        nats,
        seaweedfs,
    }
}

/// The bytes of the files under `dir` (None if it cannot be read).
fn du(dir: &Path) -> Option<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            total += du(&e.path()).unwrap_or(0);
        } else {
            total += meta.len();
        }
    }
    Some(total)
}
