//! Pipeline benchmark (`cargo bench --bench pipeline`): prints figures, asserts nothing.
//!
//! 1M records pushed over HTTP (`POST /ingest/{category}`, batches of 5,000, two
//! clients) until all are committed by the data-consumers; beside it, in the same run,
//! a raw `COPY` of the same 1M rows into a table of the same kind. Prints records/s,
//! the ratio, and the peak RSS of the data-manager and data-consumers.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

const CLI: &str = env!("CARGO_BIN_EXE_tmidb-cli");
const TOTAL: usize = 1_000_000;
const BATCH: usize = 5_000;

fn http(port: u16, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    common::http(port, "POST", path, token, body)
}

fn record(i: usize) -> serde_json::Value {
    serde_json::json!({"target": format!("t{}", i % 100), "ts": format!("2026-03-{:02}T{:02}:{:02}:{:02}Z", 1 + (i / 86400) % 28, (i / 3600) % 24, (i / 60) % 60, i % 60), "v": i as f64 / 3.0, "n": i})
}

fn peak_rss_mib(home: &std::path::Path, unit: &str) -> f64 {
    let o = Command::new(CLI)
        .arg("--home")
        .arg(home)
        .args(["status", unit, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["pid"].as_i64())
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        })
        .fold(0.0, f64::max)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let units = [
        "postgresql-init",
        "postgresql",
        "migrate",
        "nats",
        "api",
        "data-manager",
        "data-consumer",
    ];
    let stack = common::Stack::start("tmidb-pipebench-", 42700, &units, 42700 + 12);
    let (home, token, api, ingest) = (stack.home(), stack.token.clone(), 42700 + 11, 42700 + 12);
    let def =
        br#"{"name":"pipe","fields":[{"name":"v","type":"float"},{"name":"n","type":"int"}]}"#;
    assert_eq!(http(api, "/api/v1/categories", &token, def).0, 201);
    let def =
        br#"{"name":"rawcopy","fields":[{"name":"v","type":"float"},{"name":"n","type":"int"}]}"#;
    assert_eq!(http(api, "/api/v1/categories", &token, def).0, 201);
    let bodies: Vec<Vec<u8>> = (0..TOTAL / BATCH)
        .map(|b| {
            serde_json::to_vec(&(b * BATCH..(b + 1) * BATCH).map(record).collect::<Vec<_>>())
                .unwrap()
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = tmidb::config::Config::load(home).unwrap();
    let pool = rt.block_on(tmidb::db::connect(&cfg, 2)).unwrap();
    let count = |t: &str| -> i64 {
        rt.block_on(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
                .fetch_one(&pool),
        )
        .unwrap()
    };

    // End to end over HTTP, two clients.
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..2 {
            let (bodies, token) = (&bodies, &token);
            s.spawn(move || {
                for b in bodies.iter().skip(c).step_by(2) {
                    loop {
                        match http(ingest, "/ingest/pipe", token, b).0 {
                            202 => break,
                            429 => std::thread::sleep(Duration::from_millis(200)),
                            other => panic!("push answered {other}"),
                        }
                    }
                }
            });
        }
    });
    let pushed = start.elapsed().as_secs_f64();
    while count("rec_pipe") < TOTAL as i64 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let e2e = start.elapsed().as_secs_f64();
    println!(
        "HTTP push → committed: {TOTAL} records in {e2e:.2} s = {:.0} records/s (all pushes answered after {pushed:.2} s)",
        TOTAL as f64 / e2e
    );

    // Raw COPY of the same rows into a table of the same kind (its March partition made
    // first through the API, as the pipeline's were).
    let first = br#"[{"target":"t0","ts":"2026-03-01T00:00:00Z","v":0.0,"n":-1}]"#;
    assert_eq!(
        http(api, "/api/v1/categories/rawcopy/records", &token, first).0,
        201
    );
    let mut csv = String::with_capacity(TOTAL * 60);
    for i in 0..TOTAL {
        let r = record(i);
        csv.push_str(&format!(
            "{},{},1,{},{}\n",
            r["target"].as_str().unwrap(),
            r["ts"].as_str().unwrap(),
            r["v"],
            r["n"]
        ));
    }
    let start = Instant::now();
    rt.block_on(async {
        let mut conn = pool.acquire().await.unwrap();
        let mut copy = conn
            .copy_in_raw(
                "COPY rec_rawcopy (target, ts, schema_version, v, n) FROM STDIN (FORMAT csv)",
            )
            .await
            .unwrap();
        copy.send(csv.as_bytes()).await.unwrap();
        copy.finish().await.unwrap();
    });
    let copy = start.elapsed().as_secs_f64();
    println!(
        "raw COPY of the same rows: {TOTAL} in {copy:.2} s = {:.0} rows/s",
        TOTAL as f64 / copy
    );
    println!("ratio end to end / COPY: {:.2} (target ≥ 0.6)", copy / e2e);
    println!(
        "peak RSS: data-manager {:.1} MiB, data-consumer {:.1} MiB (largest instance)",
        peak_rss_mib(home, "data-manager"),
        peak_rss_mib(home, "data-consumer")
    );
    stack.stop();
}
