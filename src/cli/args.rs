//! The arguments of `tmidb-cli` (clap derive): every command, its options and their
//! help text, which the man pages and completions are generated from.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use clap_complete::engine::ArgValueCandidates;

use super::complete;
use crate::control::protocol::Level;

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
    /// The tmiDB home whose supervisor to talk to [default: ./tmidb-home; /var/lib/tmidb
    /// when only that exists].
    #[arg(long, env = "TMIDB_HOME", global = true)]
    pub home: Option<PathBuf>,
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

/// The clap command (for completions and man pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
