//! `tmidb-cli`: one function per command over the control client; the arguments are
//! [`args`], the tables and `--json` output `output`.
//!
//! Exit codes: 0 success (also when stdout is closed early, e.g. `| head`); 1 the
//! operation failed (a unit failed, invalid units, a rejected reload or setting); 2 bad
//! usage; 3 no supervisor reachable; 4 unknown unit, channel or key.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::{Config, ConfigError};
use crate::control::client::{Client, ClientError};
use crate::control::protocol::{ErrorKind, Level, PlanAction, Request, Response};
use crate::unit::UnitErrors;

/// Writes a line to stdout; a closed stdout (`| head`) ends the program quietly with 0.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(&format!($($arg)*))
    };
}

pub mod args;
pub mod complete;
pub mod man;
mod output;
pub mod supervisor;

use args::{Cli, Command, ConfigCommand, LogsCommand, UnitsCommand, command};
use output::{json, print_channels, print_failures, print_record, print_unit_list, print_units};

#[doc(hidden)]
pub fn write_out(line: &str) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{line}").and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
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

/// Runs one command; output goes to stdout.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let home = crate::config::home_or_default(cli.home.as_deref());
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
