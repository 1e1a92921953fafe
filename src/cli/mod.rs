//! `tmidb-cli`: argument definitions, one function per command, table or `--json` output.
//!
//! Exit codes: 0 success; 1 the operation failed (a unit failed, invalid units, a rejected
//! reload); 2 bad usage; 3 no supervisor reachable; 4 unknown unit or key.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::control::client::{Client, ClientError};
use crate::control::protocol::{
    ErrorKind, FailureRecord, PlanAction, Request, Response, UnitStatus,
};
use crate::unit::UnitErrors;

/// The home used when neither --home nor TMIDB_HOME is given.
pub const DEFAULT_HOME: &str = "tmidb-home";

/// Command-line interface of tmidb-cli.
#[derive(Debug, Parser)]
#[command(
    name = "tmidb-cli",
    version,
    about = "Control a running tmiDB supervisor",
    propagate_version = true
)]
pub struct Cli {
    /// The tmiDB home whose supervisor to talk to.
    #[arg(long, env = "TMIDB_HOME", default_value = DEFAULT_HOME, global = true)]
    pub home: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the state of units (all when none is named).
    Status {
        /// Units or instances (`worker` selects every `worker@N`).
        units: Vec<String>,
        /// Print JSON (an array of objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start units and what they require; clears `failed`.
    Start(Lifecycle),
    /// Stop units and what requires them.
    Stop(Lifecycle),
    /// Restart units and what requires them.
    Restart(Lifecycle),
    /// Re-read unit files and tmidb.toml; apply only the difference.
    Reload {
        /// Print the plan without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Unit files: verify a directory, show dependencies.
    #[command(subcommand)]
    Units(UnitsCommand),
    /// Effective settings of the running supervisor.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Failure records of a unit (one per failed incarnation).
    Failures {
        /// Instance name.
        unit: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of start/stop/restart.
#[derive(Debug, clap::Args)]
pub struct Lifecycle {
    /// Units or instances.
    #[arg(required = true)]
    pub units: Vec<String>,
    /// Return at once instead of waiting until the units settle.
    #[arg(long)]
    pub no_block: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `units` subcommands.
#[derive(Debug, Subcommand)]
pub enum UnitsCommand {
    /// Validate a unit directory without starting anything (default: the home's).
    Verify {
        /// Directory of *.unit.toml files.
        dir: Option<PathBuf>,
    },
    /// Dependency tree of a unit, or the start levels of all units.
    Deps {
        /// Unit name.
        unit: Option<String>,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective value of KEY (e.g. `ports.nats`), or every key.
    Get {
        /// Dotted key.
        key: Option<String>,
    },
}

/// Why a command failed; [`CliError::exit_code`] maps it to the documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Talking to the supervisor failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The supervisor refused or reported failure.
    #[error("{message}")]
    Remote {
        /// Kind.
        kind: ErrorKind,
        /// Message.
        message: String,
    },
    /// Invalid unit files.
    #[error("{0}")]
    Units(#[from] UnitErrors),
    /// Invalid tmidb.toml.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Client(
                ClientError::NotRunning { .. }
                | ClientError::PermissionDenied { .. }
                | ClientError::Connect { .. },
            ) => 3,
            CliError::Remote {
                kind: ErrorKind::UnknownUnit | ErrorKind::UnknownKey,
                ..
            } => 4,
            _ => 1,
        }
    }
}

/// Runs one command; output goes to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let home = crate::config::absolute(&cli.home);
    match cli.command {
        Command::Units(UnitsCommand::Verify { dir }) => verify(&home, dir),
        command => {
            let cfg = Config::load(&home)?;
            let mut client = Client::connect(
                &cfg.socket_path(),
                concat!("tmidb-cli ", env!("CARGO_PKG_VERSION")),
            )
            .await?;
            remote(&mut client, command).await
        }
    }
}

fn verify(home: &std::path::Path, dir: Option<PathBuf>) -> Result<(), CliError> {
    let cfg = Config::load(home)?;
    let dir = dir.unwrap_or_else(|| crate::supervisor::default_units_dir(&cfg.home));
    let set = crate::unit::load_dir(&dir, &cfg.vars())?;
    println!("{}: {} unit instances OK", dir.display(), set.units.len());
    Ok(())
}

async fn ask(client: &mut Client, req: Request) -> Result<Response, CliError> {
    match client.request(&req).await? {
        Response::Error { kind, message } => Err(CliError::Remote { kind, message }),
        r => Ok(r),
    }
}

fn unexpected(r: Response) -> CliError {
    CliError::Client(ClientError::Unexpected(format!("{r:?}")))
}

async fn remote(client: &mut Client, command: Command) -> Result<(), CliError> {
    match command {
        Command::Status { units, json } => match ask(client, Request::Status { units }).await? {
            Response::Status { units } => print_units(&units, json),
            r => return Err(unexpected(r)),
        },
        Command::Start(l) => {
            lifecycle(
                client,
                Request::Start {
                    units: l.units,
                    wait: !l.no_block,
                },
                l.json,
            )
            .await?
        }
        Command::Stop(l) => {
            lifecycle(
                client,
                Request::Stop {
                    units: l.units,
                    wait: !l.no_block,
                },
                l.json,
            )
            .await?
        }
        Command::Restart(l) => {
            lifecycle(
                client,
                Request::Restart {
                    units: l.units,
                    wait: !l.no_block,
                },
                l.json,
            )
            .await?
        }
        Command::Reload { dry_run, json } => {
            match ask(client, Request::Reload { dry_run }).await? {
                Response::Reload { plan, applied } => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&plan).expect("json"));
                    } else {
                        for e in &plan {
                            let a = match e.action {
                                PlanAction::Start => "start",
                                PlanAction::Stop => "stop",
                                PlanAction::Restart => "restart",
                                PlanAction::Unchanged => "unchanged",
                            };
                            println!("{:<24} {:<10} {}", e.unit, a, e.why);
                        }
                        if !applied {
                            println!("(dry run: nothing was changed)");
                        }
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Units(UnitsCommand::Deps { unit }) => {
            match ask(client, Request::Deps { unit }).await? {
                Response::Text { text } => print!("{text}"),
                r => return Err(unexpected(r)),
            }
        }
        Command::Units(UnitsCommand::Verify { .. }) => unreachable!("handled locally"),
        Command::Config(ConfigCommand::Get { key }) => {
            let single = key.is_some();
            match ask(client, Request::ConfigGet { key }).await? {
                Response::Config { values } if single => println!("{}", values[0].1),
                Response::Config { values } => {
                    for (k, v) in values {
                        println!("{k} = {v}");
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Failures { unit, json } => {
            match ask(client, Request::Failures { unit: unit.clone() }).await? {
                Response::Failures { records } => print_failures(&unit, &records, json),
                r => return Err(unexpected(r)),
            }
        }
    }
    Ok(())
}

async fn lifecycle(client: &mut Client, req: Request, json: bool) -> Result<(), CliError> {
    match ask(client, req).await? {
        Response::Done { units } => {
            print_units(&units, json);
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

/// Age of an RFC 3339 timestamp, compactly (`3m12s`).
fn age(since: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(since) else {
        return since.to_string();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Prints units as a table, or as a JSON array.
pub fn print_units(units: &[UnitStatus], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(units).expect("json"));
        return;
    }
    println!(
        "{:<22} {:<10} {:>8} {:>8} {:>8}  {:<12} REASON",
        "UNIT", "STATE", "PID", "RESTARTS", "SINCE", "LAST EXIT"
    );
    for u in units {
        println!(
            "{:<22} {:<10} {:>8} {:>8} {:>8}  {:<12} {}",
            u.name,
            u.state.as_str(),
            u.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            u.restarts,
            age(&u.since),
            u.last_exit
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into()),
            u.reason
        );
    }
}

fn print_failures(unit: &str, records: &[FailureRecord], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(records).expect("json"));
        return;
    }
    if records.is_empty() {
        println!("{unit}: no failures recorded");
    }
    for r in records {
        let exit = r
            .exit
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into());
        let ready = r
            .time_to_ready_ms
            .map(|m| format!("{m}ms"))
            .unwrap_or_else(|| "never".into());
        println!(
            "{} pid {} ({exit}): {}  [ready: {ready}, ended {}]",
            r.started, r.pid, r.reason, r.ended
        );
        for l in &r.last_lines {
            println!("    | {l}");
        }
    }
}
