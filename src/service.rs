//! What every tmiDB service binary does around its work: JSON logs through `tracing`
//! (the supervisor merges them as structured fields), a two-thread runtime, and an exit
//! code with the error on stderr; why a service could not start ([`StartError`]);
//! serving HTTP until SIGTERM ([`serve_http`]); telling the supervisor how it is doing
//! ([`notify()`]) and stopping gracefully ([`shutdown_signal`]).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

/// The `--home` option every service binary takes.
#[derive(Debug, clap::Args)]
pub struct HomeArg {
    /// The tmiDB home (tmidb.toml, secrets/) [default: ./tmidb-home; /var/lib/tmidb
    /// when only that exists].
    #[arg(long, env = "TMIDB_HOME", global = true)]
    pub home: Option<PathBuf>,
}

impl HomeArg {
    /// The home as an absolute path.
    pub fn path(&self) -> PathBuf {
        crate::config::home_or_default(self.home.as_deref())
    }
}

/// Runs a service's main future; `name` prefixes the error message.
pub fn main<F, E>(name: &str, work: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TMIDB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Tells the supervisor `state` (`READY=1`, `STATUS=…`, `STOPPING=1`), as sd_notify
/// does; nothing when not run by one.
pub fn notify(state: &str) {
    if let Err(e) = crate::supervisor::notify::notify_parent(state) {
        tracing::warn!("cannot tell the supervisor {state:?}: {e}");
    }
}

/// Resolves on SIGTERM or SIGINT (then tells the supervisor STOPPING=1).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    notify("STOPPING=1");
}

/// Why a service (api, data-manager, data-consumer) could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// tmidb.toml is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// PostgreSQL is unreachable.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// NATS is unreachable.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen {
        /// Port.
        port: u16,
        /// Cause.
        source: std::io::Error,
    },
}

/// Serves `app` on `address`:`port` (`[listen] address`) until SIGTERM or SIGINT
/// (requests in flight get 5 s), telling the supervisor `READY=1` and `status` once the
/// port is bound; `what` is logged as where it listens.
pub async fn serve_http(
    address: std::net::IpAddr,
    port: u16,
    app: impl poem::Endpoint + 'static,
    status: &str,
    what: &str,
) -> Result<(), StartError> {
    let acceptor =
        poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind((address, port)))
            .await
            .map_err(|source| StartError::Listen { port, source })?;
    tracing::info!(%address, port, "{what}");
    notify(&format!("READY=1\nSTATUS={status}"));
    poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            app,
            shutdown_signal(),
            Some(std::time::Duration::from_secs(5)),
        )
        .await
        .map_err(|source| StartError::Listen { port, source })
}
