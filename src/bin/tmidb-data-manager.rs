//! `tmidb-data-manager`: thin main over [`tmidb::ingest::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The tmiDB data-manager (a notify unit: READY=1 once connected).
#[derive(Debug, Parser)]
#[command(name = "tmidb-data-manager", version, about)]
struct Args {
    /// The tmiDB home (tmidb.toml, secrets/).
    #[arg(long, env = "TMIDB_HOME", default_value = tmidb::cli::DEFAULT_HOME)]
    home: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let home = tmidb::config::absolute(&args.home);
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
    match rt.block_on(tmidb::ingest::run(&home)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tmidb-data-manager: {e}");
            ExitCode::FAILURE
        }
    }
}
