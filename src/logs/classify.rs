//! Turning one output line into a level, a message and structured fields.
//!
//! JSON lines (our own services log JSON through `tracing`) are merged as fields, with the
//! level and message taken from the usual keys. Plain lines get their level from the
//! conventions of the services we run: PostgreSQL (`LOG:`, `WARNING:`, `ERROR:`,
//! `FATAL:` …), NATS (`[INF]`, `[WRN]`, `[ERR]` …) and SeaweedFS's glog prefixes
//! (`I1126 …`, `W…`, `E…`, `F…`); anything else is `info`. Byte scans, no regex: this
//! runs for every line of every child.

use serde_json::{Map, Value};

use crate::control::protocol::Level;

/// The result of classifying one line.
pub struct Classified {
    /// Severity.
    pub level: Level,
    /// Message (the line itself for plain text).
    pub msg: String,
    /// Structured fields (JSON lines only).
    pub fields: Map<String, Value>,
}

/// Classifies a line; `json` enables merging of JSON-object lines.
pub fn classify(line: String, json: bool) -> Classified {
    if json && line.starts_with('{') {
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&line) {
            return from_json(obj, line);
        }
    }
    Classified {
        level: text_level(&line),
        msg: line,
        fields: Map::new(),
    }
}

fn from_json(mut obj: Map<String, Value>, line: String) -> Classified {
    // tracing's JSON puts the event's fields (message included) under "fields".
    if let Some(Value::Object(inner)) = obj.remove("fields") {
        for (k, v) in inner {
            obj.entry(k).or_insert(v);
        }
    }
    let level = ["level", "severity", "lvl"]
        .iter()
        .find_map(|k| obj.remove(*k))
        .and_then(|v| v.as_str().and_then(Level::parse_loose))
        .unwrap_or(Level::Info);
    let msg = ["message", "msg"]
        .iter()
        .find_map(|k| obj.remove(*k))
        .map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or(line);
    for k in ["timestamp", "time", "ts"] {
        obj.remove(k);
    }
    Classified {
        level,
        msg,
        fields: obj,
    }
}

/// Level of a plain line by the conventions of PostgreSQL, NATS and glog.
pub fn text_level(line: &str) -> Level {
    let b = line.as_bytes();
    // glog (SeaweedFS): `I1126 10:38:45.123 …`: a severity letter then MMDD and a space.
    if b.len() > 6 && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' ' {
        match b[0] {
            b'I' => return Level::Info,
            b'W' => return Level::Warn,
            b'E' => return Level::Error,
            b'F' => return Level::Fatal,
            _ => {}
        }
    }
    // One pass over the line for both: NATS (`[pid] date time [INF] …`: a bracketed
    // three-letter tag, wherever it is) and PostgreSQL (`… [pid] SEVERITY:  message`:
    // the first colon followed by two spaces), NATS first.
    let mut colon = None;
    for i in memchr::memchr2_iter(b'[', b':', b) {
        if b[i] == b':' {
            if colon.is_none() && b.get(i + 1..i + 3) == Some(b"  ") {
                colon = Some(i);
            }
            continue;
        }
        if b.get(i + 4) == Some(&b']') {
            match &b[i + 1..i + 4] {
                b"INF" => return Level::Info,
                b"WRN" => return Level::Warn,
                b"ERR" => return Level::Error,
                b"FTL" => return Level::Fatal,
                b"DBG" => return Level::Debug,
                b"TRC" => return Level::Trace,
                _ => {}
            }
        }
    }
    if let Some(i) = colon {
        let head = &line[..i];
        let word = head.rsplit(' ').next().unwrap_or(head);
        let level = match word {
            "LOG" | "INFO" | "NOTICE" | "DETAIL" | "HINT" | "STATEMENT" | "CONTEXT"
            | "LOCATION" | "QUERY" => Some(Level::Info),
            "WARNING" => Some(Level::Warn),
            "ERROR" => Some(Level::Error),
            "FATAL" | "PANIC" => Some(Level::Fatal),
            w if w.starts_with("DEBUG") => Some(Level::Debug),
            _ => None,
        };
        if let Some(l) = level {
            return l;
        }
    }
    Level::Info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresql_nats_and_glog_levels() {
        let cases = [
            (
                "2026-11-26 10:48:02.799 UTC [29084] FATAL:  lock file \"postmaster.pid\" already exists",
                Level::Fatal,
            ),
            (
                "2026-11-26 10:48:02.799 UTC [29084] HINT:  Is another postmaster running?",
                Level::Info,
            ),
            (
                "2026-11-26 10:39:06.884 UTC [6062] LOG:  database system is ready to accept connections",
                Level::Info,
            ),
            (
                "2026-11-26 10:39:06.884 UTC [6062] WARNING:  could not flush dirty data",
                Level::Warn,
            ),
            (
                "2026-11-26 10:39:06.884 UTC [6062] ERROR:  relation \"x\" does not exist",
                Level::Error,
            ),
            (
                "[5290] 2026/11/26 10:38:45.667042 [INF] Starting nats-server",
                Level::Info,
            ),
            (
                "[5290] 2026/11/26 10:38:45.669580 [WRN] Healthcheck failed",
                Level::Warn,
            ),
            (
                "[5290] 2026/11/26 10:38:45.669580 [ERR] 127.0.0.1:4222 - cid:5 - read error",
                Level::Error,
            ),
            (
                "I1126 10:39:06.123456 master.go:100 Start Seaweed Master",
                Level::Info,
            ),
            ("W1126 10:39:06.123456 volume.go:1 slow", Level::Warn),
            ("E1126 10:39:06.123456 filer.go:1 failed", Level::Error),
            ("F1126 10:39:06.123456 s3.go:1 dead", Level::Fatal),
            ("just a line: with a colon", Level::Info),
            ("INFO1234 not glog", Level::Info),
            // The first colon with two spaces after it is PostgreSQL's.
            ("a label: then ERROR:  failed", Level::Error),
            ("NOTE:  then ERROR:  failed", Level::Info),
            // A NATS tag anywhere wins over a PostgreSQL severity.
            ("2026 UTC [1] LOG:  statement: [WRN] in it", Level::Warn),
        ];
        for (line, want) in cases {
            assert_eq!(text_level(line), want, "{line}");
        }
    }

    #[test]
    fn json_lines_merge_fields_including_tracing_nesting() {
        let c = classify(
            r#"{"timestamp":"2026-11-26T10:00:00Z","level":"WARN","fields":{"message":"slow query","ms":812},"target":"api"}"#.into(),
            true,
        );
        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.msg, "slow query");
        assert_eq!(c.fields["ms"], 812);
        assert_eq!(c.fields["target"], "api");
        assert!(!c.fields.contains_key("timestamp"));
        let c = classify(r#"{"msg":"x","severity":"error"}"#.into(), true);
        assert_eq!((c.level, c.msg.as_str()), (Level::Error, "x"));
        let c = classify(r#"{"not":"a log"}"#.into(), false);
        assert_eq!(c.msg, r#"{"not":"a log"}"#);
        assert!(c.fields.is_empty());
        let c = classify("{broken".into(), true);
        assert_eq!(c.msg, "{broken");
    }
}
