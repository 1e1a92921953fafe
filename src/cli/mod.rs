//! `tmidb-cli`: argument definitions, one function per command, table or `--json` output.
//!
//! Exit codes: 0 success (also when stdout is closed early, e.g. `| head`); 1 the
//! operation failed (a unit failed, invalid units, a rejected reload or setting); 2 bad
//! usage; 3 no supervisor reachable; 4 unknown unit, channel or key.

pub mod complete;
pub mod man;
pub mod supervisor;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use clap_complete::engine::ArgValueCandidates;

use crate::config::{Config, ConfigError};
use crate::control::client::{Client, ClientError};
use crate::control::protocol::{
    ChannelState, ErrorKind, FailureRecord, Level, LogRecord, PlanAction, Request, Response,
    UnitInfo, UnitStatus,
};
use crate::unit::UnitErrors;

/// The home used when neither --home nor TMIDB_HOME is given.
pub const DEFAULT_HOME: &str = "tmidb-home";

/// Writes a line to stdout; a closed stdout (`| head`) ends the program quietly with 0.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(&format!($($arg)*))
    };
}

#[doc(hidden)]
pub fn write_out(line: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{line}").and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Command-line interface of tmidb-cli.
#[derive(Debug, Parser)]
#[command(
    name = "tmidb-cli",
    version,
    about = "Control a running tmiDB supervisor",
    propagate_version = true,
    after_help = "Exit status (every command):\n\n\
0  success: the units reached what was asked (start, restart: ready, exited or skipped; stop: not running)\n\n\
1  the operation failed: a unit did not reach it (the reason is printed), a file could not be saved\n\n\
2  bad usage: an unknown option or argument, or a value that is not valid (a pattern, a time, a level, a setting)\n\n\
3  no supervisor reachable for this home\n\n\
4  unknown unit, channel or key\n\nShell completion: `tmidb-cli completions SHELL` prints a script; \
`source <(COMPLETE=bash tmidb-cli)` (or zsh, fish) also completes unit names from the running supervisor."
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
        #[arg(add = ArgValueCandidates::new(complete::units))]
        units: Vec<String>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start units and what they require; clears `failed`.
    Start(Lifecycle),
    /// Stop units and what requires them.
    Stop(Lifecycle),
    /// Restart units and what requires them.
    Restart(Lifecycle),
    /// Re-read unit files and tmidb.toml; apply only the difference: new units start,
    /// removed ones stop, changed ones restart with what requires them, and a change the
    /// process does not see (description, `[restart]`, `[log] enabled`) is an `update`,
    /// applied without a restart.
    Reload {
        /// Print the plan without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Logs: turn channels on or off, show buffered lines, follow live.
    #[command(subcommand)]
    Logs(LogsCommand),
    /// Unit files: list, print, verify, dependencies.
    #[command(subcommand)]
    Units(UnitsCommand),
    /// Settings: tmidb.toml's effective values and the supervisor's runtime settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Failure records of a unit (one per failed run).
    Failures {
        /// Instance name.
        #[arg(add = ArgValueCandidates::new(complete::units))]
        unit: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Arguments of start/stop/restart.
#[derive(Debug, clap::Args)]
pub struct Lifecycle {
    /// Units or instances.
    #[arg(required = true, add = ArgValueCandidates::new(complete::units))]
    pub units: Vec<String>,
    /// Return at once instead of waiting until the units settle.
    #[arg(long)]
    pub no_block: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `logs` subcommands.
#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Let channels reach the unified output (persists across supervisor restarts).
    Enable {
        /// Channel names (`supervisor` is the supervisor's own).
        #[arg(required = true, add = ArgValueCandidates::new(complete::channels))]
        channels: Vec<String>,
    },
    /// Keep channels out of the unified output; `logs show` still has their lines.
    Disable {
        /// Channel names.
        #[arg(required = true, add = ArgValueCandidates::new(complete::channels))]
        channels: Vec<String>,
    },
    /// Lowest level of a channel that reaches the unified output.
    Level {
        /// Channel name.
        #[arg(add = ArgValueCandidates::new(complete::channels))]
        channel: String,
        /// trace, debug, info, warn, error or fatal.
        level: Level,
    },
    /// Every channel, its units, and whether it reaches the unified output.
    Channels {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Buffered lines of units (or channels), oldest first.
    Show {
        /// Units, instances or channels (all when none).
        #[arg(add = ArgValueCandidates::new(complete::units))]
        units: Vec<String>,
        /// At most this many lines (the newest).
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Only lines since a duration ago (`10m`) or a time (`2026-11-26T10:00:00Z`).
        #[arg(long)]
        since: Option<String>,
        /// Only lines at or above this level.
        #[arg(long)]
        level: Option<Level>,
        /// Only lines whose message matches this regular expression.
        #[arg(long)]
        grep: Option<String>,
        /// Print JSON lines (one record each).
        #[arg(long)]
        json: bool,
    },
    /// Stream lines live until interrupted.
    Follow {
        /// Units, instances or channels (all when none).
        #[arg(add = ArgValueCandidates::new(complete::units))]
        units: Vec<String>,
        /// Resume after this sequence number (from a record's `seq`): no line is missed
        /// while it is still buffered.
        #[arg(long)]
        since_seq: Option<u64>,
        /// Print JSON lines (one record each; gaps as `{"gap": N, "reason": …}`).
        #[arg(long)]
        json: bool,
    },
}

/// `units` subcommands.
#[derive(Debug, Subcommand)]
pub enum UnitsCommand {
    /// The loaded units: state, kind, channel, file.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a unit's file.
    Cat {
        /// Unit or instance name.
        #[arg(add = ArgValueCandidates::new(complete::units))]
        unit: String,
    },
    /// Validate a unit directory without starting anything (default: the home's).
    Verify {
        /// Directory of *.unit.toml files.
        dir: Option<PathBuf>,
        /// Print JSON (`{"dir", "units", "errors": [{"at", "message", "hint"}]}`).
        #[arg(long)]
        json: bool,
    },
    /// Dependency tree of a unit, or the start levels of all units.
    Deps {
        /// Unit name.
        #[arg(add = ArgValueCandidates::new(complete::units))]
        unit: Option<String>,
        /// Print JSON: each instance with what it requires, wants and starts after.
        #[arg(long)]
        json: bool,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective value of KEY (e.g. `ports.nats`), or every key.
    Get {
        /// Dotted key.
        key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a runtime setting: `logs.ring_lines`, `logs.channel.NAME.enabled`,
    /// `logs.channel.NAME.level` (persisted in the home; tmidb.toml keys are edited there).
    Set {
        /// Dotted key.
        key: String,
        /// New value.
        value: String,
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
    /// A bad argument value clap could not check.
    #[error("{0}")]
    Usage(String),
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
            CliError::Usage(_)
            | CliError::Remote {
                kind: ErrorKind::InvalidArgument,
                ..
            } => 2,
            _ => 1,
        }
    }
}

/// The clap command (for completions and man pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs one command; output goes to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let home = crate::config::absolute(&cli.home);
    match cli.command {
        Command::Units(UnitsCommand::Verify { dir, json }) => verify(&home, dir, json).await,
        Command::Completions { shell } => {
            let mut buf = vec![];
            clap_complete::generate(shell, &mut command(), "tmidb-cli", &mut buf);
            write_out(String::from_utf8_lossy(&buf).trim_end());
            Ok(())
        }
        command => {
            let cfg = Config::load(&home)?;
            let mut client = connect(&cfg).await?;
            remote(&mut client, command).await
        }
    }
}

/// Connects to the supervisor of `cfg`'s home.
pub async fn connect(cfg: &Config) -> Result<Client, ClientError> {
    Client::connect(
        &cfg.socket_path(),
        concat!("tmidb-cli ", env!("CARGO_PKG_VERSION")),
    )
    .await
}

/// Validates `dir`; without one, the directory the home's running supervisor reads
/// (its `--units`), else the one it would read.
async fn verify(home: &std::path::Path, dir: Option<PathBuf>, j: bool) -> Result<(), CliError> {
    let cfg = Config::load(home)?;
    let dir = match dir {
        Some(d) => d,
        None => running_units_dir(&cfg)
            .await
            .unwrap_or_else(|| crate::supervisor::default_units_dir(&cfg.home)),
    };
    let result = crate::unit::load_dir(&dir, &cfg.vars());
    if j {
        let (units, errors) = match &result {
            Ok(set) => (set.units.len(), vec![]),
            Err(e) => (0, e.0.iter().map(|e| serde_json::json!({"at": e.at.to_string(), "message": e.message, "hint": e.hint})).collect()),
        };
        json(&serde_json::json!({ "dir": dir, "units": units, "errors": errors }));
    }
    let set = result?;
    if !j {
        out!("{}: {} unit instances OK", dir.display(), set.units.len());
    }
    Ok(())
}

/// The unit directory of the home's running supervisor, if one answers.
async fn running_units_dir(cfg: &Config) -> Option<PathBuf> {
    let mut client = connect(cfg).await.ok()?;
    let key = Some("units_dir".to_string());
    match ask(&mut client, Request::ConfigGet { key }).await.ok()? {
        Response::Config { values } => values.into_iter().next().map(|(_, v)| PathBuf::from(v)),
        _ => None,
    }
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

fn json<T: serde::Serialize>(v: &T) {
    out!("{}", serde_json::to_string_pretty(v).expect("json"));
}

async fn remote(client: &mut Client, command: Command) -> Result<(), CliError> {
    match command {
        Command::Status { units, json: j } => match ask(client, Request::Status { units }).await? {
            Response::Status { units } => print_units(&units, j),
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
        Command::Reload { dry_run, json: j } => {
            match ask(client, Request::Reload { dry_run }).await? {
                Response::Reload { plan, applied } if j => {
                    json(&serde_json::json!({ "applied": applied, "plan": plan }))
                }
                Response::Reload { plan, applied } => {
                    for e in &plan {
                        let a = match e.action {
                            PlanAction::Start => "start",
                            PlanAction::Stop => "stop",
                            PlanAction::Restart => "restart",
                            PlanAction::Update => "update",
                            PlanAction::Unchanged => "unchanged",
                        };
                        out!("{:<24} {:<10} {}", e.unit, a, e.why);
                    }
                    if !applied {
                        out!("(dry run: nothing was changed)");
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Logs(l) => logs(client, l).await?,
        Command::Units(UnitsCommand::List { json: j }) => {
            match ask(client, Request::UnitsList).await? {
                Response::Units { units } => print_unit_list(&units, j),
                r => return Err(unexpected(r)),
            }
        }
        Command::Units(UnitsCommand::Cat { unit }) => {
            match ask(client, Request::UnitsCat { unit }).await? {
                Response::Text { text } => out!("{}", text.trim_end()),
                r => return Err(unexpected(r)),
            }
        }
        Command::Units(UnitsCommand::Deps { unit, json: true }) => {
            match ask(client, Request::UnitsList).await? {
                Response::Units { units } => {
                    let args: Vec<String> = unit.into_iter().collect();
                    let picked = crate::control::protocol::select(&units, &args, |u| &u.name)
                        .map_err(|message| CliError::Remote {
                            kind: ErrorKind::UnknownUnit,
                            message,
                        })?;
                    let deps: Vec<serde_json::Value> = picked
                        .iter()
                        .map(|u| serde_json::json!({"unit": u.name, "requires": u.requires, "wants": u.wants, "after": u.after}))
                        .collect();
                    json(&deps);
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Units(UnitsCommand::Deps { unit, json: false }) => {
            match ask(client, Request::Deps { unit }).await? {
                Response::Text { text } => out!("{}", text.trim_end()),
                r => return Err(unexpected(r)),
            }
        }
        Command::Units(UnitsCommand::Verify { .. }) | Command::Completions { .. } => {
            unreachable!("handled locally")
        }
        Command::Config(ConfigCommand::Get { key, json: j }) => {
            let single = key.is_some();
            match ask(client, Request::ConfigGet { key }).await? {
                Response::Config { values } if j => json(
                    &values
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>(),
                ),
                Response::Config { values } if single => out!("{}", values[0].1),
                Response::Config { values } => {
                    for (k, v) in values {
                        out!("{k} = {v}");
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Config(ConfigCommand::Set { key, value }) => {
            match ask(client, Request::ConfigSet { key, value }).await? {
                Response::Config { values } => {
                    for (k, v) in values {
                        out!("{k} = {v}");
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
        Command::Failures { unit, json: j } => {
            match ask(client, Request::Failures { unit: unit.clone() }).await? {
                Response::Failures { records } => print_failures(&unit, &records, j),
                r => return Err(unexpected(r)),
            }
        }
    }
    Ok(())
}

async fn lifecycle(client: &mut Client, req: Request, j: bool) -> Result<(), CliError> {
    match ask(client, req).await? {
        Response::Done { units } => {
            print_units(&units, j);
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

/// `--since`: a duration ago (`10m`) or a time, as RFC 3339 for the supervisor.
fn since_arg(s: &str) -> Result<String, CliError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(humantime::format_rfc3339_micros(SystemTime::now() - d).to_string());
    }
    humantime::parse_rfc3339_weak(s)
        .map(|t| humantime::format_rfc3339_micros(t).to_string())
        .map_err(|_| CliError::Usage(format!("invalid --since `{s}`: give a duration such as 10m or a time such as 2026-11-26T10:00:00Z")))
}

async fn logs(client: &mut Client, cmd: LogsCommand) -> Result<(), CliError> {
    let color = std::io::stdout().is_terminal();
    match cmd {
        LogsCommand::Enable { channels } => set_channels(client, channels, Some(true), None).await,
        LogsCommand::Disable { channels } => {
            set_channels(client, channels, Some(false), None).await
        }
        LogsCommand::Level { channel, level } => {
            set_channels(client, vec![channel], None, Some(level)).await
        }
        LogsCommand::Channels { json: j } => match ask(client, Request::LogChannels).await? {
            Response::Channels { channels } => {
                print_channels(&channels, j);
                Ok(())
            }
            r => Err(unexpected(r)),
        },
        LogsCommand::Show {
            units,
            lines,
            since,
            level,
            grep,
            json: j,
        } => {
            let since = since.as_deref().map(since_arg).transpose()?;
            match ask(
                client,
                Request::LogShow {
                    units,
                    lines,
                    since,
                    level,
                    grep,
                },
            )
            .await?
            {
                Response::Logs { records } => {
                    for r in &records {
                        print_record(r, j, color);
                    }
                    Ok(())
                }
                r => Err(unexpected(r)),
            }
        }
        LogsCommand::Follow {
            units,
            since_seq,
            json: j,
        } => {
            let mut resp = client
                .stream(&Request::LogFollow { units, since_seq })
                .await?;
            loop {
                match resp.next().await? {
                    Response::Logs { records } => {
                        for r in &records {
                            print_record(r, j, color);
                        }
                    }
                    Response::LogGap { missed, reason } if j => {
                        out!("{}", serde_json::json!({ "gap": missed, "reason": reason }));
                    }
                    Response::LogGap { missed, reason } => {
                        out!("-- {missed} lines missed: {reason} --")
                    }
                    Response::Error { kind, message } => {
                        return Err(CliError::Remote { kind, message });
                    }
                    r => return Err(unexpected(r)),
                }
            }
        }
    }
}

async fn set_channels(
    client: &mut Client,
    channels: Vec<String>,
    enabled: Option<bool>,
    level: Option<Level>,
) -> Result<(), CliError> {
    match ask(
        client,
        Request::LogSet {
            channels,
            enabled,
            level,
        },
    )
    .await?
    {
        Response::Channels { channels } => {
            print_channels(&channels, false);
            Ok(())
        }
        r => Err(unexpected(r)),
    }
}

/// Prints one record: text (as the unified stream shows it) or a JSON line.
pub fn print_record(r: &LogRecord, json: bool, color: bool) {
    if json {
        out!("{}", serde_json::to_string(r).expect("json"));
    } else {
        let mut buf = vec![];
        crate::logs::sink::render_text(&mut buf, r, color);
        out!("{}", String::from_utf8_lossy(&buf).trim_end_matches('\n'));
    }
}

fn print_channels(channels: &[ChannelState], j: bool) {
    if j {
        return json(&channels);
    }
    out!("{:<20} {:<8} {:<6} UNITS", "CHANNEL", "OUTPUT", "LEVEL");
    for c in channels {
        out!(
            "{:<20} {:<8} {:<6} {}",
            c.channel,
            if c.enabled { "on" } else { "off" },
            c.level,
            c.units.join(" ")
        );
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
pub fn print_units(units: &[UnitStatus], j: bool) {
    if j {
        return json(&units);
    }
    let color = std::io::stdout().is_terminal();
    out!(
        "{:<22} {:<10} {:>8} {:>8} {:>8}  {:<14} REASON",
        "UNIT",
        "STATE",
        "PID",
        "RESTARTS",
        "SINCE",
        "LAST EXIT"
    );
    for u in units {
        let state = format!("{:<10}", u.state.as_str());
        let state = match (color, u.state) {
            (
                true,
                crate::control::protocol::State::Ready | crate::control::protocol::State::Exited,
            ) => format!("\x1b[32m{state}\x1b[0m"),
            (true, crate::control::protocol::State::Failed) => format!("\x1b[31m{state}\x1b[0m"),
            (
                true,
                crate::control::protocol::State::Restarting
                | crate::control::protocol::State::Starting,
            ) => format!("\x1b[33m{state}\x1b[0m"),
            _ => state,
        };
        let dropped = if u.dropped > 0 {
            format!(" [{} log lines dropped]", u.dropped)
        } else {
            String::new()
        };
        // What a notify service says of itself (STATUS=), after the supervisor's reason.
        let said = match &u.status_text {
            Some(t) if !t.is_empty() => format!(" — {t}"),
            _ => String::new(),
        };
        out!(
            "{:<22} {} {:>8} {:>8} {:>8}  {:<14} {}{said}{dropped}",
            u.name,
            state,
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

fn print_unit_list(units: &[UnitInfo], j: bool) {
    if j {
        return json(&units);
    }
    // The file goes last: its length depends on where the home is.
    let head = format!(
        "{:<22} {:<10} {:<8} {:<14} {:<30} FILE",
        "UNIT", "STATE", "TYPE", "CHANNEL", "DESCRIPTION"
    );
    out!("{head}");
    for u in units {
        let (name, state, kind, ch, d) = (
            &u.name,
            u.state.as_str(),
            &u.kind,
            &u.channel,
            &u.description,
        );
        out!(
            "{name:<22} {state:<10} {kind:<8} {ch:<14} {d:<30} {}",
            u.file
        );
    }
}

fn print_failures(unit: &str, records: &[FailureRecord], j: bool) {
    if j {
        return json(&records);
    }
    if records.is_empty() {
        out!("{unit}: no failures recorded");
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
        out!(
            "{} pid {} ({exit}): {}  [ready: {ready}, ended {}]",
            r.started,
            r.pid,
            r.reason,
            r.ended
        );
        for l in &r.last_lines {
            out!("    | {l}");
        }
    }
}
