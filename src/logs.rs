//! Log capture: every line a child writes becomes a [`Record`], kept in a per-unit ring
//! buffer and written to the unified output (JSON lines, or `unit | text` on a TTY).
//!
//! Reading a child's pipe never waits for a consumer: the unified output is fed through a
//! bounded queue, and when it is full the line is counted as dropped instead of blocking
//! the child. Log probes (`probe = "log"`) register a pattern and are told of a match.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Longest line kept whole; longer lines are split into several records.
pub const MAX_LINE: usize = 64 * 1024;

/// Lines kept per unit for `logs show` and failure records.
const RING: usize = 1000;

/// One output line of one unit.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Global sequence number.
    pub seq: u64,
    /// RFC 3339 time the line was read.
    pub ts: String,
    /// Instance name.
    pub unit: String,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The line.
    pub msg: String,
}

struct Watcher {
    unit: String,
    pattern: regex::Regex,
    tx: tokio::sync::oneshot::Sender<String>,
}

/// Output format of the unified stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text on a TTY, JSON otherwise.
    Auto,
    /// `unit | message` lines.
    Text,
    /// One JSON object per line.
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

/// The log hub shared by capture tasks, probes and the control server.
pub struct LogHub {
    seq: AtomicU64,
    rings: Mutex<HashMap<String, VecDeque<Record>>>,
    watchers: Mutex<Vec<Watcher>>,
    out: mpsc::Sender<Record>,
    dropped: AtomicU64,
    /// Channels whose lines reach the unified output: unit → enabled.
    enabled: Mutex<HashMap<String, bool>>,
}

impl LogHub {
    /// A hub writing the unified stream to stdout in `format`.
    pub fn new(format: Format) -> Arc<LogHub> {
        let (tx, mut rx) = mpsc::channel::<Record>(16 * 1024);
        let format = format.resolve();
        std::thread::Builder::new()
            .name("log-sink".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Some(r) = rx.blocking_recv() {
                    let mut next = Some(r);
                    while let Some(r) = next {
                        match format {
                            Format::Json => {
                                let _ = serde_json::to_writer(&mut buf, &r);
                                buf.push(b'\n');
                            }
                            _ => {
                                let _ = writeln!(buf, "{:>16} | {}", r.unit, r.msg);
                            }
                        }
                        next = if buf.len() < 60 * 1024 {
                            rx.try_recv().ok()
                        } else {
                            None
                        };
                    }
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf);
                    let _ = out.flush();
                    buf.clear();
                }
            })
            .expect("spawn log sink thread");
        Arc::new(LogHub {
            seq: AtomicU64::new(0),
            rings: Mutex::new(HashMap::new()),
            watchers: Mutex::new(vec![]),
            out: tx,
            dropped: AtomicU64::new(0),
            enabled: Mutex::new(HashMap::new()),
        })
    }

    /// Sets whether a unit's lines reach the unified output.
    pub fn set_enabled(&self, unit: &str, enabled: bool) {
        self.enabled
            .lock()
            .expect("lock")
            .insert(unit.to_string(), enabled);
    }

    /// Records one line.
    pub fn push(&self, unit: &str, stream: &'static str, msg: String) {
        let rec = Record {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            ts: crate::supervisor::core::rfc3339(std::time::SystemTime::now()),
            unit: unit.to_string(),
            stream,
            msg,
        };
        let enabled = self
            .enabled
            .lock()
            .expect("lock")
            .get(unit)
            .copied()
            .unwrap_or(true);
        if enabled && self.out.try_send(rec.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        // Ring first, watchers second: see `watch_since` for why this order matters.
        {
            let mut rings = self.rings.lock().expect("lock");
            let ring = rings.entry(unit.to_string()).or_default();
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(rec.clone());
        }
        let mut w = self.watchers.lock().expect("lock");
        let mut i = 0;
        while i < w.len() {
            if w[i].unit == unit && w[i].pattern.is_match(&rec.msg) {
                let hit = w.swap_remove(i);
                let _ = hit.tx.send(rec.msg.clone());
            } else {
                i += 1;
            }
        }
    }

    /// The sequence number of the latest record.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// The last `n` lines of a unit recorded after sequence `since`.
    pub fn tail_since(&self, unit: &str, since: u64, n: usize) -> Vec<String> {
        let rings = self.rings.lock().expect("lock");
        let Some(ring) = rings.get(unit) else {
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

    /// Waits for a line of `unit` after sequence `since` matching `pattern` (a log
    /// readiness probe). Lines that arrived before the call count too: the probe starts
    /// after the spawn, and a fast child may already have printed its line.
    ///
    /// No line can slip between the scan and the registration: the scan runs under the
    /// watchers lock, and `push` adds to the ring before it takes that lock.
    pub fn watch_since(
        &self,
        unit: &str,
        since: u64,
        pattern: regex::Regex,
    ) -> tokio::sync::oneshot::Receiver<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut watchers = self.watchers.lock().expect("lock");
        let early = self.rings.lock().expect("lock").get(unit).and_then(|ring| {
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

    /// Lines not written to the unified output because it was saturated.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reads `pipe` line by line into records until EOF.
    pub async fn capture<R: AsyncRead + Unpin>(
        self: Arc<Self>,
        unit: String,
        stream: &'static str,
        pipe: R,
    ) {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut line = Vec::with_capacity(256);
        loop {
            let (done, used) = {
                let buf = match reader.fill_buf().await {
                    Ok(b) => b,
                    Err(_) => break,
                };
                if buf.is_empty() {
                    break;
                }
                match memchr(buf) {
                    Some(i) => {
                        line.extend_from_slice(&buf[..i]);
                        (true, i + 1)
                    }
                    None => {
                        let room = MAX_LINE - line.len();
                        let take = buf.len().min(room);
                        line.extend_from_slice(&buf[..take]);
                        (line.len() >= MAX_LINE, take)
                    }
                }
            };
            reader.consume(used);
            if done {
                self.emit(&unit, stream, &mut line);
            }
        }
        if !line.is_empty() {
            self.emit(&unit, stream, &mut line);
        }
    }

    fn emit(&self, unit: &str, stream: &'static str, line: &mut Vec<u8>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let msg = String::from_utf8_lossy(line).into_owned();
        line.clear();
        self.push(unit, stream, msg);
    }
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|b| *b == b'\n')
}
