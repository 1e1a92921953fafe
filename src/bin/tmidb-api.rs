//! `tmidb-api`: thin main over [`tmidb::api`] and [`tmidb::db::migrate`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The tmiDB REST API service.
#[derive(Debug, Parser)]
#[command(name = "tmidb-api", version)]
struct Args {
    #[command(flatten)]
    home: tmidb::service::HomeArg,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the API (a notify unit: READY=1 once listening).
    Serve,
    /// Create the database and apply sql/ migrations (the migrate oneshot unit).
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let home = args.home.path();
    if let Cmd::Openapi = args.command {
        println!("{}", tmidb::api::spec_json());
        return ExitCode::SUCCESS;
    }
    tmidb::service::main("tmidb-api", async move {
        match args.command {
            Cmd::Serve => tmidb::api::serve(&home).await.map_err(|e| e.to_string()),
            Cmd::Migrate => {
                let cfg = tmidb::config::Config::load(&home).map_err(|e| e.to_string())?;
                let storage = tmidb::db::migrate(&cfg).await.map_err(|e| e.to_string())?;
                tracing::info!(
                    storage = storage.as_str(),
                    "database {} migrated",
                    tmidb::db::DATABASE
                );
                Ok(())
            }
            Cmd::Openapi => unreachable!("handled above"),
        }
    })
}
