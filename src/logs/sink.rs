//! The sinks, on one writer thread: the unified stdout stream, journald, and per-unit
//! files with size-based rotation.
//!
//! journald gets one `SYSLOG_IDENTIFIER` per unit, a priority from the level, and every
//! field; it is written over journald's native datagram protocol because
//! `tracing-journald` has one identifier per layer and a fixed socket. (The
//! supervisor's own events still reach journald through `tracing-journald`.)

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::{Filter, Format, Level, LogRecord, Stream};

/// What the sinks do.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unified stdout format (resolved: Text or Json).
    pub format: Format,
    /// ANSI colours in text output (only on a TTY).
    pub color: bool,
    /// journald socket to write child records to, if present.
    pub journald: Option<PathBuf>,
    /// Write the unified stream to stdout. Off when stdout is the journal and the
    /// journald sink is on: every line would reach the journal twice.
    pub stdout: bool,
    /// Per-unit files.
    pub files: Option<FileSink>,
}

impl SinkConfig {
    /// Stdout only, in `format` (Auto resolved against stdout).
    pub fn stdout(format: Format) -> SinkConfig {
        let format = format.resolve();
        let color = format == Format::Text && std::io::IsTerminal::is_terminal(&std::io::stdout());
        SinkConfig {
            format,
            color,
            journald: None,
            files: None,
            stdout: true,
        }
    }
}

/// Whether stdout is the journal: systemd sets `JOURNAL_STREAM=DEV:INODE` to the stream
/// it connects a service's stdout/stderr to, and stdout still is that stream.
pub fn stdout_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stdout().as_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// Per-unit log files: `DIR/UNIT.log`, rotated to `.1`…`.keep` past `max_bytes`.
#[derive(Debug, Clone)]
pub struct FileSink {
    /// Directory.
    pub dir: PathBuf,
    /// Size that triggers rotation.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

/// What the writer thread receives.
pub enum SinkMsg {
    /// Records to write.
    Batch(Arc<[LogRecord]>),
    /// Flush everything written so far, then acknowledge.
    Flush(std::sync::mpsc::Sender<()>),
}

/// Starts the writer thread.
pub fn spawn(cfg: SinkConfig, mut rx: mpsc::Receiver<SinkMsg>, filter: Arc<RwLock<Filter>>) {
    std::thread::Builder::new()
        .name("log-sink".into())
        .spawn(move || {
            let mut out = BufWriter::with_capacity(256 * 1024, std::io::stdout());
            let journal = cfg.journald.as_ref().and_then(|p| Journal::connect(p));
            let mut files = Files::new(cfg.files.clone());
            let mut line = Vec::with_capacity(512);
            let mut json_lines = JsonLines::default();
            while let Some(msg) = rx.blocking_recv() {
                let mut next = Some(msg);
                while let Some(msg) = next {
                    let batch = match msg {
                        SinkMsg::Batch(b) => b,
                        SinkMsg::Flush(ack) => {
                            let _ = out.flush();
                            files.flush();
                            let _ = ack.send(());
                            next = rx.try_recv().ok();
                            continue;
                        }
                    };
                    // A batch is one unit instance's records: its channel's rule is
                    // looked up once, not per line, and the filter is not held while
                    // writing (a stuck stdout must not block `logs on/off`).
                    let mut memo: Option<(&Arc<str>, super::ChannelRule)> = None;
                    for r in batch.iter() {
                        line.clear();
                        let rule = match memo {
                            Some((c, rule)) if Arc::ptr_eq(c, &r.channel) || *c == r.channel => {
                                rule
                            }
                            _ => {
                                let rule = filter.read().expect("lock").rule(&r.channel);
                                memo.insert((&r.channel, rule)).1
                            }
                        };
                        let mut json = None;
                        if rule.passes(r.level) {
                            match cfg.format {
                                Format::Json => {
                                    json_lines.line(&mut line, r);
                                    json = Some(&line[..]);
                                }
                                _ => render_text(&mut line, r, cfg.color),
                            }
                            if cfg.stdout {
                                let _ = out.write_all(&line);
                            }
                            if let Some(j) = &journal
                                && r.stream != Stream::Supervisor
                            {
                                j.send(r);
                            }
                        }
                        files.write(r, json);
                    }
                    next = rx.try_recv().ok();
                }
                let _ = out.flush();
                files.flush();
            }
            let _ = out.flush();
        })
        .expect("spawn log sink thread");
}

/// Writes records as JSON lines: the bytes `serde_json` writes for a [`LogRecord`],
/// made faster in the two ways that matter for a chatty child, whose lines reach the
/// sinks in batches that share a read time, a unit and a stream:
/// - the part from `ts` to `stream` is encoded once and reused while records share it
///   (compared by pointer: the cached `Arc`s are held, so an address is never reused
///   while it is compared);
/// - strings that need no escaping (most log lines) are copied as they are.
#[derive(Default)]
pub struct JsonLines {
    head: Option<Head>,
}

/// The shared part of the last record's line, and what it was made of.
struct Head {
    ts: Arc<str>,
    unit: Arc<str>,
    instance: Option<u32>,
    channel: Arc<str>,
    stream: Stream,
    /// `,"ts":…,"stream":"…"`.
    json: Vec<u8>,
}

impl Head {
    fn is_for(&self, r: &LogRecord) -> bool {
        Arc::ptr_eq(&self.ts, &r.ts)
            && Arc::ptr_eq(&self.unit, &r.unit)
            && self.instance == r.instance
            && Arc::ptr_eq(&self.channel, &r.channel)
            && self.stream == r.stream
    }

    fn of(r: &LogRecord) -> Head {
        let mut json = Vec::with_capacity(128);
        json.extend_from_slice(b",\"ts\":");
        json_str(&mut json, &r.ts);
        json.extend_from_slice(b",\"unit\":");
        json_str(&mut json, &r.unit);
        json.extend_from_slice(b",\"instance\":");
        match r.instance {
            Some(i) => json.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            None => json.extend_from_slice(b"null"),
        }
        json.extend_from_slice(b",\"channel\":");
        json_str(&mut json, &r.channel);
        json.extend_from_slice(b",\"stream\":");
        json_str(&mut json, r.stream.as_str());
        Head {
            ts: r.ts.clone(),
            unit: r.unit.clone(),
            instance: r.instance,
            channel: r.channel.clone(),
            stream: r.stream,
            json,
        }
    }
}

impl JsonLines {
    /// Appends `r` as one JSON line.
    pub fn line(&mut self, out: &mut Vec<u8>, r: &LogRecord) {
        let head = match &self.head {
            Some(h) if h.is_for(r) => h,
            _ => self.head.insert(Head::of(r)),
        };
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(r.seq).as_bytes());
        out.extend_from_slice(&head.json);
        // Level names are lowercase words: nothing to escape.
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(r.level.as_str().as_bytes());
        out.extend_from_slice(b"\",\"msg\":");
        json_str(out, &r.msg);
        out.extend_from_slice(b",\"fields\":");
        if r.fields.is_empty() {
            out.extend_from_slice(b"{}");
        } else {
            let _ = serde_json::to_writer(&mut *out, &r.fields);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// A JSON string: copied as is when nothing in it needs escaping, else escaped by
/// `serde_json`. The check runs 32 bytes at a time (a loop the compiler vectorises),
/// the tail too, padded with a byte that needs none.
fn json_str(out: &mut Vec<u8>, s: &str) {
    fn special(chunk: &[u8]) -> bool {
        chunk
            .iter()
            .fold(false, |m, &b| m | (b < 0x20) | (b == b'"') | (b == b'\\'))
    }
    let bytes = s.as_bytes();
    let mut chunks = bytes.chunks_exact(32);
    let mut padded = [b' '; 32];
    let tail = chunks.remainder();
    padded[..tail.len()].copy_from_slice(tail);
    if !chunks.any(special) && !special(&padded) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

const COLOURS: [&str; 6] = ["36", "32", "35", "34", "33", "96"];

/// `10:38:45.667 nats            | message key=value`, coloured by unit and level on a
/// TTY. A supervisor event about a unit names it first: `supervisor | nats: ready …`.
pub fn render_text(buf: &mut Vec<u8>, r: &LogRecord, color: bool) {
    let time = r.ts.get(11..23).unwrap_or(&r.ts);
    let name = r.instance_name();
    let subject = match (r.stream, r.fields.get("unit")) {
        (Stream::Supervisor, Some(serde_json::Value::String(u))) => Some(u.as_str()),
        _ => None,
    };
    let msg = match subject {
        Some(u) => format!("{u}: {}", r.msg),
        None => r.msg.clone(),
    };
    if color {
        let hash = name
            .bytes()
            .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
        let c = COLOURS[hash % COLOURS.len()];
        let _ = write!(buf, "\x1b[2m{time}\x1b[0m \x1b[{c}m{name:<16}\x1b[0m| ");
        match r.level {
            Level::Warn => {
                let _ = write!(buf, "\x1b[33m{msg}\x1b[0m");
            }
            Level::Error | Level::Fatal => {
                let _ = write!(buf, "\x1b[31m{msg}\x1b[0m");
            }
            _ => buf.extend_from_slice(msg.as_bytes()),
        }
    } else {
        let _ = write!(buf, "{time} {name:<16}| {msg}");
    }
    for (k, v) in r
        .fields
        .iter()
        .filter(|(k, _)| subject.is_none() || k.as_str() != "unit")
    {
        match v {
            serde_json::Value::String(s) => {
                let _ = write!(buf, " {k}={s}");
            }
            other => {
                let _ = write!(buf, " {k}={other}");
            }
        }
    }
    buf.push(b'\n');
}

/// journald's native protocol: `KEY=value\n`, or `KEY\n<u64 le length>value\n` for
/// values with newlines.
///
/// Sends never block: a journald that stops reading must not stall every unit's output.
/// Entries it cannot take are counted and reported on stderr once per thousand.
struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
    dropped: std::cell::Cell<u64>,
}

impl Journal {
    fn connect(path: &Path) -> Option<Journal> {
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_nonblocking(true).ok()?;
        path.exists().then(|| Journal {
            sock,
            path: path.to_path_buf(),
            dropped: 0.into(),
        })
    }

    fn send(&self, r: &LogRecord) {
        let mut buf = Vec::with_capacity(256);
        let mut put = |k: &str, v: &str| {
            if v.contains('\n') {
                buf.extend_from_slice(k.as_bytes());
                buf.push(b'\n');
                buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
                buf.extend_from_slice(v.as_bytes());
                buf.push(b'\n');
            } else {
                buf.extend_from_slice(k.as_bytes());
                buf.push(b'=');
                buf.extend_from_slice(v.as_bytes());
                buf.push(b'\n');
            }
        };
        put("SYSLOG_IDENTIFIER", &r.instance_name());
        put("PRIORITY", &r.level.syslog_priority().to_string());
        put("MESSAGE", &r.msg);
        put("TMIDB_SEQ", &r.seq.to_string());
        put("TMIDB_CHANNEL", &r.channel);
        put(
            "TMIDB_STREAM",
            if r.stream == Stream::Stderr {
                "stderr"
            } else {
                "stdout"
            },
        );
        for (k, v) in &r.fields {
            // Journal field names: uppercase letters, digits, underscores; no leading _.
            let key: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            let key = key.trim_start_matches('_');
            if key.is_empty() || key.as_bytes()[0].is_ascii_digit() {
                continue;
            }
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            put(key, &value);
        }
        if self.sock.send_to(&buf, &self.path).is_err() {
            let n = self.dropped.get() + 1;
            self.dropped.set(n);
            if n % 1000 == 1 {
                eprintln!(
                    "tmidb-supervisor: journald at {} is not taking entries ({n} dropped so far)",
                    self.path.display()
                );
            }
        }
    }
}

struct Files {
    cfg: Option<FileSink>,
    /// Open files: unit, instance, writer, size. A handful, searched from the one used
    /// last (a batch is one unit instance's records).
    open: Vec<OpenFile>,
    last: usize,
    line: Vec<u8>,
    json_lines: JsonLines,
}

struct OpenFile {
    unit: Arc<str>,
    instance: Option<u32>,
    writer: BufWriter<File>,
    size: u64,
}

impl Files {
    fn new(cfg: Option<FileSink>) -> Files {
        if let Some(c) = &cfg {
            let _ = std::fs::create_dir_all(&c.dir);
        }
        Files {
            cfg,
            open: vec![],
            last: 0,
            line: Vec::with_capacity(512),
            json_lines: JsonLines::default(),
        }
    }

    /// Appends `r` to its unit instance's file; `json` is its JSON line when the
    /// caller has made it already.
    fn write(&mut self, r: &LogRecord, json: Option<&[u8]>) {
        let Some(cfg) = &self.cfg else { return };
        let line = match json {
            Some(j) => j,
            None => {
                self.line.clear();
                self.json_lines.line(&mut self.line, r);
                &self.line
            }
        };
        let is = |f: &OpenFile| {
            f.instance == r.instance && (Arc::ptr_eq(&f.unit, &r.unit) || f.unit == r.unit)
        };
        if !self.open.get(self.last).is_some_and(is) {
            match self.open.iter().position(is) {
                Some(i) => self.last = i,
                None => {
                    let path = cfg.dir.join(format!("{}.log", r.instance_name()));
                    let Ok(f) = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                    else {
                        return;
                    };
                    self.open.push(OpenFile {
                        unit: r.unit.clone(),
                        instance: r.instance,
                        size: f.metadata().map(|m| m.len()).unwrap_or(0),
                        writer: BufWriter::with_capacity(256 * 1024, f),
                    });
                    self.last = self.open.len() - 1;
                }
            }
        }
        let f = &mut self.open[self.last];
        if f.size > 0 && f.size + line.len() as u64 > cfg.max_bytes {
            let _ = f.writer.flush();
            rotate(&cfg.dir, &r.instance_name(), cfg.keep);
            self.open.swap_remove(self.last);
            self.last = 0;
            return self.write(r, json);
        }
        let _ = f.writer.write_all(line);
        f.size += line.len() as u64;
    }

    fn flush(&mut self) {
        for f in &mut self.open {
            let _ = f.writer.flush();
        }
    }
}

/// `NAME.log` → `NAME.log.1` → … → `NAME.log.KEEP` (the oldest is deleted).
fn rotate(dir: &Path, name: &str, keep: usize) {
    let p = |i: usize| {
        if i == 0 {
            dir.join(format!("{name}.log"))
        } else {
            dir.join(format!("{name}.log.{i}"))
        }
    };
    let _ = std::fs::remove_file(p(keep));
    for i in (0..keep).rev() {
        let _ = std::fs::rename(p(i), p(i + 1));
    }
    if keep == 0 {
        let _ = std::fs::remove_file(p(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, msg: &str) -> LogRecord {
        LogRecord {
            seq,
            ts: "2026-11-26T10:38:45.667042Z".into(),
            unit: "worker".into(),
            instance: Some(2),
            channel: "worker".into(),
            stream: Stream::Stdout,
            level: Level::Info,
            msg: msg.into(),
            fields: Default::default(),
        }
    }

    #[test]
    fn json_lines_are_what_serde_writes_for_a_record() {
        let long = "x".repeat(40) + "\"" + &"y".repeat(40);
        let tail = "y".repeat(32) + "\t";
        let msgs = [
            "plain",
            "",
            "quote \" and backslash \\ and tab \t",
            "control \u{1} \u{1f} del \u{7f}",
            "ünïcødé → 日本 🚀",
            &long,
            &"z".repeat(64),
            &tail,
            "a\"",
            "plain again",
        ];
        // Records cloned from one share their `Arc`s (as a batch from one read does);
        // every other one has its own, with the same or with other contents: the
        // shared part of a line is reused only while it is the same.
        let base = rec(0, "");
        let mut lines = JsonLines::default();
        for (i, msg) in msgs.iter().enumerate() {
            let mut r = base.clone();
            (r.seq, r.msg) = (i as u64 * 1_000_003, msg.to_string());
            match i % 4 {
                1 => {
                    r.instance = None;
                    r.stream = Stream::Stderr;
                    r.level = Level::Warn;
                    r.unit = "a\"b".into();
                    r.fields
                        .insert("k".into(), serde_json::json!({"n": [1, "two\n"]}));
                }
                2 => r.ts = format!("2026-11-26T10:38:45.66704{i}Z").into(),
                3 => r.channel = "worker".into(),
                _ => {}
            }
            let mut mine = vec![];
            lines.line(&mut mine, &r);
            let mut want = serde_json::to_vec(&r).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8(mine).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
        // Every stream and level is named as serde names it.
        for stream in [Stream::Stdout, Stream::Stderr, Stream::Supervisor] {
            for &level in <Level as clap::ValueEnum>::value_variants() {
                let mut r = base.clone();
                (r.stream, r.level) = (stream, level);
                let mut mine = vec![];
                lines.line(&mut mine, &r);
                let want = serde_json::to_value(&r).unwrap();
                let mine: serde_json::Value = serde_json::from_slice(&mine).unwrap();
                assert_eq!(mine, want);
            }
        }
    }

    #[test]
    fn text_lines_name_the_instance() {
        let mut b = vec![];
        render_text(&mut b, &rec(1, "hello"), false);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "10:38:45.667 worker@2        | hello\n"
        );
    }

    #[test]
    fn supervisor_events_name_their_unit_first() {
        let mut r = rec(3, "ready → stopping: stop requested");
        r.unit = "supervisor".into();
        r.instance = None;
        r.stream = Stream::Supervisor;
        r.fields.insert("unit".into(), "nats".into());
        r.fields.insert("pgid".into(), 7.into());
        let mut b = vec![];
        render_text(&mut b, &r, false);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "10:38:45.667 supervisor      | nats: ready → stopping: stop requested pgid=7\n"
        );
    }

    #[test]
    fn files_rotate_by_size_and_keep_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Files::new(Some(FileSink {
            dir: dir.path().into(),
            max_bytes: 600,
            keep: 2,
        }));
        for i in 0..20 {
            f.write(&rec(i, &"x".repeat(100)), None);
        }
        f.flush();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["worker@2.log", "worker@2.log.1", "worker@2.log.2"]);
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 600, "{n}: {len}");
        }
        // The newest records are in the live file, in order.
        let live = std::fs::read_to_string(dir.path().join("worker@2.log")).unwrap();
        let last: LogRecord = serde_json::from_str(live.lines().last().unwrap()).unwrap();
        assert_eq!(last.seq, 19);
    }

    #[test]
    fn interleaved_units_and_instances_each_get_their_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Files::new(Some(FileSink {
            dir: dir.path().into(),
            max_bytes: 1 << 20,
            keep: 1,
        }));
        let who = [
            ("worker", Some(2)),
            ("worker", Some(3)),
            ("worker", None),
            ("nats", None),
        ];
        for i in 0..40u64 {
            let mut r = rec(i, "m");
            let (unit, instance) = who[(i as usize * 7 / 3) % who.len()];
            (r.unit, r.instance) = (unit.into(), instance);
            let mut line = vec![];
            JsonLines::default().line(&mut line, &r);
            // The caller's line when it has one, else the file sink's own.
            f.write(&r, (i % 2 == 0).then_some(&line[..]));
        }
        f.flush();
        for (unit, instance) in who {
            let name = match instance {
                Some(i) => format!("{unit}@{i}"),
                None => unit.to_string(),
            };
            let text = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
            let recs: Vec<LogRecord> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(!recs.is_empty(), "{name}");
            assert!(
                recs.iter().all(|r| r.instance_name() == name),
                "{name}: {text}"
            );
            assert!(
                recs.windows(2).all(|w| w[0].seq < w[1].seq),
                "{name}: {text}"
            );
        }
    }
}
