//! The supervisor's `GET /metrics` (Prometheus text format) on `ports.supervisor`:
//! per unit instance its state, degraded flag, restarts, time to ready, and the log
//! lines it wrote and the sinks dropped. Rendered from the status snapshot the control
//! socket also answers from, so a scrape never waits for the supervisor loop.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::Snapshot;
use crate::control::protocol::State;
use crate::logs::LogHub;
use crate::metrics::Labels;

/// The text exposition of `snap` (and the hub's line counts).
pub fn render(snap: &Snapshot, hub: &LogHub) -> String {
    let mut r = Registry::with_prefix("tmidb");
    let state: Family<Labels, Gauge> = Family::default();
    let degraded: Family<Labels, Gauge> = Family::default();
    let restarts: Family<Labels, Counter> = Family::default();
    let ready: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    let lines: Family<Labels, Counter> = Family::default();
    let dropped: Family<Labels, Counter> = Family::default();
    for u in &snap.units {
        let unit = || vec![("unit", u.name.clone())];
        for s in State::ALL {
            let l = vec![("unit", u.name.clone()), ("state", s.as_str().to_string())];
            state.get_or_create(&l).set(i64::from(u.state == s));
        }
        degraded
            .get_or_create(&unit())
            .set(i64::from(u.degraded.is_some()));
        restarts
            .get_or_create(&unit())
            .inc_by(u64::from(u.restarts));
        if let Some(ms) = u.ready_ms {
            ready.get_or_create(&unit()).set(ms as f64 / 1000.0);
        }
        lines.get_or_create(&unit()).inc_by(hub.lines(&u.name));
        dropped.get_or_create(&unit()).inc_by(u.dropped);
    }
    lines
        .get_or_create(&vec![("unit", "supervisor".to_string())])
        .inc_by(hub.lines("supervisor"));
    r.register(
        "unit_state",
        "1 for the state each unit instance is in, 0 for the others",
        state,
    );
    r.register(
        "unit_degraded",
        "1 while an external unit's liveness probe fails",
        degraded,
    );
    r.register(
        "unit_restarts",
        "Automatic restarts since the supervisor (or an explicit start) started the unit",
        restarts,
    );
    r.register(
        "unit_ready_seconds",
        "How long the unit's current incarnation took from spawn to ready",
        ready,
    );
    r.register(
        "log_lines",
        "Log lines captured per unit instance since the supervisor started",
        lines,
    );
    r.register(
        "log_dropped_lines",
        "Log lines the unified sinks had to drop per unit instance (normally 0)",
        dropped,
    );
    let mut out = String::new();
    encode(&mut out, &r).expect("writing to a String");
    out
}

/// Serves `GET /metrics` on `address:port` until the task is aborted; a port that
/// cannot be bound is logged (metrics are not worth failing the supervisor for).
pub async fn serve(
    address: std::net::IpAddr,
    port: u16,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    hub: Arc<LogHub>,
) {
    let app = poem::Route::new().at(
        "/metrics",
        poem::endpoint::make_sync(move |_| {
            let snap = snapshot.borrow().clone();
            crate::metrics::response(render(&snap, &hub))
        }),
    );
    let listener = poem::listener::TcpListener::bind((address, port));
    if let Err(e) = poem::Server::new(listener).run(app).await {
        tracing::warn!(port, "supervisor metrics not served: {e}");
    }
}
