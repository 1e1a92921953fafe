//! API benchmark (`cargo bench --bench api`): prints figures, asserts nothing.
//!
//! A category of 5M rows (100 targets, one record per target every 10 s, ~5.8 days) is
//! loaded with SQL. Then, medians of 15 runs: a one-day time-range query for one target
//! through `GET …/records` against the same SQL run directly, and a 1-minute aggregation
//! over that day through `GET …/aggregate` against its SQL; finally insert throughput
//! through `POST …/records` in batches of 1,000.

use std::time::Instant;

use common::http;

mod common;

const ROWS: i64 = 5_000_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let stack = common::Stack::start(
        "tmidb-apibench-",
        42500,
        &[
            "postgresql-init",
            "postgresql",
            "migrate",
            "nats-init",
            "nats",
            "api",
        ],
        42500 + 11,
    );
    let (home, token, port) = (stack.home(), stack.token.clone(), 42500 + 11);
    let def =
        br#"{"name":"bench","fields":[{"name":"v","type":"float"},{"name":"n","type":"int"}]}"#;
    assert_eq!(http(port, "POST", "/api/v1/categories", &token, def).0, 201);
    // One record through the api creates the January 2026 partition the load goes into.
    let first = br#"[{"target":"t0","ts":"2026-01-01T00:00:00Z","v":0.5,"n":0}]"#;
    assert_eq!(
        http(
            port,
            "POST",
            "/api/v1/categories/bench/records",
            &token,
            first
        )
        .0,
        201
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = tmidb::config::Config::load(home).unwrap();
    let pool = rt.block_on(tmidb::db::connect(&cfg, 2)).unwrap();
    let load = Instant::now();
    rt.block_on(async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rec_bench (target, ts, schema_version, v, n) SELECT 't' || (g % 100), \
             TIMESTAMPTZ '2026-01-01 00:00:10+00' + (g / 100) * INTERVAL '10 seconds', 1, random() * 100, g \
             FROM generate_series(0, {}) g",
            ROWS - 2
        )))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE rec_bench").execute(&pool).await.unwrap();
    });
    println!(
        "loaded {ROWS} rows by SQL in {:.1} s",
        load.elapsed().as_secs_f64()
    );

    let (from, to) = ("2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z");
    let query_path =
        format!("/api/v1/categories/bench/records?target=t7&from={from}&to={to}&limit=10000");
    // The SQL the records route runs for that request.
    let query_sql = "SELECT jsonb_strip_nulls(to_jsonb(x) - 'id')::text AS rec, x.ts, x.id FROM (SELECT id, target, ts, schema_version, \"v\", \"n\" \
                     FROM \"rec_bench\" WHERE true AND target = $1::text AND ts >= $2::timestamptz AND ts < $3::timestamptz \
                     ORDER BY ts, id LIMIT 10001) x ORDER BY x.ts, x.id";
    let agg_path = format!(
        "/api/v1/categories/bench/aggregate?field=v&interval=1m&target=t7&from={from}&to={to}"
    );
    // The SQL the aggregate route runs for that request.
    let agg_sql = "SELECT count(*), coalesce(json_agg(json_build_object('target', target, 'bucket', bucket, 'count', n, \
                   'min', lo, 'max', hi, 'avg', mean, 'sum', total) ORDER BY target, bucket), '[]')::text FROM (\
                   SELECT target, date_bin(make_interval(secs => $1), ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, \
                   count(\"v\") AS n, min(\"v\")::float8 AS lo, max(\"v\")::float8 AS hi, avg(\"v\")::float8 AS mean, sum(\"v\")::float8 AS total \
                   FROM \"rec_bench\" WHERE ($2::text IS NULL OR target = $2) AND ($3::timestamptz IS NULL OR ts >= $3) AND ($4::timestamptz IS NULL OR ts < $4) \
                   GROUP BY target, bucket LIMIT 100001) b";
    let (f, t) = (
        chrono::DateTime::parse_from_rfc3339(from).unwrap(),
        chrono::DateTime::parse_from_rfc3339(to).unwrap(),
    );
    let mut api_q = vec![];
    let mut sql_q = vec![];
    let mut api_a = vec![];
    let mut sql_a = vec![];
    let mut rows = 0;
    for _ in 0..15 {
        let s = Instant::now();
        let (st, body) = http(port, "GET", &query_path, &token, b"");
        api_q.push(s.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(st, 200);
        rows = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["records"]
            .as_array()
            .unwrap()
            .len();
        let s = Instant::now();
        let r: Vec<(String, chrono::DateTime<chrono::Utc>, uuid::Uuid)> = rt
            .block_on(
                sqlx::query_as(query_sql)
                    .bind("t7")
                    .bind(f)
                    .bind(t)
                    .fetch_all(&pool),
            )
            .unwrap();
        sql_q.push(s.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.len(), rows);
        let s = Instant::now();
        assert_eq!(http(port, "GET", &agg_path, &token, b"").0, 200);
        api_a.push(s.elapsed().as_secs_f64() * 1000.0);
        let s = Instant::now();
        let _: (i64, String) = rt
            .block_on(
                sqlx::query_as(agg_sql)
                    .bind(60.0f64)
                    .bind(Some("t7"))
                    .bind(Some(f))
                    .bind(Some(t))
                    .fetch_one(&pool),
            )
            .unwrap();
        sql_a.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    let (aq, sq, aa, sa) = (median(api_q), median(sql_q), median(api_a), median(sql_a));
    println!(
        "time-range query, 1 target, 1 day ({rows} rows of {ROWS}): API {aq:.1} ms, SQL {sq:.1} ms, ratio {:.2} (target ≤ 1.2)",
        aq / sq
    );
    println!(
        "1-minute aggregation over that day (1440 buckets): API {aa:.1} ms, SQL {sa:.1} ms, ratio {:.2} (target ≤ 1.2)",
        aa / sa
    );

    // Inserts: 200 batches of 1,000 records in February, sequentially.
    let batches: Vec<Vec<u8>> = (0..200)
        .map(|b| {
            let recs: Vec<serde_json::Value> = (0..1000)
                .map(|i| {
                    let n = b * 1000 + i;
                    serde_json::json!({"target": format!("t{}", n % 100), "ts": format!("2026-02-01T00:00:00Z"), "v": n as f64 / 7.0, "n": n})
                })
                .collect();
            serde_json::to_vec(&recs).unwrap()
        })
        .collect();
    let s = Instant::now();
    for b in &batches {
        assert_eq!(
            http(port, "POST", "/api/v1/categories/bench/records", &token, b).0,
            201
        );
    }
    let secs = s.elapsed().as_secs_f64();
    println!(
        "insert through the API: 200 000 records in batches of 1000 in {secs:.2} s = {:.0} records/s",
        200_000.0 / secs
    );

    stack.stop();
}
