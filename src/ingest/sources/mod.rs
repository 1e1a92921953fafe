//! Running sources inside the data-manager, one module per kind: [`nats`] (the
//! consumer of raw NATS records), [`file`](mod@file) (a watched directory), [`exec`] (a program's
//! output) and [`poll`] (`http_poll`, a URL fetched every interval). Each keeps its
//! input while the pipeline cannot take it ([`PushError::is_transient`]).
//!
//! [`supervise`] (re)starts the runners of enabled sources whenever a source changes
//! (NOTIFY `tmidb_sources`, with a full re-sync every minute as a safety net); schema
//! changes reach the [`Manager`]'s cache through its follower.

pub mod exec;
pub mod file;
pub mod nats;
pub mod poll;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Manager, PushError};
use crate::backoff::Backoff;
use crate::model::source::{ExecConfig, FileConfig, PollConfig, typed};
use crate::model::source::{Source, SourceKind};

/// How long a source holds its input while the pipeline is busy or full, or NATS or
/// PostgreSQL is away: that wait is the back-pressure.
const PATIENCE: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// Runs `attempt` until it succeeds or fails for good (not [`PushError::is_transient`]),
/// waiting [`PATIENCE`] between tries.
pub(super) async fn patiently<T, F>(
    source: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, PushError>
where
    F: std::future::Future<Output = Result<T, PushError>>,
{
    let mut retry = PATIENCE.retry();
    loop {
        match attempt().await {
            Err(e) if e.is_transient() => {
                tracing::debug!(source, "records not taken yet, retrying: {e}");
                retry.wait().await;
            }
            other => return other,
        }
    }
}

/// Keeps one runner per enabled `file` / `exec` / `http_poll` source, re-synced on
/// every source change.
pub async fn supervise(m: Arc<Manager>, mut listener: sqlx::postgres::PgListener) {
    // Per running source: its version (`updated_at`), name and task.
    let mut running: HashMap<Uuid, (DateTime<Utc>, String, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        match crate::db::sources::list(&m.pool).await {
            Ok(all) => {
                let wanted: Vec<&Source> = all
                    .iter()
                    .filter(|s| {
                        s.enabled
                            && matches!(
                                s.kind,
                                SourceKind::File | SourceKind::Exec | SourceKind::HttpPoll
                            )
                    })
                    .collect();
                let mut stopped = vec![];
                running.retain(|id, (at, name, task)| {
                    let keep = wanted.iter().any(|s| s.id == *id && s.updated_at == *at);
                    if !keep {
                        task.abort();
                        tracing::info!(source = %name, "source stopped: changed, disabled or removed");
                        stopped.push(*id);
                    }
                    keep
                });
                // Said before a changed source's new runner says `running`.
                for id in stopped {
                    report(&m, id, "stopped", "changed, disabled or removed").await;
                }
                for s in wanted {
                    if let std::collections::hash_map::Entry::Vacant(e) = running.entry(s.id) {
                        tracing::info!(source = %s.name, kind = s.kind.as_str(), category = %s.category, "source started");
                        e.insert((
                            s.updated_at,
                            s.name.clone(),
                            tokio::spawn(run_source(m.clone(), s.clone())),
                        ));
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read the sources: {e}"),
        }
        // Wait for a change (or a minute, as a safety net).
        match tokio::time::timeout(Duration::from_secs(60), listener.recv()).await {
            Ok(Ok(_)) => m.sources_changed(),
            Ok(Err(e)) => {
                tracing::warn!("source change listener: {e}; re-syncing");
                m.sources_changed();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => {}
        }
    }
}

/// Records what a source's runner is doing, for the console (a failure to record it
/// is only logged: it must not stop the source).
async fn report(m: &Manager, id: Uuid, state: &str, detail: &str) {
    if let Err(e) = crate::db::sources::set_status(&m.pool, id, state, detail).await {
        tracing::warn!("cannot record the status of source {id}: {e}");
    }
}

async fn run_source(m: Arc<Manager>, s: Source) {
    report(&m, s.id, "running", "").await;
    let outcome = match s.kind {
        SourceKind::File => match typed::<FileConfig>(&s.config) {
            Ok(c) => file::run(&m, &s, c).await,
            Err(e) => Err(format!("{e:?}")),
        },
        SourceKind::Exec => match typed::<ExecConfig>(&s.config) {
            Ok(c) => exec::run(&m, &s, c).await,
            Err(e) => Err(format!("{e:?}")),
        },
        SourceKind::HttpPoll => match typed::<PollConfig>(&s.config) {
            Ok(c) => poll::run(&m, &s, c).await,
            Err(e) => Err(format!("{e:?}")),
        },
        SourceKind::HttpPush | SourceKind::Nats => Ok(()),
    };
    match outcome {
        Err(e) => {
            tracing::error!(source = %s.name, "source stopped: {e}");
            report(&m, s.id, "failed", &e).await;
        }
        Ok(()) => report(&m, s.id, "stopped", "its input ended").await,
    }
}
