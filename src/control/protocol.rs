//! The control-socket protocol: every message the supervisor, `tmidb-cli` and the api
//! exchange. One place, used by both ends.
//!
//! Frames are a 4-byte big-endian length followed by that many bytes of JSON, at most
//! [`MAX_FRAME`]. The first exchange is `Hello` carrying [`PROTOCOL_VERSION`]; a peer with
//! another version gets `Response::Error { kind: VersionMismatch }` and the connection ends.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to [`Request`] or [`Response`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Severity of a record, lowest first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Tracing detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something to look at.
    Warn,
    /// Something failed.
    Error,
    /// The process cannot go on.
    Fatal,
}

impl Level {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// Parses the level names services commonly use (`WARNING`, `err`, `CRITICAL`, …).
    pub fn parse_loose(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "trace" | "trc" => Level::Trace,
            "debug" | "dbg" => Level::Debug,
            "info" | "inf" | "information" | "notice" | "log" => Level::Info,
            "warn" | "wrn" | "warning" => Level::Warn,
            "error" | "err" => Level::Error,
            "fatal" | "ftl" | "critical" | "crit" | "panic" | "emerg" | "alert" => Level::Fatal,
            _ => return None,
        })
    }

    /// syslog priority for journald.
    pub fn syslog_priority(self) -> u8 {
        match self {
            Level::Trace | Level::Debug => 7,
            Level::Info => 6,
            Level::Warn => 4,
            Level::Error => 3,
            Level::Fatal => 2,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        Level::parse_loose(s).ok_or_else(|| {
            format!("unknown level `{s}`; use trace, debug, info, warn, error or fatal")
        })
    }
}

/// Lifecycle states of a unit instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not running (never started, stopped, or waiting for its dependencies).
    Inactive,
    /// Spawned; waiting for readiness (or, oneshot, for its exit).
    Starting,
    /// Running and ready.
    Ready,
    /// Asked to stop; waiting for the process group to end.
    Stopping,
    /// Finished successfully (oneshot done, or a service that exited 0 by itself).
    Exited,
    /// Crashed; waiting out the backoff before the next start.
    Restarting,
    /// Gave up: start limit hit, policy `no`, or could not be spawned.
    Failed,
    /// A `condition_path_exists` was not met.
    Skipped,
}

impl State {
    /// Every state, in declaration order.
    pub const ALL: [State; 8] = [
        State::Inactive,
        State::Starting,
        State::Ready,
        State::Stopping,
        State::Exited,
        State::Restarting,
        State::Failed,
        State::Skipped,
    ];

    /// Lowercase name, as in `status` output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Restarting => "restarting",
            State::Failed => "failed",
            State::Skipped => "skipped",
        }
    }

    /// Whether the unit has settled (no transition pending without outside help).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            State::Ready | State::Exited | State::Failed | State::Skipped | State::Inactive
        )
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum ExitInfo {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (name).
    Signal(String),
}

impl ExitInfo {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitInfo::Code(0)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitInfo::Code(c) => write!(f, "exit {c}"),
            ExitInfo::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Whether the unit argument `arg` names the instance `instance`: its full name, or
/// its template (`worker` names `worker@1`, `worker@2`, …).
pub fn names_instance(arg: &str, instance: &str) -> bool {
    instance == arg
        || instance
            .split_once('@')
            .is_some_and(|(template, _)| template == arg)
}

/// What the unit arguments `args` select from `all` (everything when there are none),
/// each once, in the order asked; an argument that selects nothing is an error naming
/// the known units. The supervisor, the CLI and the api select with this alone.
pub fn select<'a, T>(
    all: &'a [T],
    args: &[String],
    name_of: impl Fn(&T) -> &str,
) -> Result<Vec<&'a T>, String> {
    if args.is_empty() {
        return Ok(all.iter().collect());
    }
    let mut out: Vec<&T> = vec![];
    for arg in args {
        let mut matched = false;
        for u in all.iter().filter(|u| names_instance(arg, name_of(u))) {
            matched = true;
            if !out.iter().any(|o| name_of(o) == name_of(u)) {
                out.push(u);
            }
        }
        if !matched {
            let known: Vec<&str> = all.iter().map(&name_of).collect();
            return Err(format!(
                "unknown unit `{arg}`; known units: {}",
                known.join(", ")
            ));
        }
    }
    Ok(out)
}

/// One unit instance as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// Instance name.
    pub name: String,
    /// Current state.
    pub state: State,
    /// Why it is in that state.
    pub reason: String,
    /// Main process id while running.
    pub pid: Option<i32>,
    /// Automatic restarts since the supervisor (or `tmidb-cli start`) started it.
    pub restarts: u32,
    /// When the current state began (RFC 3339, UTC).
    pub since: String,
    /// How the last process ended.
    pub last_exit: Option<ExitInfo>,
    /// The service's own `STATUS=` text (notify units).
    pub status_text: Option<String>,
    /// Log channel.
    pub channel: String,
    /// Description from the unit file.
    pub description: String,
    /// Output lines the unified sinks had to drop for this unit (normally 0).
    #[serde(default)]
    pub dropped: u64,
    /// Why a ready external unit's liveness probe fails (it is not restarted: the
    /// service runs elsewhere); `None` while it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// How long the current incarnation took from spawn to ready (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_ms: Option<u64>,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
    /// The supervisor's own event.
    Supervisor,
}

impl Stream {
    /// The name in the protocol (`stdout`, `stderr`, `supervisor`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Supervisor => "supervisor",
        }
    }
}

/// One log record: a line of a child, or an event of the supervisor (unit `supervisor`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Global sequence number (increasing; `follow --since-seq` resumes after it).
    pub seq: u64,
    /// RFC 3339 time (UTC, microseconds) the line was read.
    pub ts: std::sync::Arc<str>,
    /// Unit name (without the instance), or `supervisor`.
    pub unit: std::sync::Arc<str>,
    /// Instance number of `unit@N`.
    pub instance: Option<u32>,
    /// Log channel.
    pub channel: std::sync::Arc<str>,
    /// stdout, stderr, or supervisor.
    pub stream: Stream,
    /// Severity (recognised or from the JSON line).
    pub level: Level,
    /// The message.
    pub msg: String,
    /// Structured fields (JSON lines, supervisor events).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl LogRecord {
    /// `unit` or `unit@N`.
    pub fn instance_name(&self) -> String {
        match self.instance {
            Some(i) => format!("{}@{i}", self.unit),
            None => self.unit.to_string(),
        }
    }
}

/// State of one log channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Channel name.
    pub channel: String,
    /// Units writing to it.
    pub units: Vec<String>,
    /// Whether it reaches the unified output.
    pub enabled: bool,
    /// Lowest level that reaches the unified output.
    pub level: Level,
}

/// A unit as `units list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitInfo {
    /// Instance name.
    pub name: String,
    /// Current state.
    pub state: State,
    /// Service kind.
    pub kind: String,
    /// Log channel.
    pub channel: String,
    /// Unit file.
    pub file: String,
    /// Description.
    pub description: String,
    /// Instances it requires.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Instances it wants.
    #[serde(default)]
    pub wants: Vec<String>,
    /// Instances it starts after (requires, wants and after together).
    #[serde(default)]
    pub after: Vec<String>,
}

/// One ended incarnation of a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Main pid of the incarnation.
    pub pid: i32,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339).
    pub ended: String,
    /// How it ended (None: killed after a failed probe before it exited by itself).
    pub exit: Option<ExitInfo>,
    /// Why it counts as a failure.
    pub reason: String,
    /// Milliseconds from spawn to ready, if it got there.
    pub time_to_ready_ms: Option<u64>,
    /// Its last output lines.
    pub last_lines: Vec<String>,
}

/// What a reload does to one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanAction {
    /// New unit: started.
    Start,
    /// Removed unit: stopped.
    Stop,
    /// Changed (or requires a changed unit): restarted.
    Restart,
    /// Changed only in what the running process does not see (description, announce,
    /// `[restart]`, `[log] enabled`): applied without a restart.
    Update,
    /// Left alone.
    Unchanged,
}

/// One line of a reload plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// Instance name.
    pub unit: String,
    /// What happens.
    pub action: PlanAction,
    /// Why.
    pub why: String,
}

/// Requests a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// First message of every connection.
    Hello {
        /// The client's [`PROTOCOL_VERSION`].
        version: u32,
        /// Free text naming the client (`tmidb-cli 0.1.0`).
        client: String,
    },
    /// States of the named units (all when empty).
    Status {
        /// Unit or instance names.
        units: Vec<String>,
    },
    /// Start units (and what they require), clearing `failed`.
    Start {
        /// Unit or instance names.
        units: Vec<String>,
        /// Answer once they settle (ready, exited, failed, skipped) instead of at once.
        wait: bool,
    },
    /// Stop units (and what requires them).
    Stop {
        /// Unit or instance names.
        units: Vec<String>,
        /// Answer once they are down.
        wait: bool,
    },
    /// Stop then start units (and what requires them).
    Restart {
        /// Unit or instance names.
        units: Vec<String>,
        /// Answer once they settle.
        wait: bool,
    },
    /// Re-read the unit directory and tmidb.toml, and apply the difference.
    Reload {
        /// Only compute and return the plan.
        dry_run: bool,
    },
    /// The dependency tree of one unit, or the start levels of all.
    Deps {
        /// Unit name, or all.
        unit: Option<String>,
    },
    /// The effective value of a tmidb.toml key (`ports.nats`), or all keys when None.
    ConfigGet {
        /// Dotted key.
        key: Option<String>,
    },
    /// Failure records of one unit.
    Failures {
        /// Instance name.
        unit: String,
    },
    /// Set a runtime setting the supervisor owns (`logs.ring_lines`,
    /// `logs.channel.NAME.enabled`, `logs.channel.NAME.level`); persisted in the home.
    ConfigSet {
        /// Dotted key.
        key: String,
        /// New value.
        value: String,
    },
    /// The loaded units.
    UnitsList,
    /// The text of a unit's file.
    UnitsCat {
        /// Unit or instance name.
        unit: String,
    },
    /// Every log channel and its state.
    LogChannels,
    /// Enable, disable or set the level of channels in the unified output.
    LogSet {
        /// Channel names.
        channels: Vec<String>,
        /// New enabled flag.
        enabled: Option<bool>,
        /// New lowest level.
        level: Option<Level>,
    },
    /// Buffered records of units (all when empty), oldest first.
    LogShow {
        /// Unit, instance or channel names.
        units: Vec<String>,
        /// At most this many (the newest).
        lines: usize,
        /// Only records at or after this RFC 3339 time.
        since: Option<String>,
        /// Only records at or above this level.
        level: Option<Level>,
        /// Only records whose message matches this regular expression.
        grep: Option<String>,
    },
    /// Stream records until the client disconnects: first the buffered ones after
    /// `since_seq`, then live ones. The connection answers nothing else afterwards.
    LogFollow {
        /// Unit, instance or channel names (all when empty).
        units: Vec<String>,
        /// Resume after this sequence number.
        since_seq: Option<u64>,
    },
}

/// Error kinds, so clients can pick exit codes without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Client and supervisor speak different protocol versions.
    VersionMismatch,
    /// A named unit does not exist.
    UnknownUnit,
    /// A config key does not exist.
    UnknownKey,
    /// The new unit set is invalid; nothing was changed.
    InvalidUnits,
    /// A well-formed message that is not valid here (e.g. a second Hello).
    Unexpected,
    /// The supervisor is shutting down.
    ShuttingDown,
    /// The operation ran but a unit ended up failed.
    Failed,
    /// An argument's value is not valid (a pattern, a time, a setting's value).
    InvalidArgument,
}

/// Responses the supervisor sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// Answer to Hello.
    Hello {
        /// The supervisor's [`PROTOCOL_VERSION`].
        version: u32,
        /// Supervisor version text.
        server: String,
    },
    /// Unit states.
    Status {
        /// One entry per instance.
        units: Vec<UnitStatus>,
    },
    /// Start/stop/restart accepted (and, with `wait`, settled).
    Done {
        /// The states after the operation.
        units: Vec<UnitStatus>,
    },
    /// A reload plan (applied unless it was a dry run).
    Reload {
        /// One entry per unit.
        plan: Vec<PlanEntry>,
        /// Whether it was applied.
        applied: bool,
    },
    /// Text output (dependency trees).
    Text {
        /// The text.
        text: String,
    },
    /// Config values.
    Config {
        /// `(key, value)` pairs.
        values: Vec<(String, String)>,
    },
    /// Failure records, oldest first.
    Failures {
        /// The records.
        records: Vec<FailureRecord>,
    },
    /// The loaded units.
    Units {
        /// One per instance.
        units: Vec<UnitInfo>,
    },
    /// Log channels.
    Channels {
        /// One per channel.
        channels: Vec<ChannelState>,
    },
    /// Log records, oldest first.
    Logs {
        /// The records.
        records: Vec<LogRecord>,
    },
    /// Records a follower missed (it read too slowly, or they left the buffer).
    LogGap {
        /// How many.
        missed: u64,
        /// Why.
        reason: String,
    },
    /// Something went wrong.
    Error {
        /// Machine-readable kind.
        kind: ErrorKind,
        /// What and how to fix it.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::select;

    #[test]
    fn unit_arguments_select_instances_by_name_or_template_once_each() {
        let all = ["api", "worker@1", "worker@2", "workers"];
        let pick = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            select(&all, &args, |u| u).map(|v| v.into_iter().copied().collect::<Vec<_>>())
        };
        assert_eq!(pick(&[]).unwrap(), all);
        assert_eq!(pick(&["worker"]).unwrap(), ["worker@1", "worker@2"]);
        assert_eq!(
            pick(&["worker@2", "worker", "api"]).unwrap(),
            ["worker@2", "worker@1", "api"],
            "each once, in the order asked"
        );
        assert_eq!(
            pick(&["work"]).unwrap_err(),
            "unknown unit `work`; known units: api, worker@1, worker@2, workers"
        );
    }
}
