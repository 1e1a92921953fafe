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
    let home = tmidb::config::absolute(&Args::parse().home);
    tmidb::service::main("tmidb-data-manager", async move {
        tmidb::ingest::run(&home).await
    })
}
