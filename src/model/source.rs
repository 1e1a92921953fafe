//! Ingestion sources: their kinds, the definition as stored, the settings of each kind
//! and the rules those settings must meet ([`check_config`]). The data-manager runs
//! them ([`crate::ingest::sources`]); [`crate::db::sources`] stores them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::schema::Problem;
use crate::model::transform::Transform;

/// How a source gets its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum SourceKind {
    /// `POST /ingest/{category}` on the ingest port.
    HttpPush,
    /// Messages on `tmidb.ingest.{category}` (kept in the TMIDB_INGEST stream).
    Nats,
    /// A URL fetched every interval.
    HttpPoll,
    /// CSV / NDJSON files dropped in a directory.
    File,
    /// A program writing NDJSON records to stdout.
    Exec,
}

impl SourceKind {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::HttpPush => "http_push",
            SourceKind::Nats => "nats",
            SourceKind::HttpPoll => "http_poll",
            SourceKind::File => "file",
            SourceKind::Exec => "exec",
        }
    }

    /// Parses a stored name (an unknown one reads as `http_push`).
    pub fn parse(s: &str) -> SourceKind {
        serde_json::from_value(Value::String(s.into())).unwrap_or(SourceKind::HttpPush)
    }
}

/// A source as stored and shown.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct Source {
    /// Id.
    pub id: Uuid,
    /// Name (unique): lowercase letters, digits, `_`, `.`, `-`.
    pub name: String,
    /// The category its records belong to.
    pub category: String,
    // How it gets records (a plain $ref in the spec).
    pub kind: SourceKind,
    /// Kind-specific settings (see the `SourceDefinition` description).
    pub config: Value,
    /// Transformation applied before validation.
    pub transform: Transform,
    /// Disabled sources are kept but not run.
    pub enabled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// `http_poll` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// URL fetched (GET).
    pub url: String,
    /// Between fetches (default `30s`).
    #[serde(default = "thirty_seconds")]
    pub interval: String,
    /// JSON pointer to the array of records in the response (default: the whole
    /// response, an array or one object).
    #[serde(default)]
    pub records: String,
    /// Field name → JSON pointer within one item (default: the item as it is).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Request headers (e.g. an API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn thirty_seconds() -> String {
    "30s".into()
}

/// `file` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory watched (relative paths are under the tmiDB home); `done/` and
    /// `failed/` are created inside it.
    pub path: PathBuf,
}

/// `exec` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoConfig {}

/// Reads `config` as the settings `T` of a kind (an unknown key is a problem named
/// `config`).
pub fn typed<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, Vec<Problem>> {
    serde_json::from_value(config.clone()).map_err(|e| vec![Problem::new("config", e.to_string())])
}

/// Checks a source's kind-specific settings; problems are named `config.KEY`.
pub fn check_config(kind: SourceKind, config: &Value) -> Vec<Problem> {
    let result = match kind {
        SourceKind::HttpPush | SourceKind::Nats => typed::<NoConfig>(config).map(|_| vec![]),
        SourceKind::HttpPoll => typed::<PollConfig>(config).map(|c| {
            let mut out = vec![];
            if reqwest::Url::parse(&c.url).is_err()
                || !(c.url.starts_with("http://") || c.url.starts_with("https://"))
            {
                out.push(Problem::new(
                    "config.url",
                    format!("`{}` is not an http(s) URL", c.url),
                ));
            }
            if duration(&c.interval).is_none() {
                out.push(Problem::new(
                    "config.interval",
                    format!("`{}` is not a duration of at least 1s", c.interval),
                ));
            }
            for (k, p) in std::iter::once(("records", &c.records))
                .chain(c.fields.iter().map(|(k, v)| (k.as_str(), v)))
            {
                if !p.is_empty() && !p.starts_with('/') {
                    out.push(Problem::new(
                        &format!("config.{k}"),
                        format!("`{p}` is not a JSON pointer (it starts with /)"),
                    ));
                }
            }
            out
        }),
        SourceKind::File => typed::<FileConfig>(config).map(|c| {
            if c.path.as_os_str().is_empty() {
                vec![Problem::new("config.path", "must name a directory")]
            } else {
                vec![]
            }
        }),
        SourceKind::Exec => typed::<ExecConfig>(config).map(|c| {
            if c.command.first().is_none_or(|p| p.is_empty()) {
                vec![Problem::new(
                    "config.command",
                    "must name a program, e.g. [\"/usr/bin/my-reader\", \"--json\"]",
                )]
            } else {
                vec![]
            }
        }),
    };
    result.unwrap_or_else(|e| e)
}

/// A source interval of at least one second (`30s`, `5m`).
pub fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| d.as_secs() >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_are_checked_per_kind() {
        assert!(check_config(SourceKind::Nats, &json!({})).is_empty());
        let p = check_config(SourceKind::Nats, &json!({"subject": "x"}));
        assert!(p[0].reason.contains("unknown field"), "{p:?}");
        let p = check_config(
            SourceKind::HttpPoll,
            &json!({"url": "ftp://x", "interval": "soon", "fields": {"v": "a/b"}}),
        );
        let names: Vec<_> = p.iter().map(|x| x.field.clone().unwrap()).collect();
        assert_eq!(
            names,
            ["config.url", "config.interval", "config.v"],
            "{p:?}"
        );
        assert!(!check_config(SourceKind::Exec, &json!({"command": []})).is_empty());
        assert!(check_config(SourceKind::File, &json!({"path": "drop"})).is_empty());
    }
}
