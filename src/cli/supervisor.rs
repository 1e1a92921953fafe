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
    after_help = "Exit status: 0 after an orderly stop; 1 on invalid configuration or units (nothing is started), or \
after a start failure with --exit-on-start-failure (every unit is stopped first).\n\n\
Under systemd (Type=notify, as the Debian package's tmidb.service): READY=1 once every unit is \
ready, STATUS= on a start failure; each unit's lines go to the journal once under its own \
SYSLOG_IDENTIFIER, so the unified stream is not also written to stdout when stdout is the journal \
(JOURNAL_STREAM).\n\n\
Files: the settings file is TMIDB_CONFIG (--config), else HOME/tmidb.toml, else /etc/tmidb/tmidb.toml \
for the home /var/lib/tmidb; see tmidb.toml(5)."
)]
pub struct SupervisorArgs {
    /// Home directory: data/, run/, secrets/, and tmidb.toml unless --config [default:
    /// ./tmidb-home; /var/lib/tmidb when only that exists].
    #[arg(long, env = "TMIDB_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// Settings file [default: HOME/tmidb.toml; /etc/tmidb/tmidb.toml for
    /// /var/lib/tmidb]. Exported to every unit as TMIDB_CONFIG.
    #[arg(long, env = "TMIDB_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Unit directory (default: HOME/units, /etc/tmidb/units, or the source tree's units/).
    #[arg(long, env = "TMIDB_UNITS")]
    pub units: Option<PathBuf>,
    /// Validate a unit directory (default: the one that would be used) and exit 0 or 1.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub check: Option<Option<PathBuf>>,
    /// Unified log format: text on a TTY and JSON otherwise, unless forced.
    #[arg(long, value_enum, default_value = "auto")]
    pub log_format: Format,
    /// When a unit fails for good before every unit was ready, stop them all and exit 1
    /// (the packaged tmidb.service sets it, so `systemctl start` fails at once and
    /// systemd's restart limits apply). Without it the others keep running and the
    /// failure waits for `tmidb-cli restart`. Either way STATUS= names the unit and why.
    #[arg(long)]
    pub exit_on_start_failure: bool,
    /// Restart a running unit when its program (the command's first word) is rebuilt or
    /// replaced, keeping the others running (finished oneshots are not run again):
    /// `make dev` uses it with debug builds.
    #[arg(long)]
    pub watch_programs: bool,
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
