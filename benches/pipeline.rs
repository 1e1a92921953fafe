//! Pipeline benchmark (`cargo bench --bench pipeline`): prints figures, asserts nothing.
//!
//! 1M records until all are committed by the data-consumers: pushed over HTTP
//! (`POST /ingest/{category}`, batches of 5,000, two clients), then published over NATS
//! (`tmidb.ingest.{category}`), then pushed over HTTP again in a sparse shape that
//! makes a rollup row per record and field; beside them, in the same run, a raw `COPY`
//! of the same 1M rows into a table of the same kind. Then publish→queryable latency
//! p50/p99 at a steady 10k records/s. Prints records/s, the ratios, the latencies and
//! the peak RSS of the data-manager and data-consumers.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

mod common;

const CLI: &str = env!("CARGO_BIN_EXE_tmidb-cli");
const TOTAL: usize = 1_000_000;
const BATCH: usize = 5_000;

fn http(port: u16, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    common::http(port, "POST", path, token, body)
}

/// Record `i` of a run. Dense: 100 targets reporting once a second each (60 records
/// per target in a 1-minute rollup bucket, the usual sensor shape). Sparse: target
/// `i % 100` at second `i`, so nearly every record opens its own 1-minute bucket per
/// field: the worst case for rollup maintenance.
fn record(i: usize, dense: bool) -> serde_json::Value {
    let secs = if dense { i / 100 } else { i };
    serde_json::json!({"target": format!("t{}", i % 100),
        "ts": format!("2026-03-{:02}T{:02}:{:02}:{:02}Z", 1 + (secs / 86400) % 28, (secs / 3600) % 24, (secs / 60) % 60, secs % 60),
        "v": i as f64 / 3.0, "n": i})
}

fn bodies(dense: bool) -> Vec<Vec<u8>> {
    (0..TOTAL / BATCH)
        .map(|b| {
            let recs: Vec<_> = (b * BATCH..(b + 1) * BATCH)
                .map(|i| record(i, dense))
                .collect();
            serde_json::to_vec(&recs).unwrap()
        })
        .collect()
}

/// Pushes `bodies` to `POST /ingest/{category}` from two clients, waiting out 429s.
fn push_http(ingest: u16, token: &str, category: &str, bodies: &[Vec<u8>]) {
    std::thread::scope(|s| {
        for c in 0..2 {
            s.spawn(move || {
                for b in bodies.iter().skip(c).step_by(2) {
                    loop {
                        match http(ingest, &format!("/ingest/{category}"), token, b).0 {
                            202 => break,
                            429 => std::thread::sleep(Duration::from_millis(200)),
                            other => panic!("push answered {other}"),
                        }
                    }
                }
            });
        }
    });
}

/// Publishes `bodies` on `tmidb.ingest.{category}` (JetStream, acknowledged), waiting
/// out a full ingest stream.
async fn push_nats(js: &async_nats::jetstream::Context, category: &str, bodies: &[Vec<u8>]) {
    let subject = format!("tmidb.ingest.{category}");
    let mut acks = std::collections::VecDeque::new();
    for b in bodies {
        loop {
            match js.publish(subject.clone(), b.clone().into()).await {
                Ok(ack) => {
                    acks.push_back(ack);
                    break;
                }
                Err(e) => {
                    eprintln!("publish: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // At most 16 unacknowledged publishes in flight.
        if acks.len() >= 16 {
            acks.pop_front()
                .unwrap()
                .await
                .expect("stored in TMIDB_INGEST");
        }
    }
    for a in acks {
        a.await.expect("stored in TMIDB_INGEST");
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
    let units = [common::API_UNITS, &["data-manager", "data-consumer"]].concat();
    let stack = common::Stack::start("tmidb-pipebench-", 42700, &units, 42700 + 12);
    let (home, token, api, ingest) = (stack.home(), stack.token.clone(), 42700 + 11, 42700 + 12);
    for name in ["pipe", "pipen", "sparse", "rawcopy", "lat"] {
        let def = format!(
            r#"{{"name":"{name}","fields":[{{"name":"v","type":"float"}},{{"name":"n","type":"int"}}]}}"#
        );
        assert_eq!(
            http(api, "/api/v1/categories", &token, def.as_bytes()).0,
            201
        );
    }
    let (rt, pool) = stack.db();
    let cfg = tmidb::config::Config::load(home).unwrap();
    let nats = rt
        .block_on(
            async_nats::ConnectOptions::with_user_and_password(
                "api".into(),
                std::fs::read_to_string(tmidb::setup::nats_password_file(&cfg, "api"))
                    .unwrap()
                    .trim()
                    .into(),
            )
            .connect(format!("127.0.0.1:{}", cfg.ports["nats"])),
        )
        .unwrap();
    let js = {
        let _in_runtime = rt.enter();
        async_nats::jetstream::new(nats.clone())
    };
    let count = |t: &str| -> i64 {
        rt.block_on(
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
                .fetch_one(&pool),
        )
        .unwrap()
    };
    let wait_all = |t: &str| {
        while count(t) < TOTAL as i64 {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let dense = bodies(true);

    // End to end over HTTP, two clients.
    let start = Instant::now();
    push_http(ingest, &token, "pipe", &dense);
    let pushed = start.elapsed().as_secs_f64();
    wait_all("rec_pipe");
    let http_s = start.elapsed().as_secs_f64();
    println!(
        "HTTP push → committed: {TOTAL} records in {http_s:.2} s = {:.0} records/s (all pushes answered after {pushed:.2} s)",
        TOTAL as f64 / http_s
    );

    // End to end over NATS (tmidb.ingest.{category}).
    let start = Instant::now();
    rt.block_on(push_nats(&js, "pipen", &dense));
    let pushed = start.elapsed().as_secs_f64();
    wait_all("rec_pipen");
    let nats_s = start.elapsed().as_secs_f64();
    println!(
        "NATS publish → committed: {TOTAL} records in {nats_s:.2} s = {:.0} records/s (all publishes acknowledged after {pushed:.2} s)",
        TOTAL as f64 / nats_s
    );
    drop(dense);

    // The worst case for rollups: nearly one new 1-minute bucket per record and field.
    let sparse = bodies(false);
    let start = Instant::now();
    push_http(ingest, &token, "sparse", &sparse);
    wait_all("rec_sparse");
    let sparse_s = start.elapsed().as_secs_f64();
    drop(sparse);
    println!(
        "HTTP push → committed, sparse (a rollup row per record and field): {TOTAL} records in {sparse_s:.2} s = {:.0} records/s",
        TOTAL as f64 / sparse_s
    );

    // Raw COPY of the same (dense) rows into a table of the same kind (its March
    // partition made first through the API, as the pipeline's were).
    let first = br#"[{"target":"t0","ts":"2026-03-01T00:00:00Z","v":0.0,"n":-1}]"#;
    assert_eq!(
        http(api, "/api/v1/categories/rawcopy/records", &token, first).0,
        201
    );
    let mut csv = String::with_capacity(TOTAL * 60);
    for i in 0..TOTAL {
        let r = record(i, true);
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
    println!(
        "ratio end to end / COPY: HTTP {:.2}, NATS {:.2}, HTTP sparse {:.2} (target ≥ 0.6)",
        copy / http_s,
        copy / nats_s,
        copy / sparse_s
    );

    // Publish → queryable at a steady 10k records/s: 100 records every 10 ms on
    // tmidb.ingest.lat for 10 s. A record is queryable once its transaction commits;
    // the data-consumer announces it on tmidb.live.lat right after the commit, so the
    // time to that announcement is the latency (slightly over, never under).
    let (p50, p99, seen) = rt.block_on(async {
        const RATE_BATCHES: usize = 1000;
        let mut live = nats.subscribe("tmidb.live.lat").await.unwrap();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(vec![None; RATE_BATCHES]));
        let publisher = {
            let (js, sent) = (js.clone(), sent.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for b in 0..RATE_BATCHES {
                    tick.tick().await;
                    let recs: Vec<_> = (0..100)
                        .map(|k| {
                            let mut r = record(b * 100 + k, true);
                            r["n"] = b.into();
                            r
                        })
                        .collect();
                    sent.lock().unwrap()[b] = Some(Instant::now());
                    js.publish(
                        "tmidb.ingest.lat",
                        serde_json::to_vec(&recs).unwrap().into(),
                    )
                    .await
                    .unwrap();
                }
            })
        };
        let mut latencies = vec![];
        while latencies.len() < RATE_BATCHES * 100 {
            let m = tokio::time::timeout(Duration::from_secs(30), live.next())
                .await
                .expect("live records within 30 s")
                .unwrap();
            let at = Instant::now();
            let Ok(tmidb::model::wire::Event::Records { records, .. }) =
                serde_json::from_slice(&m.payload)
            else {
                continue;
            };
            for r in records {
                let b = r["n"].as_u64().unwrap() as usize;
                let t0 = sent.lock().unwrap()[b].unwrap();
                latencies.push((at - t0).as_secs_f64() * 1000.0);
            }
        }
        publisher.await.unwrap();
        latencies.sort_by(f64::total_cmp);
        (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.len(),
        )
    });
    println!(
        "publish → queryable at 10k records/s: p50 {p50:.1} ms, p99 {p99:.1} ms ({seen} records)"
    );
    println!(
        "peak RSS: data-manager {:.1} MiB, data-consumer {:.1} MiB (largest instance)",
        peak_rss_mib(home, "data-manager"),
        peak_rss_mib(home, "data-consumer")
    );
    stack.stop();
}
