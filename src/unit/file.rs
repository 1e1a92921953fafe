//! The raw shape of a `NAME.unit.toml` file, as serde reads it (step one: parse).
//!
//! Strings that are expanded or cross-checked later carry their source span
//! (`toml::Spanned`), so validation errors can name `file:line:col`. Unknown keys are
//! rejected (`deny_unknown_fields`): a deliberate break from systemd's warn-and-continue,
//! because a misspelt `requries` silently ignored is an outage waiting to happen.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A string with its position in the file.
pub type Str = Spanned<String>;

/// A whole unit file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitFile {
    /// `[unit]`: description and dependencies.
    #[serde(default)]
    pub unit: UnitSection,
    /// `[service]`: what to run and how.
    pub service: ServiceSection,
    /// `[readiness]`: when a started unit counts as ready.
    pub readiness: Option<ProbeSection>,
    /// `[liveness]`: periodic health check of a ready unit.
    pub liveness: Option<ProbeSection>,
    /// `[restart]`: what happens when the unit's process ends.
    #[serde(default)]
    pub restart: RestartSection,
    /// `[log]`: the unit's log channel.
    #[serde(default)]
    pub log: LogSection,
}

/// `[unit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSection {
    /// One line saying what the unit is.
    pub description: Option<String>,
    /// Started and ready (oneshot: exited 0) before this starts.
    #[serde(default)]
    pub requires: Vec<Str>,
    /// Started first if present; their failure does not block this.
    #[serde(default)]
    pub wants: Vec<Str>,
    /// Ordering only.
    #[serde(default)]
    pub after: Vec<Str>,
    /// Paths that must exist (`!path`: must not exist); unmet: the unit is `skipped`.
    #[serde(default)]
    pub condition_path_exists: Vec<Str>,
    /// N copies `NAME@1..NAME@N`.
    pub instances: Option<Spanned<u32>>,
    /// Lines the supervisor prints once every unit is ready (where to find the service).
    #[serde(default)]
    pub announce: Vec<Str>,
}

/// Service kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// Ready when the readiness probe passes (at once without one).
    #[default]
    Simple,
    /// Ready when the process sends `READY=1` to `NOTIFY_SOCKET`.
    Notify,
    /// Runs to completion; done (`exited`) when it exits 0.
    Oneshot,
    /// Runs elsewhere: nothing is spawned; ready when the readiness probe passes, and
    /// reported `degraded` (never restarted) while its liveness probe fails.
    External,
}

/// `[service]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// `simple` | `notify` | `oneshot` | `external`.
    #[serde(default, rename = "type")]
    pub kind: ServiceType,
    /// Program and arguments (no shell); required except for `external`.
    pub command: Option<Spanned<Vec<Str>>>,
    /// Run as this user when the supervisor is root.
    pub user: Option<Str>,
    /// Run with this group (default: the user's primary group).
    pub group: Option<Str>,
    /// `${paths.data_dir}/NAME`, created 0700 and owned by `user`.
    pub state_directory: Option<Str>,
    /// Working directory.
    pub working_dir: Option<Str>,
    /// Extra environment variables.
    #[serde(default)]
    pub environment: BTreeMap<String, Str>,
    /// Files of `KEY=VALUE` lines (`-path`: optional).
    #[serde(default)]
    pub environment_files: Vec<Str>,
    /// Signal that asks the process to stop.
    pub stop_signal: Option<Str>,
    /// How long to wait after `stop_signal` before SIGKILL to the whole group.
    pub stop_timeout: Option<Spanned<Dur>>,
    /// Oneshot only: not exited by then is a failed start (the process group is killed).
    pub start_timeout: Option<Spanned<Positive>>,
    /// Restart the unit when one of these paths changes.
    #[serde(default)]
    pub watch: Vec<Str>,
    /// TCP addresses the unit binds: checked free before spawning.
    #[serde(default)]
    pub listen: Vec<Str>,
    /// The service's own pid/lock file: removed before a start when the pid it names is
    /// gone or runs another program (left by a crash; PID reuse would block the start).
    pub pid_file: Option<Str>,
}

/// Probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// A TCP connect to `address` succeeds.
    Tcp,
    /// A GET of `url` answers (any status, or `expect_status`).
    Http,
    /// `command` exits 0.
    Exec,
    /// A line of the unit's output matches `pattern`.
    Log,
    /// `READY=1` (readiness) or `WATCHDOG=1` every `interval` (liveness) on NOTIFY_SOCKET.
    Notify,
}

/// `[readiness]` and `[liveness]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    /// The probe kind.
    pub probe: Spanned<ProbeKind>,
    /// `tcp`: `host:port`.
    pub address: Option<Str>,
    /// `http`: `http://host:port/path`.
    pub url: Option<Str>,
    /// `http`: the status that counts as up (default: any).
    pub expect_status: Option<u16>,
    /// `exec`: program and arguments.
    pub command: Option<Vec<Str>>,
    /// `log`: a regular expression.
    pub pattern: Option<Str>,
    /// Time between attempts.
    pub interval: Option<Positive>,
    /// Readiness: deadline for the unit to become ready. Liveness: per-check timeout.
    pub timeout: Option<Positive>,
    /// Liveness: misses in a row that restart the unit.
    pub failure_threshold: Option<Count>,
}

/// Restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart after a non-zero exit, a signal, or a failed probe.
    #[default]
    OnFailure,
    /// Restart whenever the process ends.
    Always,
}

/// `[restart]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSection {
    /// The policy.
    #[serde(default)]
    pub policy: RestartPolicy,
    /// First backoff delay (consecutive failures double it).
    pub delay: Option<Dur>,
    /// Backoff ceiling.
    pub max_delay: Option<Dur>,
    /// More than `burst` starts within `interval`: `failed`.
    pub burst: Option<Count>,
    /// The burst window.
    pub interval: Option<Positive>,
    /// A run this long counts as stable and resets the backoff.
    pub reset_after: Option<Dur>,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines that are JSON objects are merged as fields; others are text.
    #[default]
    Auto,
    /// Plain text lines, never parsed as JSON.
    Text,
    /// JSON lines, merged as structured fields (others fall back to text).
    Json,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Channel name (default: the unit name).
    pub channel: Option<String>,
    /// Whether the channel reaches the unified output.
    pub enabled: Option<bool>,
    /// `auto` | `text` | `json`.
    #[serde(default)]
    pub format: LogFormat,
}

/// A duration written with units: `100ms`, `30s`, `5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}` ({e}); write a number with a unit, e.g. \"100ms\", \"30s\", \"5m\""
            ))
        })
    }
}

/// A duration that must be more than zero (an interval of 0 would spin, a timeout of 0
/// could never be met).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positive(pub Duration);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Dur(t) = Dur::deserialize(d)?;
        if t.is_zero() {
            return Err(serde::de::Error::custom(
                "must be more than 0 (an interval of 0 would spin, a timeout of 0 can never be met); write e.g. \"100ms\"",
            ));
        }
        Ok(Positive(t))
    }
}

/// A count that must be at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(std::num::NonZeroU32);

impl Count {
    /// The count.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        std::num::NonZeroU32::new(n)
            .map(Count)
            .ok_or_else(|| serde::de::Error::custom("must be at least 1 (0 would allow nothing)"))
    }
}
