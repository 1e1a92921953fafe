//! What the data-manager and the data-consumer share: the JetStream stream and consumer
//! they meet on, and the message format between them.
//!
//! One message carries one validated batch of one category, all records already given
//! their content id; its `Nats-Msg-Id` is derived from that content, so a retried
//! publish is dropped by JetStream's duplicate window, and a redelivered message is
//! dropped by the consumer's `ON CONFLICT DO NOTHING`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Config;

/// Stream holding validated records.
pub const STREAM: &str = "TMIDB_DATA";
/// Subject prefix: `tmidb.data.{category}`.
pub const SUBJECT_PREFIX: &str = "tmidb.data.";
/// The durable pull consumer every data-consumer instance shares.
pub const CONSUMER: &str = "tmidb-writer";

/// Most records one message carries (larger pushes become several messages), which
/// bounds what a data-consumer holds per fetch.
pub const MAX_RECORDS_PER_MESSAGE: usize = 1000;

/// One validated record on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Content id (unique per category).
    pub id: uuid::Uuid,
    /// Target.
    pub target: String,
    /// Time.
    pub ts: DateTime<Utc>,
    /// Field values.
    pub values: Map<String, Value>,
}

/// One message: a batch of one category, validated against `schema_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Category.
    pub category: String,
    /// Schema version the records were validated against.
    pub schema_version: i32,
    /// The records.
    pub records: Vec<WireRecord>,
}

impl Batch {
    /// `Nats-Msg-Id`: a digest of the category, version and record ids.
    pub fn msg_id(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.category.as_bytes());
        h.update(self.schema_version.to_le_bytes());
        for r in &self.records {
            h.update(r.id.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// Why the pipeline could not reach NATS.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Connecting failed.
    #[error("NATS at 127.0.0.1:{port}: {message}")]
    Connect {
        /// Port.
        port: u16,
        /// Cause.
        message: String,
    },
    /// A JetStream call failed.
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// Connects to the stack's NATS and makes sure the stream exists.
pub async fn connect(
    cfg: &Config,
) -> Result<(async_nats::Client, jetstream::Context, stream::Stream), PipelineError> {
    let port = cfg.ports["nats"];
    let client = async_nats::ConnectOptions::new()
        .name("tmidb")
        .connect(format!("127.0.0.1:{port}"))
        .await
        .map_err(|e| PipelineError::Connect {
            port,
            message: e.to_string(),
        })?;
    let js = jetstream::new(client.clone());
    // A work queue: acknowledged batches leave the stream, so `max_bytes` bounds the
    // backlog not yet written, and a full backlog refuses new batches (discard new)
    // instead of dropping old ones.
    js.create_or_update_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT_PREFIX}>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_bytes: cfg.ingest_max_backlog_bytes,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| PipelineError::JetStream(e.to_string()))?;
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| PipelineError::JetStream(e.to_string()))?;
    Ok((client, js, stream))
}

/// The shared durable pull consumer (created if missing).
pub async fn consumer(stream: &stream::Stream) -> Result<consumer::PullConsumer, PipelineError> {
    stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| PipelineError::JetStream(e.to_string()))
}
