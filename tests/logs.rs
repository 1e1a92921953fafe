//! Unified logs: records and levels, channels, persistence, followers, volume.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::helpers::{CLI, Home, Sup, secs};

fn show(sup: &Sup, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["logs", "show", "--json"];
    a.extend_from_slice(args);
    sup.cli_ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Lines of the unified stdout (the supervisor's JSON log file) belonging to `unit`.
fn unified(sup: &Sup, unit: &str) -> Vec<Value> {
    sup.records()
        .into_iter()
        .filter(|r| r["unit"] == unit)
        .collect()
}

#[test]
fn json_and_plain_children_get_records_and_levels() {
    let h = Home::new();
    let script = r#"
echo '{"timestamp":"2026-11-26T10:00:00Z","level":"WARN","fields":{"message":"json says hi","rows":7},"target":"api"}'
echo '2026-11-26 10:00:00.000 UTC [42] FATAL:  pg is down'
echo '2026-11-26 10:00:00.000 UTC [42] LOG:  pg is up'
echo '[7] 2026/11/26 10:00:00.000000 [ERR] nats broke'
echo 'W1126 10:00:00.000000 1 volume.go:1] weed warns'
echo 'to stderr' >&2
echo 'plain words'
exec sleep 1000
"#;
    h.unit(
        "mixed",
        &format!(
            "[service]\ncommand = [\"/bin/sh\", \"-c\", {}]\n[log]\nchannel = \"mix\"\n",
            toml_str(script)
        ),
    );
    h.unit("raw", "[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo '{\\\"level\\\":\\\"error\\\",\\\"msg\\\":\\\"x\\\"}'; exec sleep 1000\"]\n[log]\nformat = \"text\"\n");
    h.unit("w", "[unit]\ninstances = 2\n[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo I am ${instance}; exec sleep 1000\"]\n");
    let sup = h.start();
    sup.wait_until("7 lines of mixed", secs(10), |s| {
        show(s, &["mixed"]).len() == 7
    });
    let recs = show(&sup, &["mixed"]);
    let level = |msg: &str| {
        recs.iter()
            .find(|r| r["msg"] == msg)
            .unwrap_or_else(|| panic!("{msg}: {recs:?}"))["level"]
            .clone()
    };
    assert_eq!(level("json says hi"), "warn");
    assert_eq!(
        level("2026-11-26 10:00:00.000 UTC [42] FATAL:  pg is down"),
        "fatal"
    );
    assert_eq!(
        level("2026-11-26 10:00:00.000 UTC [42] LOG:  pg is up"),
        "info"
    );
    assert_eq!(
        level("[7] 2026/11/26 10:00:00.000000 [ERR] nats broke"),
        "error"
    );
    assert_eq!(
        level("W1126 10:00:00.000000 1 volume.go:1] weed warns"),
        "warn"
    );
    assert_eq!(level("plain words"), "info");
    let json = recs.iter().find(|r| r["msg"] == "json says hi").unwrap();
    assert_eq!(json["fields"]["rows"], 7);
    assert_eq!(json["fields"]["target"], "api");
    assert_eq!(json["channel"], "mix");
    assert_eq!(
        recs.iter().find(|r| r["msg"] == "to stderr").unwrap()["stream"],
        "stderr"
    );
    // Sequence numbers increase; every record has the documented keys.
    for w in recs.windows(2) {
        assert!(w[0]["seq"].as_u64() < w[1]["seq"].as_u64());
    }
    for key in [
        "seq", "ts", "unit", "instance", "stream", "level", "msg", "fields",
    ] {
        assert!(json.get(key).is_some(), "record lacks {key}");
    }
    // format = "text" keeps a JSON-looking line as text.
    sup.wait_until("raw line", secs(5), |s| !show(s, &["raw"]).is_empty());
    let raw = &show(&sup, &["raw"])[0];
    assert_eq!(
        (
            raw["level"].as_str(),
            raw["fields"].as_object().unwrap().len()
        ),
        (Some("info"), 0)
    );
    // Instances: unit and instance separately; `w` selects both.
    sup.wait_until("both instances spoke", secs(5), |s| {
        show(s, &["w"]).len() == 2
    });
    let w = show(&sup, &["w@2"]);
    assert_eq!(
        (
            w[0]["unit"].as_str(),
            w[0]["instance"].as_u64(),
            w[0]["msg"].as_str()
        ),
        (Some("w"), Some(2), Some("I am 2"))
    );
    // The supervisor's own events are records of channel `supervisor`.
    let ev = show(&sup, &["supervisor", "-n", "1000"]);
    assert!(
        ev.iter()
            .any(|r| r["msg"].as_str().unwrap().contains("→ ready")
                && r["fields"]["unit"] == "mixed"),
        "{ev:?}"
    );
    // Filters.
    let errs = show(&sup, &["mixed", "--level", "error"]);
    assert_eq!(errs.len(), 2, "{errs:?}");
    let grep = show(&sup, &["mixed", "--grep", "^plain"]);
    assert_eq!(grep.len(), 1);
    assert_eq!(show(&sup, &["mixed", "-n", "2"]).len(), 2);
    assert!(show(&sup, &["mixed", "--since", "1h"]).len() == 7);
    assert!(show(&sup, &["mixed", "--since", "2999-01-01T00:00:00Z"]).is_empty());
    let o = sup.cli(&["logs", "show", "mixed", "--since", "yesterday-ish"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid --since"));
    let o = sup.cli(&["logs", "show", "nope"]);
    assert_eq!(o.status.code(), Some(4));
}

/// A TOML basic string holding `s`.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

const TICKER: &str = "[service]\ncommand = [\"/bin/sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done\"]\n[log]\nchannel = \"ticks\"\n";

fn last_tick(recs: &[Value]) -> u64 {
    recs.iter()
        .filter_map(|r| r["msg"].as_str()?.strip_prefix("tick ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn disabled_channel_leaves_stdout_but_not_logs_show_and_survives_a_restart() {
    let h = Home::new();
    h.unit("ticker", TICKER);
    h.unit("other", "[service]\ncommand = [\"/bin/sh\", \"-c\", \"while true; do echo other; sleep 0.05; done\"]\n");
    let mut sup = h.start();
    sup.wait_until("ticks in stdout", secs(10), |s| {
        last_tick(&unified(s, "ticker")) >= 3
    });
    sup.cli_ok(&["logs", "disable", "ticks"]);
    let cut = sup.records().last().unwrap()["seq"].as_u64().unwrap();
    let shown_before = last_tick(&show(&sup, &["ticker"]));
    sup.wait_until("new ticks in logs show", secs(10), |s| {
        last_tick(&show(s, &["ticker"])) >= shown_before + 10
    });
    let leaked: Vec<Value> = unified(&sup, "ticker")
        .into_iter()
        .filter(|r| r["seq"].as_u64().unwrap() > cut + 5)
        .collect();
    assert!(
        leaked.is_empty(),
        "a disabled channel reached stdout: {leaked:?}"
    );
    assert!(
        unified(&sup, "other")
            .iter()
            .any(|r| r["seq"].as_u64().unwrap() > cut + 5),
        "other channels keep flowing"
    );
    // The state file keeps it; a restarted supervisor honours it.
    sup.signal(Signal::SIGTERM);
    sup.wait_exit(secs(30));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(h.path().join("tmidb.state.json")).unwrap())
            .unwrap();
    assert_eq!(state["channels"]["ticks"]["enabled"], false);
    let sup = h.start();
    sup.wait_until("ticks buffered after restart", secs(10), |s| {
        last_tick(&show(s, &["ticker"])) >= 10
    });
    assert!(
        unified(&sup, "ticker").is_empty(),
        "disabled after restart too"
    );
    let ch: Vec<Value> =
        serde_json::from_str(&sup.cli_ok(&["logs", "channels", "--json"])).unwrap();
    assert_eq!(
        ch.iter().find(|c| c["channel"] == "ticks").unwrap()["enabled"],
        false
    );
    // Enable restores it; a level filter holds back lower levels.
    sup.cli_ok(&["logs", "enable", "ticks"]);
    sup.wait_until("ticks back in stdout", secs(10), |s| {
        !unified(s, "ticker").is_empty()
    });
    sup.cli_ok(&["logs", "level", "ticks", "warn"]);
    let cut = sup.records().last().unwrap()["seq"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        unified(&sup, "ticker")
            .iter()
            .all(|r| r["seq"].as_u64().unwrap() <= cut + 5),
        "info ticks pass a warn filter"
    );
    assert_eq!(
        sup.cli_ok(&["config", "get", "logs.channel.ticks.level"])
            .trim(),
        "warn"
    );
    sup.cli_ok(&["config", "set", "logs.channel.ticks.level", "info"]);
    assert_eq!(
        sup.cli_ok(&["config", "get", "logs.channel.ticks.level"])
            .trim(),
        "info"
    );
    // Bad settings are refused with the key named.
    let o = sup.cli(&["logs", "disable", "tiks"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown channel `tiks`"));
    let o = sup.cli(&["config", "set", "ports.nats", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("edit it there"));
    let o = sup.cli(&["config", "set", "logs.ring_lines", "lots"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a positive number"));
}

/// Reads `n` JSON records from a `logs follow --json` child, then kills it.
fn follow_some(home: &std::path::Path, args: &[&str], n: usize) -> Vec<Value> {
    let mut child = Command::new(CLI)
        .arg("--home")
        .arg(home)
        .args(["logs", "follow", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = vec![];
    while out.len() < n {
        let line = lines.next().expect("follow ended early").unwrap();
        out.push(serde_json::from_str(&line).unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    out
}

#[test]
fn follow_since_seq_after_a_reconnect_misses_nothing() {
    let h = Home::new();
    h.unit("ticker", TICKER);
    let sup = h.start();
    let first = follow_some(h.path(), &["ticker"], 5);
    let last = first.last().unwrap();
    let (seq, tick) = (last["seq"].as_u64().unwrap(), last_tick(&first));
    // Disconnected for a while; the ticker goes on.
    std::thread::sleep(Duration::from_millis(600));
    let seq_arg = seq.to_string();
    let resumed = follow_some(h.path(), &["ticker", "--since-seq", &seq_arg], 20);
    assert!(
        resumed.iter().all(|r| r.get("gap").is_none()),
        "{resumed:?}"
    );
    let ticks: Vec<u64> = resumed
        .iter()
        .map(|r| r["msg"].as_str().unwrap()[5..].parse().unwrap())
        .collect();
    let expected: Vec<u64> = (tick + 1..tick + 21).collect();
    assert_eq!(
        ticks, expected,
        "resumed exactly after the last record seen"
    );
    // Resuming from a sequence that left the ring says so.
    sup.cli_ok(&["config", "set", "logs.ring_lines", "5"]);
    let gap = follow_some(h.path(), &["ticker", "--since-seq", "1"], 1);
    assert!(gap[0]["gap"].as_u64().unwrap() > 0, "{gap:?}");
}

#[test]
fn a_million_lines_reach_the_sink_in_order() {
    let h = Home::new();
    h.unit(
        "big",
        "[service]\ntype = \"oneshot\"\ncommand = [\"/usr/bin/seq\", \"1000000\"]\n",
    );
    let sup = h.start();
    sup.wait_state("big", "exited", secs(120));
    let count = |text: &str| {
        text.lines()
            .filter(|l| l.contains("\"unit\":\"big\",\"instance\""))
            .count()
    };
    sup.wait_until("1M lines in stdout", secs(60), |s| {
        count(&s.log_text()) == 1_000_000
    });
    let text = sup.log_text();
    let lines = text
        .lines()
        .filter(|l| l.contains("\"unit\":\"big\",\"instance\""));
    for (expect, l) in (1u64..).zip(lines) {
        let msg = l
            .split("\"msg\":\"")
            .nth(1)
            .and_then(|m| m.split('"').next())
            .unwrap();
        assert_eq!(msg.parse::<u64>().unwrap(), expect, "out of order or lost");
    }
    assert_eq!(sup.unit("big").unwrap()["dropped"], 0);
}

/// Speaks the control protocol directly: Hello, then LogFollow, and then reads nothing.
fn stalled_follower(sock: &std::path::Path, unit: &str) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let frame = |s: &mut std::os::unix::net::UnixStream, v: Value| {
        let b = serde_json::to_vec(&v).unwrap();
        s.write_all(&(b.len() as u32).to_be_bytes()).unwrap();
        s.write_all(&b).unwrap();
    };
    frame(
        &mut s,
        serde_json::json!({"request": "hello", "version": tmidb::control::protocol::PROTOCOL_VERSION, "client": "stalled"}),
    );
    frame(
        &mut s,
        serde_json::json!({"request": "log_follow", "units": [unit], "since_seq": null}),
    );
    s
}

#[test]
fn a_blocked_follower_does_not_slow_a_child() {
    let h = Home::new();
    // Held back until the follower is connected.
    let go = h.path().join("go");
    h.unit(
        "chatty",
        &format!("[service]\ntype = \"oneshot\"\ncommand = [\"/bin/sh\", \"-c\", \"while [ ! -e {} ]; do echo waiting; sleep 0.05; done; seq 300000\"]\n", go.display()),
    );
    let sup = h.start();
    // A follow of a unit the supervisor has not loaded yet is refused.
    sup.wait_state("chatty", "starting", secs(10));
    let mut stalled = stalled_follower(&sup.home.join("run/tmidb.sock"), "chatty");
    // The follow is live once a `waiting` line arrives (however loaded the machine is);
    // from then on the follower reads nothing.
    stalled.set_read_timeout(Some(secs(20))).unwrap();
    let mut len = [0u8; 4];
    loop {
        stalled.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stalled.read_exact(&mut body).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_ne!(v["response"], "error", "{v}");
        if v["response"] == "logs" && !v["records"].as_array().unwrap().is_empty() {
            break;
        }
    }
    std::fs::write(&go, "").unwrap();
    // With a follower that never reads, the child still runs to completion.
    let start = Instant::now();
    sup.wait_state("chatty", "exited", secs(60));
    let took = start.elapsed();
    // The follower, reading at last, is told what it missed.
    stalled.set_read_timeout(Some(secs(10))).unwrap();
    let mut saw_gap = false;
    while !saw_gap && stalled.read_exact(&mut len).is_ok() {
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stalled.read_exact(&mut body).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        saw_gap = v["response"] == "log_gap" && v["missed"].as_u64().unwrap() > 0;
    }
    assert!(saw_gap, "a slow follower gets a gap marker");
    assert_eq!(
        sup.unit("chatty").unwrap()["dropped"],
        0,
        "the unified sink lost nothing"
    );
    eprintln!("300k lines with a stalled follower: {took:?}");
}

#[test]
fn journald_gets_one_identifier_per_unit_and_files_rotate() {
    let h = Home::new();
    let sock = h.path().join("journal.sock");
    let journal = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    journal.set_read_timeout(Some(secs(10))).unwrap();
    let toml = std::fs::read_to_string(h.path().join("tmidb.toml")).unwrap();
    std::fs::write(
        h.path().join("tmidb.toml"),
        format!(
            "{toml}[logs]\njournald = \"on\"\njournald_socket = \"{}\"\nfile_dir = \"logs\"\nfile_max_bytes = 4096\nfile_keep = 2\n",
            sock.display()
        ),
    )
    .unwrap();
    let script = r#"echo '{"level":"error","msg":"disk full","free_mb":0}'; i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo "filler line $i"; done; exec sleep 1000"#;
    h.unit(
        "disk",
        &format!(
            "[service]\ncommand = [\"/bin/sh\", \"-c\", {}]\n",
            toml_str(script)
        ),
    );
    let sup = h.start();
    // journald: the error line arrives with the unit's identifier, priority 3, and its field.
    let mut buf = vec![0u8; 65536];
    let mut found = None;
    let deadline = Instant::now() + secs(10);
    while found.is_none() && Instant::now() < deadline {
        let n = journal.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.contains("MESSAGE=disk full") {
            found = Some(text);
        }
    }
    let entry = found.expect("the error line reached journald");
    for want in [
        "SYSLOG_IDENTIFIER=disk\n",
        "PRIORITY=3\n",
        "FREE_MB=0\n",
        "TMIDB_STREAM=stdout\n",
    ] {
        assert!(entry.contains(want), "{want:?} not in {entry:?}");
    }
    // Files: rotated at 4 KiB, two kept, the newest line in the live file.
    sup.wait_until("filler written", secs(10), |s| {
        show(s, &["disk"])
            .iter()
            .any(|r| r["msg"] == "filler line 200")
    });
    let logs = h.path().join("logs");
    sup.wait_until("rotated files", secs(10), |_| {
        logs.join("disk.log.2").exists()
    });
    assert!(
        !logs.join("disk.log.3").exists(),
        "only file_keep = 2 rotated files"
    );
    let live = std::fs::read_to_string(logs.join("disk.log")).unwrap();
    assert!(live.len() <= 4096, "{}", live.len());
    sup.wait_until("last line in the live file", secs(5), |_| {
        std::fs::read_to_string(logs.join("disk.log"))
            .unwrap_or_default()
            .contains("filler line 200")
    });
}

#[test]
fn a_line_longer_than_64_kib_becomes_marked_pieces_that_join_back() {
    let h = Home::new();
    // 100 000 two-byte characters: the cuts must not split one.
    h.unit(
        "long",
        "[service]\ncommand = [\"python3\", \"-c\", \"print('é' * 100000 + 'END'); print('short', flush=True); import time; time.sleep(1000)\"]\n",
    );
    let sup = h.start();
    sup.wait_until("both lines", secs(10), |s| {
        unified(s, "long").iter().any(|r| r["msg"] == "short")
    });
    let recs = unified(&sup, "long");
    let pieces: Vec<&Value> = recs.iter().filter(|r| r["msg"] != "short").collect();
    assert_eq!(pieces.len(), 4, "200 003 bytes in pieces of at most 64 KiB");
    let parts: Vec<(u64, bool)> = pieces
        .iter()
        .map(|r| {
            (
                r["fields"]["part"].as_u64().unwrap(),
                r["fields"]["continued"] == true,
            )
        })
        .collect();
    assert_eq!(parts, [(1, true), (2, true), (3, true), (4, false)]);
    let joined: String = pieces.iter().map(|r| r["msg"].as_str().unwrap()).collect();
    assert_eq!(joined, format!("{}END", "é".repeat(100_000)));
    let short = recs.iter().find(|r| r["msg"] == "short").unwrap();
    assert!(short["fields"].get("part").is_none(), "{short}");
}
