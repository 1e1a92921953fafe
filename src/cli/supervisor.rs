//! Arguments of `tmidb-supervisor` (here, not in the binary, so man pages and
//! completions are generated from the same definitions).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logs::Format;

/// Runs the tmiDB stack from declarative unit files.
#[derive(Debug, Parser)]
#[command(
    name = "tmidb-supervisor",
    version,
    about = "Runs the tmiDB stack from declarative unit files",
    long_about = "Runs the tmiDB stack (PostgreSQL, NATS, SeaweedFS and tmiDB's own services) from \
declarative unit files: builds the dependency graph, starts units in order and in parallel, probes, \
restarts and reaps them, merges their logs into one stream, reloads edited unit files, and answers \
tmidb-cli on a control socket. SIGTERM or SIGINT stops everything in reverse dependency order (a \
second one kills at once); SIGHUP reloads.",
    after_help = "Exit status: 0 after an orderly stop; 1 on invalid configuration or units (nothing is started)."
)]
pub struct SupervisorArgs {
    /// Home directory: tmidb.toml, data/, run/, secrets/.
    #[arg(long, env = "TMIDB_HOME", default_value = super::DEFAULT_HOME, global = true)]
    pub home: PathBuf,
    /// Unit directory (default: HOME/units, /etc/tmidb/units, or the source tree's units/).
    #[arg(long, env = "TMIDB_UNITS")]
    pub units: Option<PathBuf>,
    /// Validate a unit directory (default: the one that would be used) and exit 0 or 1.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub check: Option<Option<PathBuf>>,
    /// Unified log format: text on a TTY and JSON otherwise, unless forced.
    #[arg(long, value_enum, default_value = "auto")]
    pub log_format: Format,
    /// Helper subcommands.
    #[command(subcommand)]
    pub command: Option<SupervisorCommand>,
}

/// Helper subcommands of tmidb-supervisor.
#[derive(Debug, Subcommand)]
pub enum SupervisorCommand {
    /// First-run set-up steps used by the default oneshot units.
    #[command(subcommand)]
    Setup(Setup),
    /// Internal: the process that kills what the units left when the supervisor dies
    /// (started by the supervisor itself; see `supervisor::contain`).
    #[command(hide = true)]
    Guardian {
        /// The supervisor's cgroup of units, removed with everything in it.
        #[arg(long)]
        cgroup: Option<PathBuf>,
    },
}

/// `setup` steps.
#[derive(Debug, Subcommand)]
pub enum Setup {
    /// initdb with scram auth and a generated password (skipped once initialised).
    Postgresql {
        /// Run initdb as this user when root.
        #[arg(long, default_value = "postgres")]
        user: String,
    },
    /// Generate the S3 identities file for SeaweedFS.
    Seaweedfs,
    /// Generate NATS credentials (one per service, one for external publishers) and
    /// the nats-server configuration that requires them.
    Nats,
}
