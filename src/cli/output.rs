//! What `tmidb-cli` prints: tables for people, one JSON document (`--json`) for
//! scripts; log records as the unified stream shows them.

use std::io::IsTerminal;
use std::time::SystemTime;

use crate::control::protocol::{ChannelState, FailureRecord, LogRecord, UnitInfo, UnitStatus};

/// Prints `v` as pretty JSON.
pub(super) fn json<T: serde::Serialize>(v: &T) {
    out!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// Prints one record: text (as the unified stream shows it) or a JSON line.
pub(super) fn print_record(r: &LogRecord, json: bool, color: bool) {
    if json {
        out!("{}", serde_json::to_string(r).expect("json"));
    } else {
        let mut buf = vec![];
        crate::logs::sink::render_text(&mut buf, r, color);
        out!("{}", String::from_utf8_lossy(&buf).trim_end_matches('\n'));
    }
}

pub(super) fn print_channels(channels: &[ChannelState], j: bool) {
    if j {
        return json(&channels);
    }
    out!("{:<20} {:<8} {:<6} UNITS", "CHANNEL", "OUTPUT", "LEVEL");
    for c in channels {
        out!(
            "{:<20} {:<8} {:<6} {}",
            c.channel,
            if c.enabled { "on" } else { "off" },
            c.level,
            c.units.join(" ")
        );
    }
}

/// Age of an RFC 3339 timestamp, compactly (`3m12s`).
fn age(since: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(since) else {
        return since.to_string();
    };
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Prints units as a table, or as a JSON array.
pub(super) fn print_units(units: &[UnitStatus], j: bool) {
    if j {
        return json(&units);
    }
    let color = std::io::stdout().is_terminal();
    out!(
        "{:<22} {:<10} {:>8} {:>8} {:>8}  {:<14} REASON",
        "UNIT",
        "STATE",
        "PID",
        "RESTARTS",
        "SINCE",
        "LAST EXIT"
    );
    for u in units {
        use crate::control::protocol::State;
        // A ready external unit whose liveness probe fails shows as degraded.
        let shown = match (&u.degraded, u.state) {
            (Some(_), State::Ready) => "degraded",
            _ => u.state.as_str(),
        };
        let state = format!("{shown:<10}");
        let state = match (color, u.state) {
            (true, State::Ready) if u.degraded.is_some() => format!("\x1b[33m{state}\x1b[0m"),
            (
                true,
                crate::control::protocol::State::Ready | crate::control::protocol::State::Exited,
            ) => format!("\x1b[32m{state}\x1b[0m"),
            (true, crate::control::protocol::State::Failed) => format!("\x1b[31m{state}\x1b[0m"),
            (
                true,
                crate::control::protocol::State::Restarting
                | crate::control::protocol::State::Starting,
            ) => format!("\x1b[33m{state}\x1b[0m"),
            _ => state,
        };
        let dropped = if u.dropped > 0 {
            format!(" [{} log lines dropped]", u.dropped)
        } else {
            String::new()
        };
        // What a notify service says of itself (STATUS=), after the supervisor's reason.
        let said = match (&u.degraded, &u.status_text) {
            (Some(why), _) => format!(" — degraded: {why}"),
            (_, Some(t)) if !t.is_empty() => format!(" — {t}"),
            _ => String::new(),
        };
        out!(
            "{:<22} {} {:>8} {:>8} {:>8}  {:<14} {}{said}{dropped}",
            u.name,
            state,
            u.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            u.restarts,
            age(&u.since),
            u.last_exit
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into()),
            u.reason
        );
    }
}

pub(super) fn print_unit_list(units: &[UnitInfo], j: bool) {
    if j {
        return json(&units);
    }
    // The file goes last: its length depends on where the home is.
    let head = format!(
        "{:<22} {:<10} {:<8} {:<14} {:<30} FILE",
        "UNIT", "STATE", "TYPE", "CHANNEL", "DESCRIPTION"
    );
    out!("{head}");
    for u in units {
        let (name, state, kind, ch, d) = (
            &u.name,
            u.state.as_str(),
            &u.kind,
            &u.channel,
            &u.description,
        );
        out!(
            "{name:<22} {state:<10} {kind:<8} {ch:<14} {d:<30} {}",
            u.file
        );
    }
}

pub(super) fn print_failures(unit: &str, records: &[FailureRecord], j: bool) {
    if j {
        return json(&records);
    }
    if records.is_empty() {
        out!("{unit}: no failures recorded");
    }
    for r in records {
        let exit = r
            .exit
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "-".into());
        let ready = r
            .time_to_ready_ms
            .map(|m| format!("{m}ms"))
            .unwrap_or_else(|| "never".into());
        out!(
            "{} pid {} ({exit}): {}  [ready: {ready}, ended {}]",
            r.started,
            r.pid,
            r.reason,
            r.ended
        );
        for l in &r.last_lines {
            out!("    | {l}");
        }
    }
}
