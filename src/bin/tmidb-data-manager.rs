//! `tmidb-data-manager`: thin main over [`tmidb::ingest::run`].

use std::process::ExitCode;

use clap::Parser;

/// The tmiDB data-manager (a notify unit: READY=1 once connected).
#[derive(Debug, Parser)]
#[command(name = "tmidb-data-manager", version)]
struct Args {
    #[command(flatten)]
    home: tmidb::service::HomeArg,
}

fn main() -> ExitCode {
    let home = Args::parse().home.path();
    tmidb::service::main("tmidb-data-manager", async move {
        tmidb::ingest::run(&home).await
    })
}
