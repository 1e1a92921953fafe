//! What the data-manager, the data-consumer and the api share: the JetStream streams and
//! consumers they meet on, and the message formats between them.
//!
//! - `TMIDB_INGEST` (`tmidb.ingest.{category}`, work queue): raw records published by
//!   external systems; the data-manager's `tmidb-manager` consumer takes them.
//! - `TMIDB_DATA` (work queue): validated batches on `tmidb.data.{category}` and dead
//!   letters on `tmidb.dead.{category}`; the data-consumers' shared `tmidb-writer`
//!   consumer stores them.
//! - `TMIDB_EVENTS` (limits, 24 h): per category, records once committed and alert
//!   notifications (`tmidb.live.{category}`); the api's SSE route reads it, and an
//!   event's id is its stream sequence. (One subject per category: NATS 2.9 filters a
//!   consumer on one subject, and one sequence space makes resuming exact.)
//! - `TMIDB_ALERTS` (limits, 30 days): alert notifications on `tmidb.alerts.{category}`
//!   for external subscribers.
//!
//! One data message carries one validated batch of one category, all records already
//! given their content id; its `Nats-Msg-Id` is derived from that content, so a retried
//! publish is dropped by JetStream's duplicate window, and a redelivered message is
//! dropped by the consumer's `ON CONFLICT DO NOTHING`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use serde_json::Value;

use crate::config::Config;
use crate::model::wire::Event;

/// Stream holding validated records and dead letters.
pub const STREAM: &str = "TMIDB_DATA";
/// Subject prefix: `tmidb.data.{category}`.
pub const SUBJECT_PREFIX: &str = "tmidb.data.";
/// Subject prefix of dead letters: `tmidb.dead.{category}`.
pub const DEAD_PREFIX: &str = "tmidb.dead.";
/// The durable pull consumer every data-consumer instance shares.
pub const CONSUMER: &str = "tmidb-writer";
/// Stream holding raw records published on NATS by external systems.
pub const INGEST_STREAM: &str = "TMIDB_INGEST";
/// Subject prefix external systems publish on: `tmidb.ingest.{category}`.
pub const INGEST_PREFIX: &str = "tmidb.ingest.";
/// The data-manager's durable consumer of [`INGEST_STREAM`].
pub const INGEST_CONSUMER: &str = "tmidb-manager";
/// Stream of committed records and alerts per category (what SSE clients follow).
pub const EVENTS_STREAM: &str = "TMIDB_EVENTS";
/// Subject prefix of live events: `tmidb.live.{category}`.
pub const LIVE_PREFIX: &str = "tmidb.live.";
/// Stream of alert notifications, for external subscribers (30 days).
pub const ALERTS_STREAM: &str = "TMIDB_ALERTS";
/// Every stream of the pipeline.
pub const STREAMS: [&str; 4] = [INGEST_STREAM, STREAM, EVENTS_STREAM, ALERTS_STREAM];
/// Subject prefix of alert notifications: `tmidb.alerts.{category}`.
pub const ALERTS_PREFIX: &str = "tmidb.alerts.";

/// Most records one message carries (larger pushes become several messages), which
/// bounds what a data-consumer holds per fetch.
pub const MAX_RECORDS_PER_MESSAGE: usize = 1000;

/// Why the pipeline could not reach NATS.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Connecting failed.
    #[error("NATS at {servers}: {message}")]
    Connect {
        /// The servers tried, comma-separated.
        servers: String,
        /// Cause.
        message: String,
    },
    /// A JetStream call failed.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// The service's NATS password is not readable.
    #[error(
        "cannot read the NATS password {}: {message} (`tmidb-supervisor setup nats`, run by the nats-init unit, makes it)",
        path.display()
    )]
    Credentials {
        /// The password file.
        path: std::path::PathBuf,
        /// Cause.
        message: String,
    },
}

/// Connects to the stack's NATS servers (`[nats] servers`: all of them, so the client
/// moves to another when its server dies, noticed within two `ping_interval`s) as
/// `user` (one of [`crate::setup::NATS_SERVICES`], with its password from `secrets/`),
/// retrying for up to 10 s since NATS may be restarting, and makes sure every stream
/// exists with its current settings (`[nats] replicas`).
pub async fn connect(
    cfg: &Config,
    user: &str,
) -> Result<(async_nats::Client, jetstream::Context, stream::Stream), PipelineError> {
    let servers = &cfg.endpoints.nats_servers;
    let file = cfg.nats_password_file(user);
    let password = std::fs::read_to_string(&file).map_err(|e| PipelineError::Credentials {
        path: file.clone(),
        message: e.to_string(),
    })?;
    let addresses: Vec<async_nats::ServerAddr> = servers
        .iter()
        .filter_map(|s| format!("nats://{s}").parse().ok())
        .collect();
    let client =
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.trim().into())
            .name(format!("tmidb {user}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(cfg.endpoints.nats_ping_interval)
            // The cluster's own list (gossiped by the servers) is not needed: ours is
            // complete, and on loopback an advertised address could be another's.
            .ignore_discovered_servers()
            .connect(addresses.as_slice())
            .await
            .map_err(|e| PipelineError::Connect {
                servers: servers.join(","),
                message: e.to_string(),
            })?;
    let js = jetstream::new(client.clone());
    let js_err = |e: &dyn std::fmt::Display| PipelineError::JetStream(e.to_string());
    // Work queues: acknowledged messages leave the stream, so `max_bytes` bounds the
    // backlog not yet handled, and a full backlog refuses new messages (discard new)
    // instead of dropping old ones.
    let mut configs = vec![];
    for (name, subjects) in [
        (
            STREAM,
            vec![format!("{SUBJECT_PREFIX}>"), format!("{DEAD_PREFIX}>")],
        ),
        (INGEST_STREAM, vec![format!("{INGEST_PREFIX}>")]),
    ] {
        configs.push(stream::Config {
            name: name.into(),
            subjects,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_bytes: cfg.ingest_max_backlog_bytes,
            duplicate_window: Duration::from_secs(120),
            num_replicas: cfg.endpoints.nats_replicas,
            ..Default::default()
        });
    }
    for (name, prefix, days, bytes) in [
        (EVENTS_STREAM, LIVE_PREFIX, 1, 256 << 20),
        (ALERTS_STREAM, ALERTS_PREFIX, 30, 64 << 20),
    ] {
        configs.push(stream::Config {
            name: name.into(),
            subjects: vec![format!("{prefix}>")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: Duration::from_secs(days * 24 * 3600),
            max_bytes: bytes,
            duplicate_window: Duration::from_secs(120),
            num_replicas: cfg.endpoints.nats_replicas,
            ..Default::default()
        });
    }
    // On a cluster every change goes through the meta leader, which may be electing
    // (a node just started or died) or busy with the other services' identical
    // requests: retry for a minute rather than fail the service's start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for config in configs {
        let name = config.name.clone();
        loop {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                js.create_or_update_stream(config.clone()),
            )
            .await;
            let why = match r {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 10 s".to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(PipelineError::JetStream(format!("stream {name}: {why}")));
            }
            tracing::warn!(stream = %name, "cannot create or update the stream yet: {why}; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let stream = js.get_stream(STREAM).await.map_err(|e| js_err(&e))?;
    Ok((client, js, stream))
}

/// The identity of the data stream's current incarnation (`TMIDB_DATA@<created>`): the
/// ledger keys sequences by it, so a re-created stream (sequences restarting at 1) is
/// not mistaken for the old one.
pub async fn stream_epoch(stream: &mut stream::Stream) -> Result<String, PipelineError> {
    let info = stream
        .info()
        .await
        .map_err(|e| PipelineError::JetStream(e.to_string()))?;
    Ok(format!(
        "{STREAM}@{}",
        info.created.unix_timestamp_nanos() / 1000
    ))
}

/// Publishes and waits for JetStream's acknowledgement (with `Nats-Msg-Id`).
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: impl Into<bytes::Bytes>,
) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(subject, headers, payload.into())
        .await
}

/// How long a publish is retried through a leader election (a JetStream cluster elects
/// a new stream leader 4–9 s after losing one; meanwhile publishes see no responders or
/// time out).
pub const PUBLISH_RETRY_BUDGET: Duration = Duration::from_secs(20);

/// One message to publish: subject, `Nats-Msg-Id`, payload (shared, not copied, by
/// each attempt).
pub type Outgoing = (String, String, bytes::Bytes);

/// Publishes every message and waits for JetStream to acknowledge each; messages that
/// were not acknowledged are published again with the same `Nats-Msg-Id` (so the
/// duplicate window drops a second copy) for up to [`PUBLISH_RETRY_BUDGET`]. `Err` is
/// the last failure: `fatal` says whether retrying could not help (a stream at its
/// limits, a message too large).
pub async fn publish_all(
    js: &jetstream::Context,
    messages: &[Outgoing],
) -> Result<(), PublishFailure> {
    use jetstream::context::PublishErrorKind as K;
    let deadline = tokio::time::Instant::now() + PUBLISH_RETRY_BUDGET;
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut delay = Duration::from_millis(50);
    loop {
        let mut acks = Vec::with_capacity(pending.len());
        let mut failed = vec![];
        let mut last = None;
        for &i in &pending {
            let (subject, id, payload) = &messages[i];
            match publish(js, subject.clone(), id, payload.clone()).await {
                Ok(a) => acks.push((i, a)),
                Err(e) => {
                    failed.push(i);
                    last = Some(e);
                }
            }
        }
        for (i, ack) in acks {
            match tokio::time::timeout(Duration::from_secs(5), ack).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let fatal = matches!(e.kind(), K::MaxPayloadExceeded) || is_stream_full(&e);
                    if fatal {
                        return Err(PublishFailure {
                            error: e.to_string(),
                            full: is_stream_full(&e),
                            fatal,
                        });
                    }
                    failed.push(i);
                    last = Some(e);
                }
                Err(_) => {
                    failed.push(i);
                    last = Some(K::TimedOut.into());
                }
            }
        }
        let Some(e) = last else {
            return Ok(());
        };
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(PublishFailure {
                error: format!("{e} (retried for {} s)", PUBLISH_RETRY_BUDGET.as_secs()),
                full: false,
                fatal: false,
            });
        }
        tracing::warn!(
            messages = failed.len(),
            "JetStream did not take {} message(s), publishing them again: {e}",
            failed.len()
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        pending = failed;
    }
}

/// Why [`publish_all`] gave up.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PublishFailure {
    /// The last error.
    pub error: String,
    /// The stream is at its limits (a full backlog).
    pub full: bool,
    /// Retrying could not have helped.
    pub fatal: bool,
}

/// A stream at its limits: `maximum bytes exceeded`, JetStream's store-failed or
/// resources-exceeded codes.
fn is_stream_full(e: &jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|j| {
            matches!(
                j.error_code(),
                ErrorCode::STREAM_STORE_FAILED | ErrorCode::STORAGE_RESOURCES_EXCEEDED
            )
        })
}

/// Publishes committed records for live followers on `tmidb.live.{category}`: per
/// batch its category, a `Nats-Msg-Id` and the records as the api shows them. Best
/// effort: the records are stored already, and a batch published again after a crash
/// is dropped by the duplicate window.
pub async fn publish_live(
    js: &jetstream::Context,
    batches: impl IntoIterator<Item = (String, String, Vec<Value>)>,
) {
    let mut acks = vec![];
    for (category, msg_id, records) in batches {
        let subject = format!("{LIVE_PREFIX}{category}");
        let payload = serde_json::to_vec(&Event::Records { category, records }).expect("json");
        match publish(js, subject, &msg_id, payload).await {
            Ok(a) => acks.push(a),
            Err(e) => tracing::warn!("live records not published: {e}"),
        }
    }
    for a in acks {
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), a).await {
            tracing::warn!("live records not published: {e}");
        }
    }
}

/// The shared durable pull consumer of the writers (created if missing).
pub async fn consumer(
    stream: &stream::Stream,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, PipelineError> {
    durable(stream, CONSUMER, ack_wait, 20_000).await
}

/// The durable pull consumer `name` of `stream`, created if missing; an existing one
/// keeps its settings unless updated, so a changed `ack_wait` is applied to it.
async fn durable(
    stream: &stream::Stream,
    name: &str,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> Result<consumer::PullConsumer, PipelineError> {
    let c = stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| PipelineError::JetStream(e.to_string()))?;
    let mut config = c.cached_info().config.clone();
    if config.ack_wait != ack_wait {
        config.ack_wait = ack_wait;
        stream
            .update_consumer(config)
            .await
            .map_err(|e| PipelineError::JetStream(e.to_string()))?;
    }
    Ok(c)
}

/// Runs `work` on the messages `taken`, telling JetStream every third of `ack_wait`
/// that they are still being worked on, so that work longer than `ack_wait` (a lock, a
/// slow disk, a full backlog) is not redelivered to another worker meanwhile. `ack_wait`
/// can then be short, and a message lost with a server that died is delivered again
/// soon.
pub async fn in_progress<T>(
    taken: &[jetstream::Message],
    ack_wait: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let every = ack_wait / 3;
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => {
                for m in taken {
                    if let Err(e) = m.ack_with(jetstream::AckKind::Progress).await {
                        tracing::debug!("progress ack failed: {e}");
                    }
                }
            }
        }
    }
}

/// How long a pull request lives before the client renews it.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// The server's idle heartbeat on a pending pull. Two missed (the server holding the pull
/// request died, or a consumer leader moved) end the pull stream with an error, and its
/// reader opens a fresh one: without it, a pull lost with a killed server was noticed only
/// when it expired, and a cluster stopped storing for up to 30 s after its leader died.
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// A continuous pull stream of `consumer`, at most `batch` messages ahead, that ends with
/// an error within [`PULL_HEARTBEAT`] × 2 of losing its server.
pub async fn pull(
    consumer: &consumer::PullConsumer,
    batch: usize,
) -> Result<consumer::pull::Stream, consumer::StreamError> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
}

/// The data-manager's durable consumer of raw NATS records.
pub async fn ingest_consumer(
    js: &jetstream::Context,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, PipelineError> {
    let stream = js
        .get_stream(INGEST_STREAM)
        .await
        .map_err(|e| PipelineError::JetStream(e.to_string()))?;
    durable(&stream, INGEST_CONSUMER, ack_wait, 10_000).await
}
