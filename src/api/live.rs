//! Following a category's live records and alerts (the `TMIDB_EVENTS` stream) for the
//! SSE route: an ordered consumer filtered on `tmidb.live.{category}`, starting after the
//! sequence the client saw last (or at new events).

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem_openapi::Object;
use serde_json::Value;

use crate::model::wire::Event;
use crate::pipeline::EVENTS_STREAM;
use crate::web::error::ApiError;

/// One event sent to a follower.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct LiveEvent {
    /// Its sequence in the event stream (the SSE id; resume after it).
    pub seq: u64,
    /// `records` or `alert` (the SSE event type).
    pub kind: String,
    /// The event: `{"kind": "records", "category", "records": [...]}` or an alert
    /// notification with `"kind": "alert"`.
    pub data: Value,
}

/// The events of `category` after sequence `after` (None: only new ones).
pub async fn follow(
    js: &async_nats::jetstream::Context,
    category: &str,
    after: Option<u64>,
) -> Result<BoxStream<'static, LiveEvent>, ApiError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    let unavailable = |e: &dyn std::fmt::Display| ApiError::unavailable(format!("NATS: {e}"));
    let stream = js
        .get_stream(EVENTS_STREAM)
        .await
        .map_err(|e| unavailable(&e))?;
    let deliver_policy = match after {
        Some(seq) => DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
        None => DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}{category}", crate::pipeline::LIVE_PREFIX),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    Ok(messages
        .filter_map(|m| async move {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("live stream: {e}");
                    return None;
                }
            };
            let seq = m.info().ok()?.stream_sequence;
            let event: Event = serde_json::from_slice(&m.payload).ok()?;
            let kind = match &event {
                Event::Records { .. } => "records",
                Event::Alert(_) => "alert",
            };
            Some(LiveEvent {
                seq,
                kind: kind.into(),
                data: serde_json::to_value(&event).ok()?,
            })
        })
        .boxed())
}
