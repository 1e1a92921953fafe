//! Logs: every line a child writes, and every event of the supervisor, as a
//! [`LogRecord`] `{seq, ts, unit, instance, channel, stream, level, msg, fields}`.
//!
//! Records are committed a batch at a time (the lines of one read of a pipe), and a
//! batch is one allocation shared by the places a record goes: each of its records is
//! a [`Committed`] (the batch and an index) rather than an allocation of its own.
//! Records flow three ways from [`LogHub::commit`]:
//! - into a bounded ring per unit instance (`logs show`, failure records, log probes);
//! - to followers (`logs follow`) through a broadcast channel: a follower that reads too
//!   slowly misses records and is told so (a gap with a count); it never slows a child;
//! - to the sinks (`sink`: stdout, journald, files) through a bounded queue. A child
//!   waits for that queue for at most [`SINK_WAIT`], so a fast sink loses nothing while
//!   a stuck one (a paused terminal) cannot freeze the stack; what is dropped is counted
//!   per unit and shown by `status`.
//!
//! Channels (`[log] channel`) filter the unified output (stdout and journald): enabled or
//! not, and a lowest level. Runtime changes are persisted in `HOME/tmidb.state.json`.

mod capture;
mod classify;
pub mod layer;
pub mod sink;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Map;
use tokio::sync::{broadcast, mpsc};

use crate::control::protocol::{ChannelState, Level, LogRecord, Stream};
pub use classify::{classify, text_level};

/// Longest line kept whole; longer lines are split into several records.
pub const MAX_LINE: usize = 64 * 1024;

/// How long a child's output waits for a full sink queue before lines are dropped.
pub const SINK_WAIT: Duration = Duration::from_secs(1);

/// Records a follower may fall behind before it gets a gap.
const FOLLOW_BUFFER: usize = 64 * 1024;

/// Output format of the unified stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text on a TTY, JSON otherwise.
    Auto,
    /// `time unit | message` lines.
    Text,
    /// One JSON record per line.
    Json,
}

impl Format {
    /// Resolves `Auto` against stdout.
    pub fn resolve(self) -> Format {
        match self {
            Format::Auto if std::io::stdout().is_terminal() => Format::Text,
            Format::Auto => Format::Json,
            f => f,
        }
    }
}

/// Runtime overrides of one channel (persisted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelOverride {
    /// Enabled in the unified output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Lowest level in the unified output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
}

/// Settings the supervisor owns at run time, persisted in `HOME/tmidb.state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSettings {
    /// Per-channel overrides.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelOverride>,
    /// Ring size override (lines per unit instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_lines: Option<usize>,
}

/// What the unified output lets through, per channel: (enabled, lowest level).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    channels: HashMap<String, (bool, Level)>,
}

/// What the unified output lets through of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRule {
    enabled: bool,
    min: Level,
}

impl ChannelRule {
    /// Whether a record at `level` passes.
    pub fn passes(self, level: Level) -> bool {
        self.enabled && level >= self.min
    }
}

impl Filter {
    /// Whether a record of `channel` at `level` reaches the unified output.
    pub fn passes(&self, channel: &str, level: Level) -> bool {
        self.rule(channel).passes(level)
    }

    /// The rule of `channel` (every record of a channel the filter does not know
    /// passes).
    pub fn rule(&self, channel: &str) -> ChannelRule {
        match self.channels.get(channel) {
            Some(&(enabled, min)) => ChannelRule { enabled, min },
            None => ChannelRule {
                enabled: true,
                min: Level::Trace,
            },
        }
    }
}

/// Identity of one captured unit instance.
#[derive(Debug, Clone)]
pub struct Source {
    /// Unit name without the instance.
    pub unit: Arc<str>,
    /// Instance number.
    pub instance: Option<u32>,
    /// Instance name (ring key).
    pub name: String,
    /// Log channel.
    pub channel: Arc<str>,
    /// Merge JSON lines as fields.
    pub json: bool,
}

struct Watcher {
    unit: String,
    pattern: regex::Regex,
    tx: tokio::sync::oneshot::Sender<String>,
}

struct Rings {
    next_seq: u64,
    lines: usize,
    /// Lines committed per unit instance since the start.
    counts: HashMap<String, u64>,
    by_unit: HashMap<String, VecDeque<Committed>>,
}

/// A committed record: one of a batch's records, sharing the batch's allocation with
/// the others (read it through `Deref`). The batch lives while any of its records is
/// in a ring, a follower's queue or a sink's.
#[derive(Clone)]
pub struct Committed {
    batch: Arc<[LogRecord]>,
    at: usize,
}

impl std::ops::Deref for Committed {
    type Target = LogRecord;

    fn deref(&self) -> &LogRecord {
        &self.batch[self.at]
    }
}

impl std::fmt::Debug for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        LogRecord::fmt(self, f)
    }
}

/// The log hub shared by capture tasks, probes, the supervisor and the control server.
pub struct LogHub {
    rings: Mutex<Rings>,
    watchers: Mutex<Vec<Watcher>>,
    followers: broadcast::Sender<Committed>,
    sink: mpsc::Sender<sink::SinkMsg>,
    dropped: Mutex<HashMap<String, u64>>,
    filter: Arc<RwLock<Filter>>,
    /// Unit-file defaults per channel: (enabled), and the units on it.
    defaults: Mutex<BTreeMap<String, (bool, Vec<String>)>>,
    settings: Mutex<RuntimeSettings>,
    state_path: Option<PathBuf>,
    ring_default: AtomicU64,
    /// The pipes being read, and the thread reading them.
    captures: capture::Captures,
}

impl LogHub {
    /// A hub whose sinks are described by `cfg`; runtime settings are loaded from (and
    /// saved to) `state_path`.
    pub fn new(
        cfg: sink::SinkConfig,
        ring_lines: usize,
        state_path: Option<PathBuf>,
    ) -> Arc<LogHub> {
        // Batches hold up to a pipe buffer of lines each: 16 bound memory to a few MB.
        let (tx, rx) = mpsc::channel(16);
        let filter = Arc::new(RwLock::new(Filter::default()));
        sink::spawn(cfg, rx, filter.clone());
        let settings: RuntimeSettings = state_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let lines = settings.ring_lines.unwrap_or(ring_lines).max(1);
        let (followers, _) = broadcast::channel(FOLLOW_BUFFER);
        let hub = Arc::new(LogHub {
            rings: Mutex::new(Rings {
                next_seq: 1,
                lines,
                counts: HashMap::new(),
                by_unit: HashMap::new(),
            }),
            watchers: Mutex::new(vec![]),
            followers,
            sink: tx,
            dropped: Mutex::new(HashMap::new()),
            filter,
            defaults: Mutex::new(BTreeMap::new()),
            settings: Mutex::new(settings),
            state_path,
            ring_default: AtomicU64::new(ring_lines as u64),
            captures: capture::Captures::default(),
        });
        hub.refresh_filter();
        hub
    }

    /// Declares the channels of the loaded units: `(instance, channel, enabled by default)`.
    pub fn set_units(&self, units: &[(String, String, bool)]) {
        let mut d = self.defaults.lock().expect("lock");
        d.clear();
        d.insert("supervisor".into(), (true, vec!["supervisor".into()]));
        for (unit, channel, enabled) in units {
            let e = d.entry(channel.clone()).or_insert((*enabled, vec![]));
            e.0 |= *enabled;
            e.1.push(unit.clone());
        }
        drop(d);
        self.refresh_filter();
    }

    /// Every channel with its effective state.
    pub fn channels(&self) -> Vec<ChannelState> {
        let d = self.defaults.lock().expect("lock");
        let s = self.settings.lock().expect("lock");
        d.iter()
            .map(|(ch, (enabled, units))| {
                let o = s.channels.get(ch).cloned().unwrap_or_default();
                ChannelState {
                    channel: ch.clone(),
                    units: units.clone(),
                    enabled: o.enabled.unwrap_or(*enabled),
                    level: o.level.unwrap_or(Level::Trace),
                }
            })
            .collect()
    }

    /// Whether `channel` is known.
    pub fn has_channel(&self, channel: &str) -> bool {
        self.defaults.lock().expect("lock").contains_key(channel)
    }

    /// Changes channel settings and persists them.
    pub fn set_channel(
        &self,
        channel: &str,
        enabled: Option<bool>,
        level: Option<Level>,
    ) -> std::io::Result<()> {
        {
            let mut s = self.settings.lock().expect("lock");
            let o = s.channels.entry(channel.to_string()).or_default();
            if enabled.is_some() {
                o.enabled = enabled;
            }
            if level.is_some() {
                o.level = level;
            }
        }
        self.refresh_filter();
        self.save()
    }

    /// Changes the ring size (lines per unit instance) and persists it.
    pub fn set_ring_lines(&self, lines: usize) -> std::io::Result<()> {
        let lines = lines.max(1);
        self.settings.lock().expect("lock").ring_lines = Some(lines);
        let mut r = self.rings.lock().expect("lock");
        r.lines = lines;
        for ring in r.by_unit.values_mut() {
            while ring.len() > lines {
                ring.pop_front();
            }
        }
        drop(r);
        self.save()
    }

    /// The effective ring size.
    pub fn ring_lines(&self) -> usize {
        self.rings.lock().expect("lock").lines
    }

    /// The ring size from tmidb.toml (before runtime overrides).
    pub fn ring_lines_default(&self) -> usize {
        self.ring_default.load(Ordering::Relaxed) as usize
    }

    fn refresh_filter(&self) {
        let d = self.defaults.lock().expect("lock");
        let s = self.settings.lock().expect("lock");
        let mut f = Filter::default();
        for (ch, (enabled, _)) in d.iter() {
            let o = s.channels.get(ch).cloned().unwrap_or_default();
            f.channels.insert(
                ch.clone(),
                (
                    o.enabled.unwrap_or(*enabled),
                    o.level.unwrap_or(Level::Trace),
                ),
            );
        }
        *self.filter.write().expect("lock") = f;
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.state_path else {
            return Ok(());
        };
        let text =
            serde_json::to_string_pretty(&*self.settings.lock().expect("lock")).expect("json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// Numbers records of one unit instance (`name`), keeps them in its ring, hands
    /// them to followers and log probes. Returns them for the sinks.
    pub fn commit(&self, name: &str, mut batch: Vec<LogRecord>) -> Arc<[LogRecord]> {
        let batch: Arc<[LogRecord]> = {
            let mut guard = self.rings.lock().expect("lock");
            let r = &mut *guard;
            let lines = r.lines;
            match r.counts.get_mut(name) {
                Some(n) => *n += batch.len() as u64,
                None => {
                    r.counts.insert(name.to_string(), batch.len() as u64);
                }
            }
            for rec in &mut batch {
                rec.seq = r.next_seq;
                r.next_seq += 1;
            }
            let batch: Arc<[LogRecord]> = batch.into();
            let ring = match r.by_unit.get_mut(name) {
                Some(ring) => ring,
                None => r.by_unit.entry(name.to_string()).or_default(),
            };
            // Asked once a batch: a follower subscribing after this reads the batch from
            // the ring (it subscribes first, then reads the ring, which this lock holds).
            let followed = self.followers.receiver_count() > 0;
            for at in 0..batch.len() {
                let rec = Committed {
                    batch: batch.clone(),
                    at,
                };
                // Sent under the lock, so followers see records in sequence order.
                if followed {
                    let _ = self.followers.send(rec.clone());
                }
                if ring.len() >= lines {
                    ring.pop_front();
                }
                ring.push_back(rec);
            }
            batch
        };
        // Rings first, watchers second: see `watch_since`.
        let mut w = self.watchers.lock().expect("lock");
        if !w.is_empty() {
            for rec in batch.iter() {
                let mut i = 0;
                while i < w.len() {
                    if w[i].unit == name && w[i].pattern.is_match(&rec.msg) {
                        let hit = w.swap_remove(i);
                        let _ = hit.tx.send(rec.msg.clone());
                    } else {
                        i += 1;
                    }
                }
            }
        }
        batch
    }

    /// Commits and hands to the sinks without waiting (the supervisor's own events).
    pub fn push_now(&self, rec: LogRecord) {
        let unit = rec.instance_name();
        let recs = self.commit(&unit, vec![rec]);
        if self.sink.try_send(sink::SinkMsg::Batch(recs)).is_err() {
            self.count_dropped(&unit, 1);
        }
    }

    /// Commits and hands to the sinks, waiting up to [`SINK_WAIT`] for room.
    pub async fn push(&self, unit: &str, batch: Vec<LogRecord>) {
        let n = batch.len() as u64;
        let recs = self.commit(unit, batch);
        if self
            .sink
            .send_timeout(sink::SinkMsg::Batch(recs), SINK_WAIT)
            .await
            .is_err()
        {
            self.count_dropped(unit, n);
        }
    }

    /// As [`LogHub::push`], from a thread outside the runtime (a capture's): waits for
    /// room by retrying every millisecond, so it needs no timer of the runtime's (which
    /// may be shutting down while a child still writes).
    fn push_blocking(&self, unit: &str, batch: Vec<LogRecord>) {
        let n = batch.len() as u64;
        let mut msg = sink::SinkMsg::Batch(self.commit(unit, batch));
        let deadline = std::time::Instant::now() + SINK_WAIT;
        loop {
            match self.sink.try_send(msg) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(back))
                    if std::time::Instant::now() < deadline =>
                {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => break,
            }
        }
        self.count_dropped(unit, n);
    }

    /// Waits (up to 10 s) until the sinks have written and flushed everything before.
    pub async fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self
            .sink
            .send_timeout(sink::SinkMsg::Flush(tx), Duration::from_secs(2))
            .await
            .is_ok()
        {
            let _ =
                tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10))).await;
        }
    }

    fn count_dropped(&self, unit: &str, n: u64) {
        *self
            .dropped
            .lock()
            .expect("lock")
            .entry(unit.to_string())
            .or_default() += n;
    }

    /// Lines a unit instance (or `supervisor`) wrote since the supervisor started.
    pub fn lines(&self, unit: &str) -> u64 {
        let r = self.rings.lock().expect("lock");
        r.counts.get(unit).copied().unwrap_or(0)
    }

    /// Lines of a unit instance the sinks had to drop.
    pub fn dropped(&self, unit: &str) -> u64 {
        self.dropped
            .lock()
            .expect("lock")
            .get(unit)
            .copied()
            .unwrap_or(0)
    }

    /// The sequence number of the latest record.
    pub fn last_seq(&self) -> u64 {
        self.rings.lock().expect("lock").next_seq - 1
    }

    /// Messages of the last `n` lines of a unit instance recorded after sequence `since`.
    pub fn tail_since(&self, unit: &str, since: u64, n: usize) -> Vec<String> {
        let r = self.rings.lock().expect("lock");
        let Some(ring) = r.by_unit.get(unit) else {
            return vec![];
        };
        let mut out: Vec<String> = ring
            .iter()
            .rev()
            .take_while(|r| r.seq > since)
            .take(n)
            .map(|r| r.msg.clone())
            .collect();
        out.reverse();
        out
    }

    /// Buffered records of the named instances (all when empty) with `seq > after`,
    /// in sequence order.
    pub fn buffered(&self, units: &[String], after: u64) -> Vec<Committed> {
        let r = self.rings.lock().expect("lock");
        let mut out: Vec<Committed> = r
            .by_unit
            .iter()
            .filter(|(name, _)| units.is_empty() || units.contains(name))
            .flat_map(|(_, ring)| ring.iter().filter(|x| x.seq > after).cloned())
            .collect();
        out.sort_by_key(|x| x.seq);
        out
    }

    /// The oldest sequence number still buffered for the named instances.
    pub fn oldest_buffered(&self, units: &[String]) -> Option<u64> {
        let r = self.rings.lock().expect("lock");
        r.by_unit
            .iter()
            .filter(|(name, _)| units.is_empty() || units.contains(name))
            .filter_map(|(_, ring)| ring.front().map(|x| x.seq))
            .min()
    }

    /// A live feed of every record committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.followers.subscribe()
    }

    /// Waits for a line of `unit` after sequence `since` matching `pattern` (a log
    /// readiness probe). Lines that arrived before the call count too: the probe starts
    /// after the spawn, and a fast child may already have printed its line.
    ///
    /// No line can slip between the scan and the registration: the scan runs under the
    /// watchers lock, and `commit` fills the rings before it takes that lock.
    pub fn watch_since(
        &self,
        unit: &str,
        since: u64,
        pattern: regex::Regex,
    ) -> tokio::sync::oneshot::Receiver<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut watchers = self.watchers.lock().expect("lock");
        let early = self
            .rings
            .lock()
            .expect("lock")
            .by_unit
            .get(unit)
            .and_then(|ring| {
                ring.iter()
                    .find(|r| r.seq > since && pattern.is_match(&r.msg))
                    .map(|r| r.msg.clone())
            });
        match early {
            Some(line) => {
                let _ = tx.send(line);
            }
            None => watchers.push(Watcher {
                unit: unit.to_string(),
                pattern,
                tx,
            }),
        }
        rx
    }

    /// Drops a unit's pending watchers (its probes were cancelled).
    pub fn unwatch(&self, unit: &str) {
        self.watchers
            .lock()
            .expect("lock")
            .retain(|w| w.unit != unit);
    }
}

/// The current time as RFC 3339 with microseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// A supervisor record (unit and channel `supervisor`).
pub fn supervisor_record(
    level: Level,
    msg: String,
    fields: Map<String, serde_json::Value>,
) -> LogRecord {
    LogRecord {
        seq: 0,
        ts: now_rfc3339().into(),
        unit: "supervisor".into(),
        instance: None,
        channel: "supervisor".into(),
        stream: Stream::Supervisor,
        level,
        msg,
        fields,
    }
}
