//! Running sources inside the data-manager.
//!
//! - `nats`: the `tmidb-manager` consumer of `TMIDB_INGEST`; a message is a JSON object,
//!   a JSON array of them, or NDJSON; acknowledged once its records (and dead letters)
//!   are in `TMIDB_DATA`, so nothing is lost if the data-manager dies in between.
//! - `file`: a watched directory; each CSV / NDJSON / JSON file, once it has stopped
//!   changing, is ingested and moved to `done/` (or `failed/` when it cannot be read)
//!   with a `NAME.report.json` beside it.
//! - `exec`: a program whose stdout lines are NDJSON records; restarted with backoff
//!   (1 s doubling to 60 s, reset after a minute of running), like a unit.
//! - `http_poll`: a URL fetched every interval; records are picked with JSON pointers,
//!   and only records newer than the newest already taken per target are published
//!   (remembered in `source_state` across restarts).
//!
//! [`supervise`] (re)starts the runners of enabled sources whenever a source changes
//! (NOTIFY `tmidb_sources`, with a full re-sync every minute as a safety net); schema
//! changes reach the [`Manager`]'s cache through its follower.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::payload::{Format, Item};
use super::{Manager, PushError};
use crate::backoff::Backoff;
use crate::db::categories::CategoryError;
use crate::db::sources::{Source, SourceKind};
use crate::model::schema::Problem;
use crate::model::transform::Transform;

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

fn typed<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, Vec<Problem>> {
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

fn duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| d.as_secs() >= 1)
}

/// How long a source holds its input while the pipeline is busy or full, or NATS or
/// PostgreSQL is away: that wait is the back-pressure.
const PATIENCE: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// Runs `attempt` until it succeeds or fails for good (not [`PushError::is_transient`]),
/// waiting [`PATIENCE`] between tries.
async fn patiently<T, F>(source: &str, mut attempt: impl FnMut() -> F) -> Result<T, PushError>
where
    F: std::future::Future<Output = Result<T, PushError>>,
{
    let mut retry = PATIENCE.retry();
    loop {
        match attempt().await {
            Err(e) if e.is_transient() => {
                tracing::debug!(source, "records not taken yet, retrying: {e}");
                retry.wait().await;
            }
            other => return other,
        }
    }
}

/// Largest file a `file` source reads (bigger ones go to `failed/`).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Runs the `tmidb-manager` consumer of raw NATS records until the process ends.
pub async fn run_nats(m: Arc<Manager>, consumer: async_nats::jetstream::consumer::PullConsumer) {
    loop {
        // Messages are handled one at a time: pull only a few ahead (a raw message can
        // be megabytes; the default of 200 ahead cost 100 MiB of buffers).
        let mut msgs = match consumer.stream().max_messages_per_batch(8).messages().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot pull raw NATS records: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(msg) = msgs.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("raw NATS record pull failed: {e}");
                    continue;
                }
            };
            let category = msg
                .subject
                .strip_prefix(crate::pipeline::INGEST_PREFIX)
                .unwrap_or("")
                .to_string();
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let label = format!("stream sequence {seq}");
            let result = match m.implicit_source(&category, SourceKind::Nats).await {
                Ok(s) => {
                    let (name, transform) = s
                        .map(|s| (s.name, s.transform))
                        .unwrap_or_else(|| ("nats".into(), Transform::default()));
                    patiently(&name, || {
                        m.take(
                            &category,
                            &name,
                            &transform,
                            Format::Sniff,
                            &msg.payload,
                            &label,
                        )
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => {
                    if !r.dead.is_empty() {
                        tracing::warn!(
                            category,
                            seq,
                            rejected = r.dead.len(),
                            "NATS records rejected (see the dead letters)"
                        );
                    }
                    let _ = msg.ack().await;
                }
                Err(PushError::Category(CategoryError::NotFound(why))) => {
                    // No such category: nothing could ever take these records.
                    tracing::error!(subject = %msg.subject, seq, "raw NATS records dropped: {why}");
                    let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
                }
                Err(e) => {
                    tracing::warn!(category, seq, "raw NATS records not taken yet: {e}");
                    let _ = msg
                        .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                            Duration::from_secs(2),
                        )))
                        .await;
                }
            }
        }
    }
}

/// Keeps one runner per enabled `file` / `exec` / `http_poll` source, re-synced on
/// every source change.
pub async fn supervise(m: Arc<Manager>, mut listener: sqlx::postgres::PgListener) {
    // Per running source: its version (`updated_at`), name and task.
    let mut running: HashMap<Uuid, (DateTime<Utc>, String, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        match crate::db::sources::list(&m.pool).await {
            Ok(all) => {
                let wanted: Vec<&Source> = all
                    .iter()
                    .filter(|s| {
                        s.enabled
                            && matches!(
                                s.kind,
                                SourceKind::File | SourceKind::Exec | SourceKind::HttpPoll
                            )
                    })
                    .collect();
                running.retain(|id, (at, name, task)| {
                    let keep = wanted.iter().any(|s| s.id == *id && s.updated_at == *at);
                    if !keep {
                        task.abort();
                        tracing::info!(source = %name, "source stopped: changed, disabled or removed");
                    }
                    keep
                });
                for s in wanted {
                    if let std::collections::hash_map::Entry::Vacant(e) = running.entry(s.id) {
                        tracing::info!(source = %s.name, kind = s.kind.as_str(), category = %s.category, "source started");
                        e.insert((
                            s.updated_at,
                            s.name.clone(),
                            tokio::spawn(run_source(m.clone(), s.clone())),
                        ));
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read the sources: {e}"),
        }
        // Wait for a change (or a minute, as a safety net).
        match tokio::time::timeout(Duration::from_secs(60), listener.recv()).await {
            Ok(Ok(_)) => m.sources_changed(),
            Ok(Err(e)) => {
                tracing::warn!("source change listener: {e}; re-syncing");
                m.sources_changed();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => {}
        }
    }
}

async fn run_source(m: Arc<Manager>, s: Source) {
    let outcome = match s.kind {
        SourceKind::File => match typed::<FileConfig>(&s.config) {
            Ok(c) => run_file(&m, &s, c).await,
            Err(e) => Err(format!("{e:?}")),
        },
        SourceKind::Exec => match typed::<ExecConfig>(&s.config) {
            Ok(c) => run_exec(&m, &s, c).await,
            Err(e) => Err(format!("{e:?}")),
        },
        SourceKind::HttpPoll => match typed::<PollConfig>(&s.config) {
            Ok(c) => run_poll(&m, &s, c).await,
            Err(e) => Err(format!("{e:?}")),
        },
        SourceKind::HttpPush | SourceKind::Nats => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::error!(source = %s.name, "source stopped: {e}");
    }
}

fn unique_in(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3f");
    dir.join(format!("{}.{stamp}", name.to_string_lossy()))
}

async fn run_file(m: &Manager, s: &Source, c: FileConfig) -> Result<(), String> {
    let dir = m.cfg.home.join(&c.path);
    let (done, failed) = (dir.join("done"), dir.join("failed"));
    for d in [&dir, &done, &failed] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    // Size and mtime per file at the last look: a file is taken once they stop changing.
    let mut last: HashMap<PathBuf, (u64, std::time::SystemTime)> = HashMap::new();
    loop {
        let mut pending = false;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file()
                || name.starts_with('.')
                || name.ends_with(".tmp")
                || name.ends_with(".part")
            {
                continue;
            }
            let now = (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
            if last.get(&path) != Some(&now) {
                last.insert(path.clone(), now);
                pending = true;
                continue;
            }
            last.remove(&path);
            ingest_file(m, s, &path, meta.len(), &done, &failed).await;
        }
        let wait = if pending {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let _ = tokio::time::timeout(wait, rx.recv()).await;
        if pending {
            // Let a writer finish: look again only after a quiet half second.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn ingest_file(m: &Manager, s: &Source, path: &Path, len: u64, done: &Path, failed: &Path) {
    let name = path.file_name().unwrap_or_default().to_owned();
    let outcome: Result<crate::web::intake::InsertResult, String> = async {
        if len > MAX_FILE_BYTES {
            return Err(format!(
                "{len} bytes is more than {MAX_FILE_BYTES}; split the file"
            ));
        }
        let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
        let label = name.to_string_lossy();
        let format = Format::of_file(path);
        patiently(&s.name, || {
            m.take(&s.category, &s.name, &s.transform, format, &bytes, &label)
        })
        .await
        .map(|p| p.result())
        .map_err(|e| e.to_string())
    }
    .await;
    let (to, report) = match &outcome {
        Ok(r) => (
            unique_in(done, &name),
            serde_json::json!({"file": name.to_string_lossy(), "source": s.name, "category": s.category,
                "accepted": r.accepted, "rejected": r.rejected, "schema_version": r.schema_version,
                "errors": r.errors.iter().map(|e| serde_json::json!({"index": e.index, "field": e.field, "reason": e.reason})).collect::<Vec<_>>(),
                "at": Utc::now()}),
        ),
        Err(e) => (
            unique_in(failed, &name),
            serde_json::json!({"file": name.to_string_lossy(), "source": s.name, "category": s.category,
                "error": e, "at": Utc::now()}),
        ),
    };
    if let Err(e) = std::fs::rename(path, &to) {
        tracing::error!(source = %s.name, file = %path.display(), "cannot move the file to {}: {e}", to.display());
        return;
    }
    let report_path = PathBuf::from(format!("{}.report.json", to.display()));
    let _ = std::fs::write(
        &report_path,
        serde_json::to_vec_pretty(&report).expect("json"),
    );
    match outcome {
        Ok(r) => {
            tracing::info!(source = %s.name, file = %to.display(), accepted = r.accepted, rejected = r.rejected, "file ingested")
        }
        Err(e) => tracing::warn!(source = %s.name, file = %to.display(), "file failed: {e}"),
    }
}

async fn run_exec(m: &Manager, s: &Source, c: ExecConfig) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).retry();
    loop {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&c.command[0]);
        cmd.args(&c.command[1..])
            .envs(&c.env)
            .env("TMIDB_SOURCE", &s.name)
            .env("TMIDB_CATEGORY", &s.category)
            .current_dir(&m.cfg.home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        match cmd.spawn() {
            Err(e) => tracing::error!(source = %s.name, "cannot run {:?}: {e}", c.command),
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                tracing::info!(source = %s.name, pid, "exec source running {:?}", c.command);
                let stderr = child.stderr.take().expect("piped");
                let name = s.name.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        tracing::warn!(source = %name, "{l}");
                    }
                });
                let mut lines =
                    tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
                let mut n = 0u64;
                let mut batch: Vec<Item> = vec![];
                loop {
                    // Up to 1000 lines, or whatever arrived within 200 ms.
                    let line = if batch.is_empty() {
                        lines.next_line().await.map(Some)
                    } else {
                        match tokio::time::timeout(Duration::from_millis(200), lines.next_line())
                            .await
                        {
                            Ok(r) => r.map(Some),
                            Err(_) => Ok(None),
                        }
                    };
                    let (flush, end) = match line {
                        Ok(Some(Some(l))) => {
                            n += 1;
                            if !l.trim().is_empty() {
                                batch.push(Item::line(
                                    format!("pid {pid} line {n}"),
                                    l.trim().as_bytes(),
                                ));
                            }
                            (batch.len() >= 1000, false)
                        }
                        Ok(Some(None)) | Err(_) => (true, true),
                        Ok(None) => (true, false),
                    };
                    if flush && !batch.is_empty() {
                        let items = std::mem::take(&mut batch);
                        let submitted = patiently(&s.name, || {
                            m.submit(&s.category, &s.name, &s.transform, items.clone())
                        })
                        .await;
                        match submitted {
                            Ok(r) if !r.dead.is_empty() => {
                                tracing::warn!(source = %s.name, rejected = r.dead.len(), "records rejected (see the dead letters)")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::error!(source = %s.name, "records not taken: {e}"),
                        }
                    }
                    if end {
                        break;
                    }
                }
                let status = child.wait().await;
                tracing::warn!(source = %s.name, "exec source exited ({status:?}) after {n} lines");
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            retry.reset();
        }
        retry.wait().await;
    }
}

/// Picks records out of a polled document.
pub fn poll_items(doc: &Value, c: &PollConfig, position: &str) -> Result<Vec<Item>, String> {
    let list = if c.records.is_empty() {
        doc
    } else {
        doc.pointer(&c.records)
            .ok_or_else(|| format!("the response has nothing at {}", c.records))?
    };
    let items: Vec<&Value> = match list {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let raw = if c.fields.is_empty() {
                item.clone()
            } else {
                Value::Object(
                    c.fields
                        .iter()
                        .filter_map(|(name, ptr)| {
                            item.pointer(ptr).map(|v| (name.clone(), v.clone()))
                        })
                        .collect(),
                )
            };
            Item::new(format!("{position} item {i}"), raw)
        })
        .collect())
}

async fn run_poll(m: &Manager, s: &Source, c: PollConfig) -> Result<(), String> {
    let every = duration(&c.interval).unwrap_or(Duration::from_secs(30));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    // Newest time taken per target.
    let mut seen: BTreeMap<String, DateTime<Utc>> = crate::db::sources::load_state(&m.pool, s.id)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|v| serde_json::from_value(v["seen"].clone()).ok())
        .unwrap_or_default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut req = http.get(&c.url);
        for (k, v) in &c.headers {
            req = req.header(k, v);
        }
        let doc: Value = match req.send().await.and_then(|r| r.error_for_status()) {
            Ok(r) => match r.json().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(source = %s.name, url = %c.url, "the response is not JSON: {e}");
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(source = %s.name, url = %c.url, "poll failed: {e}");
                continue;
            }
        };
        let position = format!(
            "poll {}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let items = match poll_items(&doc, &c, &position) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(source = %s.name, url = %c.url, "{e}");
                continue;
            }
        };
        let schema = match m.schema(&s.category).await {
            Ok(schema) => schema,
            Err(e) => {
                tracing::warn!(source = %s.name, "{e}");
                continue;
            }
        };
        let mut p = super::prepare(&schema, &s.name, &s.transform, items);
        p.records
            .retain(|r| seen.get(&r.target).is_none_or(|t| r.ts > *t));
        if p.records.is_empty() && p.dead.is_empty() {
            continue;
        }
        if let Err(e) = patiently(&s.name, || super::publish(&m.js, &m.cfg, &s.category, &p)).await
        {
            tracing::warn!(source = %s.name, "poll not taken: {e}");
            continue;
        }
        for r in &p.records {
            let t = seen.entry(r.target.clone()).or_insert(r.ts);
            if r.ts > *t {
                *t = r.ts;
            }
        }
        if let Err(e) =
            crate::db::sources::save_state(&m.pool, s.id, &serde_json::json!({"seen": seen})).await
        {
            tracing::warn!(source = %s.name, "cannot remember what was taken: {e}");
        }
        tracing::info!(source = %s.name, accepted = p.records.len(), rejected = p.dead.len(), "poll ingested");
    }
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

    #[test]
    fn items_picked_from_polled_documents() {
        let c: PollConfig = serde_json::from_value(
            json!({"url": "http://x", "records": "/data/items", "fields": {"target": "/id", "v": "/m/v"}}),
        )
        .unwrap();
        let doc = json!({"data": {"items": [{"id": "s1", "m": {"v": 3}}, {"id": "s2"}]}});
        let items = poll_items(&doc, &c, "poll").unwrap();
        assert_eq!(items[0].raw, json!({"target": "s1", "v": 3}));
        assert_eq!(items[1].raw, json!({"target": "s2"}));
        assert!(poll_items(&json!({}), &c, "poll").is_err());
    }
}
