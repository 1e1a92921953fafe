//! Prometheus metrics of a service process: the families its code records into
//! ([`get`]), the HTTP middleware ([`track_http`]), and the text exposition
//! ([`render`], served as `GET /metrics`).
//!
//! Every metric is a family: one registered for all services, a series appearing only
//! once something is recorded, so each service shows what it does and the rest as
//! empty families. Labels are bounded: a category, a source name, a route's
//! `operationId`, a status code; never a record id or a raw path. Values that are
//! states rather than events (JetStream backlog, consumer lag, pool use) are gauges
//! the service sets just before rendering. The supervisor's own metrics come from
//! its status snapshot ([`crate::supervisor`]), through the same encoder.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A series' labels.
pub type Labels = Vec<(&'static str, String)>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The families a service records into.
pub struct Metrics {
    /// `tmidb_http_request_duration_seconds{route,status}`.
    pub http: Histograms,
    /// `tmidb_ingest_records_total{category,source,outcome}`: records accepted
    /// (published to JetStream) or rejected (dead letters) by the data-manager.
    pub ingest: Family<Labels, Counter>,
    /// `tmidb_stored_records_total{category}`: new rows committed by the
    /// data-consumer (a redelivered record is not counted twice).
    pub stored: Family<Labels, Counter>,
    /// `tmidb_redelivered_messages_total`: messages a data-consumer took that JetStream
    /// had delivered before (an ack lost with a server, a consumer killed mid-batch, a
    /// write that outlasted `ingest.ack_wait`).
    pub redelivered: Counter,
    /// `tmidb_batch_commit_duration_seconds`: one data-consumer transaction.
    pub commit: Histograms,
    /// `tmidb_jetstream_backlog_messages{stream}`: messages not yet handled.
    pub backlog: Family<Labels, Gauge>,
    /// `tmidb_jetstream_backlog_bytes{stream}`.
    pub backlog_bytes: Family<Labels, Gauge>,
    /// `tmidb_consumer_pending_messages{consumer,state}`: `undelivered` (lag) and
    /// `unacknowledged` (delivered, not yet committed).
    pub consumer: Family<Labels, Gauge>,
    /// `tmidb_db_pool_connections{state}`: `busy`, `idle`, `max`.
    pub pool: Family<Labels, Gauge>,
    registry: Mutex<Registry>,
}

fn latency() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The process's metrics (registered on first use).
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = Metrics {
            http: Family::new_with_constructor(latency),
            ingest: Family::default(),
            stored: Family::default(),
            redelivered: Counter::default(),
            commit: Family::new_with_constructor(latency),
            backlog: Family::default(),
            backlog_bytes: Family::default(),
            consumer: Family::default(),
            pool: Family::default(),
            registry: Mutex::new(Registry::with_prefix("tmidb")),
        };
        {
            let mut r = m.registry.lock().expect("lock");
            r.register(
                "http_request_duration_seconds",
                "HTTP requests by route (operationId, or console) and status",
                m.http.clone(),
            );
            r.register(
                "ingest_records",
                "Records taken by the data-manager by category, source and outcome (accepted, rejected)",
                m.ingest.clone(),
            );
            r.register(
                "stored_records",
                "New rows committed by the data-consumer, by category",
                m.stored.clone(),
            );
            r.register(
                "redelivered_messages",
                "Messages a data-consumer took that JetStream had delivered before (an ack lost, a consumer killed mid-batch, a write longer than ingest.ack_wait)",
                m.redelivered.clone(),
            );
            r.register(
                "batch_commit_duration_seconds",
                "One data-consumer transaction (a fetch of batches), from its start to its commit",
                m.commit.clone(),
            );
            r.register(
                "jetstream_backlog_messages",
                "Messages in a pipeline work-queue stream not yet handled",
                m.backlog.clone(),
            );
            r.register(
                "jetstream_backlog_bytes",
                "Bytes in a pipeline work-queue stream not yet handled",
                m.backlog_bytes.clone(),
            );
            r.register(
                "consumer_pending_messages",
                "A durable consumer's messages not yet delivered (lag) and delivered but not acknowledged",
                m.consumer.clone(),
            );
            r.register(
                "db_pool_connections",
                "PostgreSQL connections of this process: busy, idle, and the maximum",
                m.pool.clone(),
            );
        }
        m
    })
}

/// The text exposition of every family.
pub fn render() -> String {
    let m = get();
    let mut out = String::new();
    encode(&mut out, &m.registry.lock().expect("lock")).expect("writing to a String");
    out
}

/// Sets the pool gauges from `pool`.
pub fn observe_pool(pool: &sqlx::PgPool) {
    let m = get();
    let (size, idle) = (pool.size() as i64, pool.num_idle() as i64);
    let set = |state: &str, v: i64| {
        m.pool
            .get_or_create(&vec![("state", state.to_string())])
            .set(v);
    };
    set("busy", size - idle);
    set("idle", idle);
    set("max", pool.options().get_max_connections() as i64);
}

/// Sets the backlog of `stream` and the lag of its consumer `consumer`.
pub async fn observe_jetstream(js: &async_nats::jetstream::Context, stream: &str, consumer: &str) {
    let m = get();
    let Ok(mut s) = js.get_stream(stream).await else {
        return;
    };
    if let Ok(info) = s.info().await {
        let l = vec![("stream", stream.to_string())];
        m.backlog.get_or_create(&l).set(info.state.messages as i64);
        m.backlog_bytes
            .get_or_create(&l)
            .set(info.state.bytes as i64);
    }
    let c: Result<async_nats::jetstream::consumer::PullConsumer, _> =
        s.get_consumer(consumer).await;
    if let Ok(mut c) = c
        && let Ok(info) = c.info().await
    {
        let set = |state: &str, v: usize| {
            let l = vec![("consumer", consumer.to_string()), ("state", state.into())];
            m.consumer.get_or_create(&l).set(v as i64);
        };
        set("undelivered", info.num_pending as usize);
        set("unacknowledged", info.num_ack_pending);
    }
}

/// Counts records the data-manager took: `accepted` published, `rejected` dead letters.
pub fn count_ingest(category: &str, source: &str, accepted: usize, rejected: usize) {
    let m = get();
    for (outcome, n) in [("accepted", accepted), ("rejected", rejected)] {
        if n > 0 {
            let l = vec![
                ("category", category.to_string()),
                ("source", source.to_string()),
                ("outcome", outcome.to_string()),
            ];
            m.ingest.get_or_create(&l).inc_by(n as u64);
        }
    }
}

/// Poem middleware (`.around(track_http)`): times each request by route and status.
pub async fn track_http<E: poem::Endpoint>(
    ep: std::sync::Arc<E>,
    req: poem::Request,
) -> poem::Result<poem::Response> {
    let start = Instant::now();
    let fallback = if req.uri().path().starts_with("/api/") {
        "api"
    } else {
        "console"
    };
    let res = ep.call(req).await.map(poem::IntoResponse::into_response);
    let (status, op) = match &res {
        Ok(r) => (r.status(), r.data::<poem_openapi::OperationId>().copied()),
        Err(e) => (e.status(), e.data::<poem_openapi::OperationId>().copied()),
    };
    let route = op.map(|o| o.0).unwrap_or(fallback);
    let l = vec![
        ("route", route.to_string()),
        ("status", status.as_u16().to_string()),
    ];
    get()
        .http
        .get_or_create(&l)
        .observe(start.elapsed().as_secs_f64());
    res
}

/// The `GET /metrics` answer for `text`.
pub fn response(text: String) -> poem::Response {
    poem::Response::builder()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

/// A service's `GET /metrics`: the pool gauges of `pool`, and with `jetstream` the
/// backlog of the data stream and the lag of the writers' consumer, set at each scrape.
pub fn endpoint(
    pool: sqlx::PgPool,
    jetstream: Option<async_nats::jetstream::Context>,
) -> impl poem::Endpoint<Output = poem::Response> {
    poem::endpoint::make(move |_| {
        let (pool, jetstream) = (pool.clone(), jetstream.clone());
        async move {
            observe_pool(&pool);
            if let Some(js) = &jetstream {
                use crate::pipeline::{CONSUMER, STREAM};
                observe_jetstream(js, STREAM, CONSUMER).await;
            }
            response(render())
        }
    })
}
