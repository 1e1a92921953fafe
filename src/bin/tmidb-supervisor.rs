//! `tmidb-supervisor`: thin main over [`tmidb::supervisor::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tmidb::logs::Format;

/// Runs the tmiDB stack from declarative unit files.
#[derive(Debug, Parser)]
#[command(name = "tmidb-supervisor", version, about)]
struct Args {
    /// Home directory: tmidb.toml, data/, run/, secrets/.
    #[arg(long, env = "TMIDB_HOME", default_value = tmidb::cli::DEFAULT_HOME, global = true)]
    home: PathBuf,
    /// Unit directory (default: HOME/units, /etc/tmidb/units, or the source tree's units/).
    #[arg(long, env = "TMIDB_UNITS")]
    units: Option<PathBuf>,
    /// Validate a unit directory (default: the one that would be used) and exit 0 or 1.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    check: Option<Option<PathBuf>>,
    /// Unified log format: text on a TTY and JSON otherwise, unless forced.
    #[arg(long, value_enum, default_value = "auto")]
    log_format: Format,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// First-run set-up steps used by the default oneshot units.
    #[command(subcommand)]
    Setup(Setup),
}

#[derive(Debug, Subcommand)]
enum Setup {
    /// initdb with scram auth and a generated password (skipped once initialised).
    Postgresql {
        /// Run initdb as this user when root.
        #[arg(long, default_value = "postgres")]
        user: String,
    },
    /// Generate the S3 identities file for SeaweedFS.
    Seaweedfs,
}

fn init_tracing(format: Format) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TMIDB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format.resolve() {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        _ => builder.with_target(false).init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let home = tmidb::config::absolute(&args.home);
    if let Some(cmd) = args.command {
        let result = tmidb::config::Config::load(&home)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                match cmd {
                    Cmd::Setup(Setup::Postgresql { user }) => tmidb::setup::postgresql(&cfg, &user),
                    Cmd::Setup(Setup::Seaweedfs) => tmidb::setup::seaweedfs(&cfg),
                }
                .map_err(|e| e.to_string())
            });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tmidb-supervisor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(dir) = args.check {
        return check(&home, dir, args.units);
    }
    init_tracing(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let opts = tmidb::supervisor::Options {
        home,
        units_dir: args.units,
        log_format: args.log_format,
    };
    match rt.block_on(tmidb::supervisor::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tmidb-supervisor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(home: &std::path::Path, dir: Option<PathBuf>, units: Option<PathBuf>) -> ExitCode {
    let cfg = match tmidb::config::Config::load(home) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tmidb-supervisor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = dir
        .or(units)
        .unwrap_or_else(|| tmidb::supervisor::default_units_dir(&cfg.home));
    match tmidb::unit::load_dir(&dir, &cfg.vars()) {
        Ok(set) => {
            println!("{}: {} unit instances OK", dir.display(), set.units.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "tmidb-supervisor: {} problem(s) in {}",
                e.0.len(),
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
