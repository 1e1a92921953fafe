//! `tmidb-supervisor`: thin main over [`tmidb::supervisor::run`].

use std::process::ExitCode;

use clap::Parser;
use tmidb::cli::supervisor::{Setup, SupervisorArgs, SupervisorCommand};

/// Supervisor events go to the log hub (the unified stream) and, when present, journald.
fn init_tracing(journald: bool) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TMIDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = journald.then(tracing_journald::layer).and_then(Result::ok);
    tracing_subscriber::registry()
        .with(filter)
        .with(tmidb::logs::layer::HubLayer)
        .with(journald)
        .init();
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("tmidb-supervisor: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = SupervisorArgs::parse();
    if let Some(SupervisorCommand::Guardian { cgroup }) = &args.command {
        tmidb::supervisor::contain::guardian(cgroup.as_deref());
        return ExitCode::SUCCESS;
    }
    if let Some(file) = &args.config {
        // SAFETY: still single-threaded (no runtime, no logging thread yet). Units inherit
        // it, so every service reads the same file.
        unsafe { std::env::set_var("TMIDB_CONFIG", tmidb::config::absolute(file)) };
    }
    let home = tmidb::config::home_or_default(args.home.as_deref());
    let cfg = match tmidb::config::Config::load(&home) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(SupervisorCommand::Setup(step)) = args.command {
        let r = match step {
            Setup::Postgresql { user } => tmidb::setup::postgresql(&cfg, &user),
            Setup::Seaweedfs => tmidb::setup::seaweedfs(&cfg),
            Setup::Nats => tmidb::setup::nats(&cfg),
        };
        return r.map(|()| ExitCode::SUCCESS).unwrap_or_else(fail);
    }
    if let Some(dir) = args.check {
        let dir = dir
            .or(args.units)
            .unwrap_or_else(|| tmidb::supervisor::default_units_dir(&cfg.home));
        return match tmidb::unit::load_dir(&dir, &cfg.vars()) {
            Ok(set) => {
                println!("{}: {} unit instances OK", dir.display(), set.units.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                fail(format!("{} problem(s) in {}", e.0.len(), dir.display()))
            }
        };
    }
    init_tracing(cfg.logs.journald != tmidb::config::Journald::Off);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let opts = tmidb::supervisor::Options {
        home,
        units_dir: args.units,
        log_format: args.log_format,
        exit_on_start_failure: args.exit_on_start_failure,
        watch_programs: args.watch_programs,
    };
    match rt.block_on(tmidb::supervisor::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
