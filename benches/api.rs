//! API benchmark (`cargo bench --bench api`): prints figures, asserts nothing.
//!
//! A category of 5M rows (100 targets, one record per target every 10 s, ~5.8 days) is
//! loaded with SQL. Then, medians of 15 runs: a one-day time-range query for one target
//! through `GET …/records` against the same read (`db::records::page`) called
//! directly, and a 1-minute aggregation over that day computed from the records
//! through `GET …/aggregate` against `db::records::buckets`; finally insert throughput
//! through `POST …/records` in batches of 1,000.

use std::time::Instant;

use common::http;

mod common;

use common::{Mode, load, median, runs};

fn main() {
    let Some(mode) = Mode::from_args() else {
        return;
    };
    let rows_total: i64 = mode.size(5_000_000, 50_000);
    let stack = common::Stack::start("tmidb-apibench-", common::API_UNITS);
    let (token, port) = (stack.token.clone(), stack.api());
    let (rt, pool) = stack.load_bench(port, rows_total, false);

    // One day of the 5.8 loaded (quick: the first hour of the 1.4 loaded).
    let (from, to) = mode.size(
        ("2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"),
        ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"),
    );
    let query_path =
        format!("/api/v1/categories/bench/records?target=t7&from={from}&to={to}&limit=10000");
    let agg_path = format!(
        "/api/v1/categories/bench/aggregate?field=v&interval=1m&target=t7&from={from}&to={to}&raw=true"
    );
    // What the routes run for those requests, called directly: the same SQL, without
    // HTTP, authentication and JSON.
    use tmidb::model::schema::{Field, FieldType, Schema};
    let schema = Schema {
        category: "bench".into(),
        version: 1,
        fields: vec![
            Field::new("v", FieldType::Float),
            Field::new("n", FieldType::Int),
        ],
        rollup_slots: Default::default(),
    };
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();
    let sel = tmidb::model::query::Selection {
        target: Some("t7".into()),
        from: Some(parse(from)),
        to: Some(parse(to)),
        filters: vec![],
    };
    let mut api_q = vec![];
    let mut sql_q = vec![];
    let mut api_a = vec![];
    let mut sql_a = vec![];
    let mut rows = 0;
    println!("{} reads: {} runs each", load(), mode.size(15, 3));
    for _ in 0..mode.size(15, 3) {
        let s = Instant::now();
        let (st, body) = http(port, "GET", &query_path, &token, b"");
        api_q.push(s.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(st, 200);
        rows = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["records"]
            .as_array()
            .unwrap()
            .len();
        let s = Instant::now();
        let r = rt
            .block_on(tmidb::db::records::page(
                &pool,
                &schema,
                &sel,
                tmidb::model::query::Order::Asc,
                10_001,
                None,
            ))
            .unwrap();
        sql_q.push(s.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.len(), rows);
        let s = Instant::now();
        assert_eq!(http(port, "GET", &agg_path, &token, b"").0, 200);
        api_a.push(s.elapsed().as_secs_f64() * 1000.0);
        let s = Instant::now();
        rt.block_on(tmidb::db::records::buckets(
            &pool, &schema, "v", 60.0, &sel, 100_000,
        ))
        .unwrap();
        sql_a.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    let (aq, sq, aa, sa) = (median(api_q), median(sql_q), median(api_a), median(sql_a));
    println!(
        "time-range query, 1 target, {from} to {to} ({rows} rows of {rows_total}): API {aq:.1} ms, SQL {sq:.1} ms, ratio {:.2} (target ≤ 1.2)",
        aq / sq
    );
    println!(
        "1-minute aggregation over that range: API {aa:.1} ms, SQL {sa:.1} ms, ratio {:.2} (target ≤ 1.2)",
        aa / sa
    );

    // Inserts: batches of 1,000 new records in February, sequentially (each run its
    // own records: a repeat would be skipped as already stored).
    let batches = mode.size(200, 10);
    let mut run = 0;
    let (rate, all) = common::median_of(mode, "insert through the API", || {
        run += 1;
        let bodies: Vec<Vec<u8>> = (0..batches)
            .map(|b| {
                let recs: Vec<serde_json::Value> = (0..1000)
                    .map(|i| {
                        let n = (run * batches + b) * 1000 + i;
                        serde_json::json!({"target": format!("t{}", n % 100), "ts": format!("2026-02-01T00:00:00Z"), "v": n as f64 / 7.0, "n": n})
                    })
                    .collect();
                serde_json::to_vec(&recs).unwrap()
            })
            .collect();
        let s = Instant::now();
        for b in &bodies {
            assert_eq!(
                http(port, "POST", "/api/v1/categories/bench/records", &token, b).0,
                201
            );
        }
        (batches * 1000) as f64 / s.elapsed().as_secs_f64()
    });
    println!(
        "insert through the API: {} records in batches of 1000: {rate:.0} records/s (median; runs {})",
        batches * 1000,
        runs(&all, 0)
    );

    stack.stop();
}
