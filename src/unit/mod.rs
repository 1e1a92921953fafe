//! Unit files: parse (`file`), then validate and resolve (`load`) into [`UnitSpec`]s.
//!
//! This module only reads files; it never spawns anything. Every problem becomes a
//! [`UnitError`] naming `file:line:col`, and a directory load collects all of them instead
//! of stopping at the first (or, worse, silently dropping a bad unit).

pub mod file;
pub mod graph;
mod load;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use file::{LogFormat, RestartPolicy, ServiceType};
pub(crate) use load::expand_dep;
pub use load::{SAMPLE_UNIT, load_dir, parse_unit};

/// A position in a unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: Arc<Path>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.col)
    }
}

/// One problem in a unit file, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct UnitError {
    /// Where.
    pub at: Location,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when that is obvious.
    pub hint: Option<String>,
}

/// All problems of a directory load; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct UnitErrors(pub Vec<UnitError>);

/// Converts a byte offset into a 1-based (line, column), columns counted in characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// A dependency reference with where it was written (ignored by equality, so moving a line
/// does not count as a change on reload).
#[derive(Debug, Clone)]
pub struct Dep {
    /// Unit name (`name` for all instances, or `name@N`).
    pub name: String,
    /// Where the reference stands.
    pub at: Location,
}

impl PartialEq for Dep {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A path condition: `path` must exist (or, `negate`, must not).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The expanded path.
    pub path: PathBuf,
    /// `!path` in the file.
    pub negate: bool,
}

/// A resolved probe.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSpec {
    /// TCP connect to `host:port` (the name is resolved at each attempt: an external
    /// service may be known by a name only).
    Tcp(String),
    /// HTTP GET; `expect` = required status.
    Http {
        /// `host:port` to connect to (resolved at each attempt).
        addr: String,
        /// Host header value.
        host: String,
        /// Request path.
        path: String,
        /// Required status, or any.
        expect: Option<u16>,
    },
    /// Command exits 0.
    Exec(Vec<String>),
    /// Output line matches.
    Log(String),
    /// sd_notify `READY=1` / `WATCHDOG=1`.
    Notify,
}

impl ProbeSpec {
    /// Short human description (`tcp 127.0.0.1:5432`).
    pub fn describe(&self) -> String {
        match self {
            ProbeSpec::Tcp(a) => format!("tcp {a}"),
            ProbeSpec::Http { host, path, .. } => format!("http http://{host}{path}"),
            ProbeSpec::Exec(c) => format!("exec {}", c.join(" ")),
            ProbeSpec::Log(p) => format!("log /{p}/"),
            ProbeSpec::Notify => "notify".into(),
        }
    }
}

/// Readiness settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// How readiness is detected.
    pub probe: ProbeSpec,
    /// Time between attempts.
    pub interval: Duration,
    /// Deadline for becoming ready.
    pub timeout: Duration,
}

/// Liveness settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    /// How health is checked.
    pub probe: ProbeSpec,
    /// Time between checks.
    pub interval: Duration,
    /// Per-check timeout.
    pub timeout: Duration,
    /// Misses in a row that restart the unit.
    pub failure_threshold: u32,
}

/// Restart settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    /// Policy.
    pub policy: RestartPolicy,
    /// First backoff delay.
    pub delay: Duration,
    /// Backoff ceiling.
    pub max_delay: Duration,
    /// Starts allowed within `interval`.
    pub burst: u32,
    /// Burst window.
    pub interval: Duration,
    /// Stable run length that resets the backoff.
    pub reset_after: Duration,
}

/// Log settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSpec {
    /// Channel name.
    pub channel: String,
    /// Reaches the unified output.
    pub enabled: bool,
    /// Line format.
    pub format: LogFormat,
}

/// A validated unit instance with every `${var}` expanded: what the supervisor runs.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpec {
    /// Instance name: `nats`, or `worker@2`.
    pub name: String,
    /// File name without `.unit.toml`.
    pub base: String,
    /// Instance number when `instances` is set.
    pub instance: Option<u32>,
    /// The unit file.
    pub source: PathBuf,
    /// One line of description.
    pub description: String,
    /// Hard dependencies.
    pub requires: Vec<Dep>,
    /// Soft dependencies.
    pub wants: Vec<Dep>,
    /// Ordering-only dependencies.
    pub after: Vec<Dep>,
    /// Start conditions.
    pub conditions: Vec<Condition>,
    /// Lines printed once every unit is ready.
    pub announce: Vec<String>,
    /// Service kind.
    pub kind: ServiceType,
    /// Program and arguments.
    pub command: Vec<String>,
    /// User to run as (root supervisor only).
    pub user: Option<String>,
    /// Group to run as.
    pub group: Option<String>,
    /// State directory (absolute).
    pub state_directory: Option<PathBuf>,
    /// Working directory.
    pub working_dir: Option<PathBuf>,
    /// Environment additions.
    pub environment: BTreeMap<String, String>,
    /// Environment files (`optional` when written `-path`).
    pub environment_files: Vec<(PathBuf, bool)>,
    /// Stop signal.
    pub stop_signal: nix::sys::signal::Signal,
    /// Grace period before SIGKILL.
    pub stop_timeout: Duration,
    /// Oneshot: the deadline for exiting, after which the start has failed.
    pub start_timeout: Duration,
    /// Paths whose change restarts the unit.
    pub watch: Vec<PathBuf>,
    /// Addresses the unit binds.
    pub listen: Vec<SocketAddr>,
    /// Pid/lock file cleared when stale.
    pub pid_file: Option<PathBuf>,
    /// Readiness detection (None: ready once spawned, or exited 0 for oneshot).
    pub readiness: Option<Readiness>,
    /// Health checking.
    pub liveness: Option<Liveness>,
    /// Restart behaviour.
    pub restart: Restart,
    /// Log channel.
    pub log: LogSpec,
}

impl UnitSpec {
    /// Whether a process of this unit needs `NOTIFY_SOCKET`.
    pub fn uses_notify(&self) -> bool {
        self.kind == ServiceType::Notify
            || matches!(&self.liveness, Some(l) if l.probe == ProbeSpec::Notify)
    }

    /// Whether going from `other` to this spec needs a new process: any change besides
    /// the description, the announcement, `[restart]` and `[log] enabled`, which apply
    /// to a running unit as they are.
    pub fn restart_needed(&self, other: &UnitSpec) -> bool {
        let mut same = other.clone();
        same.description = self.description.clone();
        same.announce = self.announce.clone();
        same.restart = self.restart.clone();
        same.log.enabled = self.log.enabled;
        !self.changes(&same).is_empty()
    }

    /// Names of the sections that differ from `other` (the "why" of a reload restart).
    pub fn changes(&self, other: &UnitSpec) -> Vec<&'static str> {
        let mut c = vec![];
        if self.requires != other.requires
            || self.wants != other.wants
            || self.after != other.after
            || self.conditions != other.conditions
            || self.description != other.description
        {
            c.push("[unit]");
        }
        if self.kind != other.kind
            || self.command != other.command
            || self.user != other.user
            || self.group != other.group
            || self.state_directory != other.state_directory
            || self.working_dir != other.working_dir
            || self.environment != other.environment
            || self.environment_files != other.environment_files
            || self.stop_signal != other.stop_signal
            || self.stop_timeout != other.stop_timeout
            || self.start_timeout != other.start_timeout
            || self.watch != other.watch
            || self.listen != other.listen
            || self.pid_file != other.pid_file
        {
            c.push("[service]");
        }
        if self.readiness != other.readiness {
            c.push("[readiness]");
        }
        if self.liveness != other.liveness {
            c.push("[liveness]");
        }
        if self.restart != other.restart {
            c.push("[restart]");
        }
        if self.log != other.log {
            c.push("[log]");
        }
        c
    }
}

/// The validated unit set of a directory: instances in file-name order.
#[derive(Debug, Clone, Default)]
pub struct UnitSet {
    /// Every instance.
    pub units: Vec<Arc<UnitSpec>>,
    /// The directory it came from.
    pub dir: PathBuf,
}

impl UnitSet {
    /// Looks up an instance by name.
    pub fn get(&self, name: &str) -> Option<&Arc<UnitSpec>> {
        self.units.iter().find(|u| u.name == name)
    }
}

/// Test support: load unit files given as `(name, text)` from a temp directory.
#[cfg(test)]
pub(crate) fn load_files(
    files: &[(&str, &str)],
    vars: &BTreeMap<String, String>,
) -> Result<UnitSet, UnitErrors> {
    let dir = tempfile::tempdir().expect("temp dir");
    for (n, t) in files {
        std::fs::write(dir.path().join(format!("{n}.unit.toml")), t).expect("write unit");
    }
    load_dir(dir.path(), vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_chars() {
        let t = "ab\ncdé f\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, t.find('f').unwrap()), (2, 5));
    }
}
