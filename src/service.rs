//! What every tmiDB service binary does around its work: JSON logs through `tracing`
//! (the supervisor merges them as structured fields), a two-thread runtime, and an exit
//! code with the error on stderr.

use std::future::Future;
use std::process::ExitCode;

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
