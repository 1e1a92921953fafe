//! The `nats` source: the `tmidb-manager` consumer of `TMIDB_INGEST`. A message is a
//! JSON object, a JSON array of them, or NDJSON ([`Format::Sniff`]); it is acknowledged
//! once its records (and dead letters) are in `TMIDB_DATA`, so nothing is lost if the
//! data-manager dies in between.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::patiently;
use crate::db::categories::CategoryError;
use crate::ingest::payload::Format;
use crate::ingest::{Manager, PushError};
use crate::model::source::SourceKind;
use crate::model::transform::Transform;

/// Runs the `tmidb-manager` consumer of raw NATS records until the process ends.
pub async fn run(m: Arc<Manager>, consumer: async_nats::jetstream::consumer::PullConsumer) {
    loop {
        // Messages are handled one at a time: pull only a few ahead (a raw message can
        // be megabytes; the default of 200 ahead cost 100 MiB of buffers).
        let mut msgs = match crate::pipeline::pull(&consumer, 8).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot pull raw NATS records: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(msg) = msgs.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    // Its pull requests may have died with a server: open a fresh stream.
                    tracing::warn!("raw NATS record pull failed: {e}; reopening");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            let category = msg
                .subject
                .strip_prefix(crate::pipeline::INGEST_PREFIX)
                .unwrap_or("")
                .to_string();
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let label = format!("stream sequence {seq}");
            let result = match m.implicit_source(&category, SourceKind::Nats).await {
                Ok(s) => {
                    let (name, transform) = s
                        .map(|s| (s.name, s.transform))
                        .unwrap_or_else(|| ("nats".into(), Transform::default()));
                    let take = patiently(&name, || {
                        m.take(
                            &category,
                            &name,
                            &transform,
                            Format::Sniff,
                            &msg.payload,
                            &label,
                        )
                    });
                    let taken = std::slice::from_ref(&msg);
                    crate::pipeline::in_progress(taken, m.cfg.ingest_ack_wait, take).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => {
                    if !r.dead.is_empty() {
                        tracing::warn!(
                            category,
                            seq,
                            rejected = r.dead.len(),
                            "NATS records rejected (see the dead letters)"
                        );
                    }
                    let _ = msg.ack().await;
                }
                Err(PushError::Category(CategoryError::NotFound(why))) => {
                    // No such category: nothing could ever take these records.
                    tracing::error!(subject = %msg.subject, seq, "raw NATS records dropped: {why}");
                    let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
                }
                Err(e) => {
                    tracing::warn!(category, seq, "raw NATS records not taken yet: {e}");
                    let _ = msg
                        .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                            Duration::from_secs(2),
                        )))
                        .await;
                }
            }
        }
    }
}
