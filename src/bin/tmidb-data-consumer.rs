//! `tmidb-data-consumer`: thin main over [`tmidb::consume::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The tmiDB data-consumer (a notify unit: READY=1 once connected).
#[derive(Debug, Parser)]
#[command(name = "tmidb-data-consumer", version, about)]
struct Args {
    /// The tmiDB home (tmidb.toml, secrets/).
    #[arg(long, env = "TMIDB_HOME", default_value = tmidb::cli::DEFAULT_HOME)]
    home: PathBuf,
}

fn main() -> ExitCode {
    let home = tmidb::config::absolute(&Args::parse().home);
    tmidb::service::main("tmidb-data-consumer", async move {
        tmidb::consume::run(&home).await
    })
}
