//! The data-consumer: pulls batches from the shared durable JetStream consumer and
//! writes them to PostgreSQL, one transaction per fetch, acknowledging only after the
//! commit. Records carry content ids and conflicts are skipped, so a redelivery (after
//! a crash between commit and ack) stores nothing twice: effectively once, with any
//! number of instances.
//!
//! The same transaction maintains the 1m/1h rollups, stores dead letters, evaluates
//! alert rules and records each message in the ledger (`ingest_batches`) that the
//! integrity reconciliation checks. After the commit, the new records are published on
//! `tmidb.live.{category}` for live followers (SSE).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::config::Config;
use crate::db::categories::SchemaCache;
use crate::db::store::{Origin, Writer, Written};
use crate::model::schema::{Schema, record_json};
use crate::model::wire::Row;
use crate::model::wire::{Batch, DeadBatch, DeadLetter};

/// One message as decoded.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// Validated records.
    Data(Batch),
    /// Dead letters.
    Dead(DeadBatch),
    /// Not a message this version understands (terminated, recorded in the ledger).
    Bad(String),
}

/// Decodes a message by its subject.
pub fn decode(subject: &str, payload: &[u8]) -> Decoded {
    let r = if subject.starts_with(crate::pipeline::DEAD_PREFIX) {
        serde_json::from_slice(payload).map(Decoded::Dead)
    } else {
        serde_json::from_slice(payload).map(Decoded::Data)
    };
    r.unwrap_or_else(|e| Decoded::Bad(e.to_string()))
}

/// Where a data-consumer writes: the database, its storage kind, the caches of
/// schemas and partitions, and the stream epoch its ledger rows name.
#[derive(Clone, Copy)]
pub struct Sink<'a> {
    /// PostgreSQL.
    pub pool: &'a sqlx::PgPool,
    /// TimescaleDB or native partitions.
    pub storage: crate::db::Storage,
    /// Schemas by version.
    pub schemas: &'a SchemaCache,
    /// Partitions known to exist.
    pub partitions: &'a crate::db::categories::PartitionCache,
    /// The data stream's epoch.
    pub epoch: &'a str,
}

impl Sink<'_> {
    /// A batch's schema version; a version that cannot be read (the category was
    /// deleted meanwhile, PostgreSQL is away) fails the transaction like any database
    /// error.
    async fn schema(&self, category: &str, version: i32) -> Result<Arc<Schema>, sqlx::Error> {
        self.schemas
            .version(self.pool, category, version)
            .await
            .map_err(|e| match e {
                crate::db::categories::CategoryError::Sql(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })
    }

    /// The partitions records at `times` of `category` go to, created if missing.
    async fn ensure_partitions(
        &self,
        category: &str,
        times: impl Iterator<Item = chrono::DateTime<chrono::Utc>>,
    ) -> Result<(), sqlx::Error> {
        crate::db::categories::ensure_partitions(
            self.pool,
            self.storage,
            self.partitions,
            category,
            times,
        )
        .await
    }
}

/// Writes decoded messages (with their stream sequences) in one transaction through
/// the one write path ([`Writer`]): the records of each category and schema version
/// with one statement, dead letters, and a ledger entry per message.
pub async fn write(sink: &Sink<'_>, messages: &[(u64, Decoded)]) -> Result<Written, sqlx::Error> {
    // The record batches by category and schema version, in name order (the order in
    // which every writer takes alert-state locks).
    let mut groups: BTreeMap<(&str, i32), Vec<(u64, &Batch)>> = BTreeMap::new();
    for (seq, m) in messages {
        if let Decoded::Data(b) = m {
            groups
                .entry((&b.category, b.schema_version))
                .or_default()
                .push((*seq, b));
        }
    }
    for ((category, _), batches) in &groups {
        let times = batches
            .iter()
            .flat_map(|(_, b)| b.records.iter().map(|r| r.ts));
        sink.ensure_partitions(category, times).await?;
    }
    let message = |seq: u64| Origin {
        message: Some((sink.epoch, seq)),
        source: None,
    };
    let mut w = Writer::default();
    let mut tx = sink.pool.begin().await?;
    for ((category, version), batches) in &groups {
        let schema = sink.schema(category, *version).await?;
        let rows: Vec<Vec<Row>> = batches
            .iter()
            .map(|(_, b)| b.records.iter().map(Row::from).collect())
            .collect();
        let parts: Vec<(Origin, &[Row])> = batches
            .iter()
            .zip(&rows)
            .map(|((seq, b), r)| {
                let origin = Origin {
                    message: Some((sink.epoch, *seq)),
                    source: b.source.as_deref(),
                };
                (origin, r.as_slice())
            })
            .collect();
        w.records(&mut tx, &schema, &parts).await?;
    }
    for (seq, m) in messages {
        match m {
            Decoded::Data(_) => {}
            Decoded::Dead(d) => {
                w.dead_letters(&mut tx, message(*seq), &d.category, &d.letters)
                    .await?
            }
            Decoded::Bad(_) => w.unreadable(message(*seq)),
        }
    }
    let out = w.finish(&mut tx).await?;
    tx.commit().await?;
    Ok(out)
}

/// Writes messages whose transaction failed on its data (a value or row the database
/// would not take): each message in its own transaction and each record under its own
/// savepoint ([`Writer::records_each`]). A record the database refuses becomes a dead
/// letter carrying the database's reason; the rest of its message is stored and
/// ledgered as usual, so one bad record never blocks the stream. An outage or a
/// conflict met on the way is returned, and the caller retries the whole fetch.
pub async fn write_isolated(
    sink: &Sink<'_>,
    messages: &[(u64, Decoded)],
) -> Result<Written, sqlx::Error> {
    let mut out = Written::default();
    for (seq, m) in messages {
        let Decoded::Data(b) = m else {
            let one = [(*seq, m.clone())];
            let w = write(sink, &one).await?;
            out.new_rows += w.new_rows;
            continue;
        };
        let schema = sink.schema(&b.category, b.schema_version).await?;
        let mut refused: Vec<(usize, String)> = vec![];
        let mut rows = vec![];
        for (i, r) in b.records.iter().enumerate() {
            let t = std::iter::once(r.ts);
            match sink.ensure_partitions(&b.category, t).await {
                Ok(()) => rows.push((i, Row::from(r))),
                Err(e) if crate::db::is_about_the_data(&e) => refused.push((i, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        let mut tx = sink.pool.begin().await?;
        let mut w = Writer::default();
        let reached: Vec<Row> = rows.iter().map(|(_, r)| *r).collect();
        for (j, e) in w
            .records_each(
                &mut tx,
                &schema,
                Origin {
                    message: Some((sink.epoch, *seq)),
                    source: b.source.as_deref(),
                },
                &reached,
            )
            .await?
        {
            refused.push((rows[j].0, e.to_string()));
        }
        let letters: Vec<DeadLetter> = refused
            .iter()
            .map(|(i, why)| {
                let r = &b.records[*i];
                tracing::error!(category = %b.category, seq, index = i, "the database refused a validated record (kept as a dead letter): {why}");
                let raw = record_json(&r.target, r.ts, r.values.clone().into_iter().collect());
                DeadLetter {
                    id: DeadLetter::id_for(&b.category, STORE_SOURCE, &raw),
                    category: b.category.clone(),
                    source: STORE_SOURCE.into(),
                    position: format!("data stream seq {seq}, record {i}"),
                    raw,
                    reasons: vec![crate::model::schema::Problem {
                        field: None,
                        reason: format!("the database refused it: {why}"),
                    }],
                    schema_version: b.schema_version,
                }
            })
            .collect();
        // Refused records are dead letters, not records of this batch.
        crate::db::dead_letters::insert(&mut tx, &letters).await?;
        let w = w.finish(&mut tx).await?;
        tx.commit().await?;
        out.new_rows += w.new_rows;
        out.alerts += w.alerts;
        out.live.extend(w.live);
    }
    Ok(out)
}

/// The `source` of dead letters made by the data-consumer (records the database
/// refused after they had passed validation).
pub const STORE_SOURCE: &str = "store";

/// Messages per transaction at most (a message holds up to 1 000 records).
const BATCH: usize = 50;

/// How long a transaction waits for more messages after its first one. Short: under
/// load the messages that arrived during the previous transaction are already in the
/// pull buffer and fill the next one without waiting; when records trickle in, every
/// millisecond here is a millisecond of publish → queryable latency.
const GATHER: Duration = Duration::from_millis(5);

/// Between tries of a transaction that met a deadlock or serialization failure.
const CONFLICT: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(20), Duration::from_millis(500));

fn retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40P01" | "40001")))
}

/// The port of this instance's `GET /metrics`: `ports.data_consumer` for
/// `data-consumer@1`, one more for each next instance (`TMIDB_UNIT` names it).
fn metrics_port(cfg: &Config) -> Option<u16> {
    let unit = std::env::var("TMIDB_UNIT").unwrap_or_default();
    let instance: u16 = unit
        .rsplit_once('@')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1);
    cfg.ports
        .get("data_consumer")?
        .checked_add(instance.checked_sub(1)?)
}

/// Runs a data-consumer of `home` until SIGTERM.
pub async fn run(home: &std::path::Path) -> Result<(), crate::service::StartError> {
    let cfg = Config::load(home)?;
    let pool = crate::db::connect(&cfg, 4).await?;
    let (_client, js, mut stream) = crate::pipeline::connect(&cfg, "data-consumer").await?;
    let consumer = crate::pipeline::consumer(&stream, cfg.ingest_ack_wait).await?;
    let epoch = crate::pipeline::stream_epoch(&mut stream).await?;
    crate::integrity::mark_ledger_start(&pool, &stream, &epoch).await;
    let storage = crate::db::storage(&pool).await;
    let schemas = Arc::new(SchemaCache::default());
    let partitions = crate::db::categories::PartitionCache::default();
    let (follower, follow_cfg) = (schemas.clone(), cfg.clone());
    tokio::spawn(async move { follower.follow(&follow_cfg).await });
    let sink = Sink {
        pool: &pool,
        storage,
        schemas: &schemas,
        partitions: &partitions,
        epoch: &epoch,
    };
    let nudge = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(alert_loop(pool.clone(), js.clone(), nudge.clone()));
    tokio::spawn(reconcile_loop(
        pool.clone(),
        js.clone(),
        cfg.ingest_reconcile_interval,
        cfg.ingest_max_pending_age,
    ));
    if let Some(port) = metrics_port(&cfg) {
        let app = poem::Route::new().at(
            "/metrics",
            crate::metrics::endpoint(pool.clone(), Some(js.clone())),
        );
        // Metrics are not worth failing the writer for: a port in use is logged.
        let listener = poem::listener::TcpListener::bind((cfg.listen_address, port));
        tokio::spawn(async move {
            if let Err(e) = poem::Server::new(listener).run(app).await {
                tracing::warn!(port, "metrics not served: {e}");
            }
        });
    }
    crate::service::notify("READY=1\nSTATUS=consuming");
    tracing::info!("data-consumer pulling from {}", crate::pipeline::CONSUMER);
    let mut stop = std::pin::pin!(crate::service::shutdown_signal());
    let mut orphans = Orphans::default();
    let mut orphan_check = tokio::time::interval(ORPHAN_CHECK);
    orphan_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A continuous pull stream, not fetch-and-expire: messages handed to an expired fetch
    // wait for ack_wait before redelivery, which stalled writes by 30 s.
    // Pull no more than one transaction ahead: a message waiting in this instance's
    // buffer is one no other instance can take, and is redelivered after ack_wait.
    let pull = || crate::pipeline::pull(&consumer, BATCH);
    let mut incoming = pull()
        .await
        .map_err(|e| crate::pipeline::PipelineError::JetStream(e.to_string()))?;
    loop {
        let first = tokio::select! {
            _ = &mut stop => break,
            _ = orphan_check.tick() => {
                orphans.rescue(&sink, &stream).await;
                continue;
            }
            m = incoming.next() => m,
        };
        let mut taken = vec![];
        match first {
            Some(Ok(m)) => taken.push(m),
            other => {
                // An error (missed heartbeats after a server died, a consumer leader
                // change on a cluster, no responders during an election) or the end of
                // the stream: the pull requests behind it may be gone with their server,
                // so a fresh stream, not a retry on this one, is what gets messages again.
                match other {
                    Some(Err(e)) => tracing::warn!("pull failed: {e}; reopening the pull stream"),
                    _ => tracing::warn!("pull stream ended; reopening"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                match pull().await {
                    Ok(m) => incoming = m,
                    Err(e) => tracing::warn!("cannot reopen the pull stream: {e}"),
                }
                continue;
            }
        }
        // Whatever else arrives within GATHER of the first, up to BATCH messages per
        // transaction: full transactions under load, a short wait when it trickles.
        let deadline = tokio::time::Instant::now() + GATHER;
        while taken.len() < BATCH {
            match tokio::time::timeout_at(deadline, incoming.next()).await {
                Ok(Some(Ok(m))) => taken.push(m),
                Ok(Some(Err(e))) => tracing::warn!("message error: {e}"),
                _ => break,
            }
        }
        let decoded: Vec<(u64, Decoded)> = taken
            .iter()
            .map(|m| {
                let info = m.info().ok();
                if info.as_ref().is_some_and(|i| i.delivered > 1) {
                    crate::metrics::get().redelivered.inc();
                }
                let seq = info.map(|i| i.stream_sequence).unwrap_or(0);
                (seq, decode(&m.subject, &m.payload))
            })
            .collect();
        let began = std::time::Instant::now();
        let attempts = async {
            let mut conflicts = CONFLICT.retry();
            let mut attempt = 0;
            loop {
                attempt += 1;
                match write(&sink, &decoded).await {
                    Err(e) if retryable(&e) && attempt < 5 => {
                        tracing::debug!("write conflict, retrying: {e}");
                        conflicts.wait().await;
                    }
                    Err(e) if crate::db::is_about_the_data(&e) => {
                        tracing::warn!(
                            messages = decoded.len(),
                            "a batch was refused for its data ({e}); storing record by record"
                        );
                        break write_isolated(&sink, &decoded).await;
                    }
                    other => break other,
                }
            }
        };
        let result = crate::pipeline::in_progress(&taken, cfg.ingest_ack_wait, attempts).await;
        match result {
            Ok(w) => {
                let m = crate::metrics::get();
                m.commit
                    .get_or_create(&vec![])
                    .observe(began.elapsed().as_secs_f64());
                for c in &w.live {
                    let l = vec![("category", c.category.clone())];
                    m.stored.get_or_create(&l).inc_by(c.records.len() as u64);
                }
                for (m, (seq, d)) in taken.iter().zip(&decoded) {
                    let ack = if let Decoded::Bad(why) = d {
                        tracing::error!(subject = %m.subject, seq, "undecodable message dropped (recorded in the ledger): {why}");
                        m.ack_with(async_nats::jetstream::AckKind::Term).await
                    } else {
                        m.ack().await
                    };
                    if let Err(e) = ack {
                        tracing::warn!(
                            "ack failed (the batch will be redelivered and skipped): {e}"
                        );
                    }
                }
                if w.alerts > 0 {
                    nudge.notify_one();
                }
                let live = w.live.into_iter().map(|c| {
                    let seq = c.seq.unwrap_or_default();
                    (c.category, format!("live-{epoch}-{seq}"), c.records)
                });
                crate::pipeline::publish_live(&js, live).await;
                tracing::debug!(messages = taken.len(), new = w.new_rows, "batch committed");
            }
            Err(e) => {
                // Redelivered soon (not after ack_wait); back off meanwhile.
                tracing::error!(messages = taken.len(), "write failed, will retry: {e}");
                for m in &taken {
                    let _ = m
                        .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                            Duration::from_secs(1),
                        )))
                        .await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!("data-consumer stopping");
    Ok(())
}

/// How often a data-consumer looks for messages JetStream will not deliver again.
const ORPHAN_CHECK: Duration = Duration::from_secs(5);

/// Messages left in the work-queue stream at or below the writers' ack floor: JetStream
/// will never deliver them again. In a work queue an acknowledged message is removed,
/// so one that is still there was either stored and its removal lost, or never stored
/// because the consumer's state lost it (seen with nats-server 2.9 after a kill -9:
/// restored consumer state ahead of the stream, nats-server#4736). Either way the
/// data-consumer fetches it by sequence, writes it through the same [`write`] (the
/// ledger and content ids make a second write of a stored message add nothing) and
/// deletes it from the stream.
#[derive(Default)]
struct Orphans {
    /// The ack floor at the previous check: a message at or below it has had a whole
    /// check interval for its removal, so an ack on its way is not raced.
    floor: Option<u64>,
}

impl Orphans {
    /// Checks once; stores up to [`BATCH`] orphans.
    async fn rescue(&mut self, sink: &Sink<'_>, stream: &async_nats::jetstream::stream::Stream) {
        let floor = match stream.consumer_info(crate::pipeline::CONSUMER).await {
            Ok(c) => c.ack_floor.stream_sequence,
            Err(e) => {
                tracing::debug!("cannot look for messages left behind: {e}");
                return;
            }
        };
        let Some(settled) = self.floor.replace(floor) else {
            return;
        };
        for _ in 0..BATCH {
            let first = match stream.get_info().await {
                Ok(i) if i.state.messages > 0 => i.state.first_sequence,
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!("cannot look for messages left behind: {e}");
                    return;
                }
            };
            if first > settled.min(floor) {
                return;
            }
            if let Err(e) = store_orphan(sink, stream, first).await {
                tracing::warn!(
                    seq = first,
                    "a message JetStream left behind is not stored yet: {e}"
                );
                return;
            }
        }
    }
}

/// Writes message `seq` from the stream (as a redelivery would have) and deletes it.
async fn store_orphan(
    sink: &Sink<'_>,
    stream: &async_nats::jetstream::stream::Stream,
    seq: u64,
) -> Result<(), async_nats::Error> {
    let m = stream.get_raw_message(seq).await?;
    let decoded = [(seq, decode(&m.subject, &m.payload))];
    let w = match write(sink, &decoded).await {
        Err(e) if crate::db::is_about_the_data(&e) => write_isolated(sink, &decoded).await,
        other => other,
    }?;
    stream.delete_message(seq).await?;
    tracing::warn!(
        seq,
        new_rows = w.new_rows,
        "stored a message JetStream had left in the stream below the writers' ack floor (it would never have been delivered again)"
    );
    Ok(())
}

/// Absence checks and alert delivery: every second, and at once after a commit that
/// queued notifications.
async fn alert_loop(
    pool: sqlx::PgPool,
    js: async_nats::jetstream::Context,
    nudge: Arc<tokio::sync::Notify>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), nudge.notified()).await;
        if let Err(e) = crate::db::alerts::check_absence(&pool).await {
            tracing::warn!("absence check failed: {e}");
        }
        loop {
            match crate::alerts::deliver(&pool, &js, &http).await {
                Ok(20) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("alert delivery failed: {e}");
                    break;
                }
            }
        }
    }
}

async fn reconcile_loop(
    pool: sqlx::PgPool,
    js: async_nats::jetstream::Context,
    every: Duration,
    max_pending_age: Duration,
) {
    const LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('tmidb:integrity'))";
    const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext('tmidb:integrity'))";
    loop {
        tokio::time::sleep(every).await;
        // Every instance runs this loop, one of them at a time: an instance that finds
        // another one reconciling, or a report younger than half the interval, skips
        // its turn. The lock is the session's: it goes with a process that dies.
        let Ok(mut conn) = pool.acquire().await else {
            continue;
        };
        let locked: bool = sqlx::query_scalar(LOCK)
            .fetch_one(&mut *conn)
            .await
            .unwrap_or(false);
        if !locked {
            continue;
        }
        let recent = matches!(
            crate::integrity::last(&pool).await,
            Ok(Some(last)) if (chrono::Utc::now() - last.checked_at)
                .to_std()
                .is_ok_and(|age| age < every / 2)
        );
        if !recent {
            let pace = crate::integrity::Pace::Background;
            match crate::integrity::reconcile(&pool, Some(&js), max_pending_age, pace).await {
                Ok(r) => crate::integrity::log(&r),
                Err(e) => tracing::warn!("integrity reconciliation failed: {e}"),
            }
        }
        let _ = sqlx::query(UNLOCK).execute(&mut *conn).await;
    }
}
