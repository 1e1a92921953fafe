//! Console benchmark (`cargo bench --bench console`): prints figures, asserts nothing
//! but that the pages answer.
//!
//! A category of 5M rows (100 targets, one record per target every 10 s, ~5.8 days)
//! is loaded with SQL. Then, 200 requests each, signed in through the console's own
//! login: the server's time to render the dashboard, the explorer over one day of one
//! target (a page of 100 records and its chart), and the logs page (p50 / p99 as the
//! client sees them, on loopback); the explorer beside the same reads through the REST
//! API (the page of records, and the chart's aggregation); and the time from a
//! record's insert to its row on an open explorer page (the page's Server-Sent Events
//! stream), p50 / p99 over 200 records.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use common::{client, http};

mod common;

use common::{Mode, load};

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Times `n` GETs of `path` with `headers`: milliseconds each.
fn time_gets(port: u16, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let (s, _, body) = client::http(port, "GET", path, headers, b"");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&body));
            ms
        })
        .collect()
}

fn report(what: &str, ms: &[f64]) {
    let max = ms.iter().copied().fold(0.0, f64::max);
    let slow: Vec<String> = ms
        .iter()
        .enumerate()
        .filter(|(_, m)| **m > 10.0 * percentile(ms, 0.5).max(0.5))
        .map(|(i, m)| format!("#{i} {m:.0} ms"))
        .collect();
    println!(
        "{what:<58} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   {}{}",
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        max,
        load(),
        if slow.is_empty() {
            String::new()
        } else {
            format!("\n{:>60}over 10× the median: {}", "", slow.join(", "))
        }
    );
}

fn main() {
    let Some(mode) = Mode::from_args() else {
        return;
    };
    // Rows loaded, and requests per figure (p50/p99 over them).
    let rows: i64 = mode.size(5_000_000, 50_000);
    let n: usize = mode.size(200, 20);
    let stack = common::Stack::start("tmidb-consolebench-", common::API_UNITS);
    let api = stack.api();
    let (home, token) = (stack.home(), stack.token.clone());
    let _db = stack.load_bench(api, rows, true);

    // Signed in as a browser is: the console's login form, its session cookie.
    let pw = std::fs::read_to_string(home.join("secrets/admin.password")).unwrap();
    let form = format!("username=admin&password={}", pw.trim());
    let (s, head, _) = client::http(
        api,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(s, 303);
    let cookie = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l[11..].trim())
        })
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let browser = [("Cookie", cookie.as_str())];
    let bearer = format!("Bearer {token}");
    let rest = [("Authorization", bearer.as_str())];

    let (from, to) = ("2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z");
    let explorer = format!("/data/bench?target=t7&from={from}&to={to}&chart=v&agg=avg&width=960");
    // What the page shows, through the REST API: its page of records, and the
    // aggregation its chart draws (960 px: 240 buckets a day, 10 minutes each).
    let records = format!(
        "/api/v1/categories/bench/records?target=t7&from={from}&to={to}&order=desc&limit=100"
    );
    let buckets = format!(
        "/api/v1/categories/bench/aggregate?field=v&interval=10m&target=t7&from={from}&to={to}"
    );
    // Warm the caches (schema, plans) the way a first visit would.
    for p in [&explorer, "/dashboard", "/logs"] {
        time_gets(api, p, &browser, 3);
    }
    time_gets(api, &records, &rest, 3);
    time_gets(api, &buckets, &rest, 3);
    println!("\n{n} requests each, one after another, on loopback:");
    report(
        "dashboard (admin: units, ingest, backlog, integrity, disk)",
        &time_gets(api, "/dashboard", &browser, n),
    );
    let page = time_gets(api, &explorer, &browser, n);
    report(
        &format!(
            "explorer: one day of one target of {}k rows, with chart",
            rows / 1_000
        ),
        &page,
    );
    report(
        "logs page (last 200 lines of every unit)",
        &time_gets(api, "/logs", &browser, n),
    );
    let r = time_gets(api, &records, &rest, n);
    let b = time_gets(api, &buckets, &rest, n);
    report("REST: the same page of records", &r);
    report("REST: the same aggregation", &b);
    let both: Vec<f64> = r.iter().zip(&b).map(|(x, y)| x + y).collect();
    println!(
        "explorer / REST (records + aggregation): p50 {:.2}x, p99 {:.2}x; explorer / REST records alone: p50 {:.2}x",
        percentile(&page, 0.5) / percentile(&both, 0.5),
        percentile(&page, 0.99) / percentile(&both, 0.99),
        percentile(&page, 0.5) / percentile(&r, 0.5),
    );

    // An open explorer page's live stream: the time from sending a record to its row
    // arriving (the insert commits, then publishes to TMIDB_EVENTS; the page's stream
    // follows it), and from the insert's answer to the row.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api)).unwrap();
    write!(
        s,
        "GET /data/bench/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut r = std::io::BufReader::new(s);
        // The headers, then the body's chunks (an event may span two of them).
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let mut body = String::new();
        loop {
            line.clear();
            if !r.read_line(&mut line).is_ok_and(|n| n > 0) {
                return;
            }
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                continue;
            };
            let mut chunk = vec![0; size + 2];
            if r.read_exact(&mut chunk).is_err() {
                return;
            }
            body.push_str(&String::from_utf8_lossy(&chunk[..size]));
            // Each row names its record: `<td>live-N</td>`.
            while let Some(at) = body.find("<td>live-") {
                let rest = &body[at + 9..];
                let Some(end) = rest.find("</td>") else { break };
                if let Ok(n) = rest[..end].parse() {
                    let _ = tx.send((n, Instant::now()));
                }
                body.drain(..at + 9 + end);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let (mut sent_to_row, mut answered_to_row) = (vec![], vec![]);
    for i in 0..n {
        let record = format!(
            r#"[{{"target":"live-{i}","ts":"2026-02-01T00:00:{:02}Z","v":{i},"n":{i}}}]"#,
            i % 60
        );
        let sent = Instant::now();
        let (st, _) = http(
            api,
            "POST",
            "/api/v1/categories/bench/records",
            &token,
            record.as_bytes(),
        );
        let answered = Instant::now();
        assert_eq!(st, 201);
        let (n, at) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the row on the page");
        assert_eq!(n, i);
        sent_to_row.push((at - sent).as_secs_f64() * 1000.0);
        answered_to_row.push((at.saturating_duration_since(answered)).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    report(
        "insert sent → its row on an open explorer page (SSE)",
        &sent_to_row,
    );
    report(
        "insert answered (committed) → its row on the page",
        &answered_to_row,
    );
    stack.stop();
}
