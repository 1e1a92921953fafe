//! `tmidb-data-consumer`: thin main over [`tmidb::consume::run`].

use std::process::ExitCode;

use clap::Parser;

/// The tmiDB data-consumer (a notify unit: READY=1 once connected).
#[derive(Debug, Parser)]
#[command(name = "tmidb-data-consumer", version)]
struct Args {
    #[command(flatten)]
    home: tmidb::service::HomeArg,
}

fn main() -> ExitCode {
    let home = Args::parse().home.path();
    tmidb::service::main("tmidb-data-consumer", async move {
        tmidb::consume::run(&home).await
    })
}
