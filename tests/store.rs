//! The one record write path ([`tmidb::db::store::Writer`]) called directly on the
//! shared test PostgreSQL: what it stores, what it derives, and that a second write of
//! the same records adds nothing.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tmidb::db::store::{Origin, Writer};
use tmidb::model::wire::Row;

use crate::helpers::{api_stack, psql};

/// Creates a category on the shared stack through the API.
fn create_category(body: Value) {
    let api = api_stack();
    let auth = format!("Bearer {}", api.admin());
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/categories",
        &[("Authorization", auth.as_str())],
        Some(&body),
    );
    assert_eq!(s, 201, "{v}");
}

#[test]
fn one_write_stores_rows_rollups_alerts_and_the_ledger_and_a_repeat_adds_nothing() {
    let api = api_stack();
    let auth = format!("Bearer {}", api.admin());
    let h = [("Authorization", auth.as_str())];
    create_category(json!({"name": "store_path", "fields": [{"name": "temp", "type": "float"}]}));
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/alert-rules",
        &h,
        Some(
            &json!({"name": "store_path_hot", "category": "store_path", "kind": "threshold",
                     "field": "temp", "op": "gt", "value": 30.0}),
        ),
    );
    assert_eq!(s, 201, "{v}");

    let home = api.home.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let write = |values: &[(u128, &str, Value)]| {
        rt.block_on(async {
            let cfg = tmidb::config::Config::load(&home).unwrap();
            let pool = tmidb::db::connect(&cfg, 2).await.unwrap();
            let storage = tmidb::db::storage(&pool).await;
            let schema = tmidb::db::categories::SchemaCache::default()
                .get(&pool, "store_path")
                .await
                .unwrap();
            let ts = chrono::DateTime::parse_from_rfc3339("2026-12-02T10:17:05Z")
                .unwrap()
                .with_timezone(&chrono::Utc);
            let cache = Default::default();
            tmidb::db::categories::ensure_partitions(
                &pool,
                storage,
                &cache,
                "store_path",
                std::iter::once(ts),
            )
            .await
            .unwrap();
            let fields: Vec<BTreeMap<String, Value>> = values
                .iter()
                .map(|(_, _, v)| serde_json::from_value(v.clone()).unwrap())
                .collect();
            let rows: Vec<Row> = values
                .iter()
                .zip(&fields)
                .map(|((id, target, _), f)| Row {
                    id: uuid::Uuid::from_u128(*id),
                    target,
                    ts,
                    values: f,
                })
                .collect();
            let mut tx = pool.begin().await.unwrap();
            let mut w = Writer::default();
            w.records(&mut tx, &schema, &[(Origin::api(), &rows)])
                .await
                .unwrap();
            let written = w.finish(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            written
        })
    };
    let temp = |t: f64| json!({ "temp": t });
    let rows = [
        (1, "a", temp(31.0)),
        (2, "a", temp(20.0)),
        (3, "b", temp(40.0)),
    ];
    let first = write(&rows);
    assert_eq!(first.new_rows, 3);
    // Target a's latest record (same time: the last one) is 20, b's is 40.
    assert_eq!(first.alerts, 1, "{first:?}");
    assert_eq!(first.live.len(), 1);
    assert_eq!(first.live[0].records.len(), 3);
    assert_eq!(first.live[0].records[2]["target"], "b");
    let q = |sql: &str| psql(&home, sql);
    // The hourly counts of one target's rollup row, per field slot.
    let hourly_counts = |target: &str| {
        q(&format!(
            "SELECT r.count FROM rollups r JOIN rollup_series s ON s.id = r.series
             WHERE s.category = 'store_path' AND r.width = 3600 AND s.target = '{target}'"
        ))
    };
    assert_eq!(q("SELECT count(*) FROM rec_store_path"), "3");
    assert_eq!(
        q(
            "SELECT r.count, r.min, r.max, r.sum FROM rollups r JOIN rollup_series s ON s.id = r.series
             WHERE s.category = 'store_path' AND r.width = 60 AND s.target = 'a'"
        ),
        "{2}|{20}|{31}|{51}",
        "one row per target and bucket, the field in slot 0"
    );
    assert_eq!(
        q(
            "SELECT bucket = date_bin('1 minute', '2026-12-02T10:17:05Z'::timestamptz, '2000-01-01')
             FROM rollups r JOIN rollup_series s ON s.id = r.series
             WHERE s.category = 'store_path' AND r.width = 60 AND s.target = 'a'"
        ),
        "t",
        "the bucket Rust computes is date_bin's"
    );
    assert_eq!(
        q("SELECT target, state FROM alerts WHERE category = 'store_path'"),
        "b|firing"
    );
    assert_eq!(
        q(
            "SELECT records, new_rows, source FROM ingest_batches WHERE category = 'store_path' ORDER BY id"
        ),
        "3|3|api",
        "the ledger names the batch's source"
    );

    let again = write(&rows);
    assert_eq!(
        (again.new_rows, again.alerts, again.live.len()),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(q("SELECT count(*) FROM rec_store_path"), "3");
    assert_eq!(
        hourly_counts("a"),
        "{2}",
        "a repeated record adds nothing to its rollup"
    );
    assert_eq!(
        q(
            "SELECT string_agg(records || '|' || new_rows, ',' ORDER BY id) FROM ingest_batches WHERE category = 'store_path'"
        ),
        "3|3,3|0"
    );
    // A version that adds a field (declared first): the old field keeps slot 0, the
    // new one takes slot 1, and a bucket written before gets its arrays lengthened.
    let (s, _, v) = api.call(
        "PUT",
        "/api/v1/categories/store_path",
        &h,
        Some(&json!({"fields": [{"name": "hum", "type": "float"}, {"name": "temp", "type": "float"}]})),
    );
    assert_eq!(s, 200, "{v}");
    write(&[
        (4, "a", json!({"temp": 10.0, "hum": 55.0})),
        (5, "c", json!({"hum": 1.0})),
    ]);
    assert_eq!(
        q(
            "SELECT string_agg(field || '|' || slot, ',' ORDER BY field) FROM rollup_fields WHERE category = 'store_path'"
        ),
        "hum|1,temp|0"
    );
    assert_eq!(
        q(
            "SELECT s.target, r.count, r.min, r.max, r.sum FROM rollups r JOIN rollup_series s ON s.id = r.series
             WHERE s.category = 'store_path' AND r.width = 3600 ORDER BY s.target"
        ),
        "a|{3,1}|{10,55}|{31,55}|{61,55}\nb|{1}|{40}|{40}|{40}\nc|{0,1}|{Infinity,1}|{-Infinity,1}|{0,1}"
    );
    // The api answers from the rollups what it computes from the records.
    for field in ["hum", "temp"] {
        let path = |raw: bool| {
            format!(
                "/api/v1/categories/store_path/aggregate?field={field}&interval=1h&from=2026-12-02T10:00:00Z&to=2026-12-02T11:00:00Z&raw={raw}"
            )
        };
        let (s, _, rolled) = api.call("GET", &path(false), &h, None);
        assert_eq!(s, 200, "{rolled}");
        let (_, _, raw) = api.call("GET", &path(true), &h, None);
        assert_eq!(rolled, raw, "{field}");
        let got: Vec<(String, i64)> = rolled
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["target"].as_str().unwrap().to_string(),
                    b["count"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, i64)> = match field {
            "hum" => vec![("a".into(), 1), ("c".into(), 1)],
            _ => vec![("a".into(), 3), ("b".into(), 1)],
        };
        assert_eq!(got, want, "{field}: {rolled}");
    }

    // A stored record beside a new one (the plain insert's unique violation), and a new
    // one given twice in one batch: each new id stored once and counted once.
    let mixed = write(&[(2, "a", temp(20.0)), (6, "d", temp(21.0))]);
    assert_eq!(mixed.new_rows, 1, "{mixed:?}");
    let twice = write(&[(7, "d", temp(22.0)), (7, "d", temp(22.0))]);
    assert_eq!(twice.new_rows, 1, "{twice:?}");
    assert_eq!(q("SELECT count(*) FROM rec_store_path"), "7");
    assert_eq!(
        hourly_counts("d"),
        "{2}",
        "each new record counted once in its rollup"
    );
}

/// Writes `n` records of category `integrity_blocks` (ids from `from`, a 600-byte pad
/// so a few thousand fill many blocks) through the write path in `tx`, half in October
/// and half in November (two partitions, made once per `partitions` cache).
async fn write_padded(
    pool: &sqlx::PgPool,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    partitions: &tmidb::db::categories::PartitionCache,
    from: u128,
    n: u128,
) {
    let storage = tmidb::db::storage(pool).await;
    let schema = tmidb::db::categories::SchemaCache::default()
        .get(pool, "integrity_blocks")
        .await
        .unwrap();
    let ts = |i: u128| {
        let month = if i % 2 == 0 { 10 } else { 11 };
        chrono::DateTime::parse_from_rfc3339(&format!(
            "2026-{month}-03T{:02}:{:02}:{:02}Z",
            (i / 3600) % 24,
            (i / 60) % 60,
            i % 60
        ))
        .unwrap()
        .with_timezone(&chrono::Utc)
    };
    tmidb::db::categories::ensure_partitions(
        pool,
        storage,
        partitions,
        "integrity_blocks",
        [ts(0), ts(1)].into_iter(),
    )
    .await
    .unwrap();
    let pad = Value::from("p".repeat(600));
    let fields: Vec<BTreeMap<String, Value>> = (from..from + n)
        .map(|i| {
            BTreeMap::from([
                ("pad".to_string(), pad.clone()),
                ("v".to_string(), Value::from(i as i64)),
            ])
        })
        .collect();
    let rows: Vec<Row> = (from..from + n)
        .zip(&fields)
        .map(|(i, f)| Row {
            id: uuid::Uuid::from_u128(i + 1),
            target: "t",
            ts: ts(i),
            values: f,
        })
        .collect();
    let mut w = Writer::default();
    w.records(tx, &schema, &[(Origin::api(), &rows)])
        .await
        .unwrap();
    w.finish(tx).await.unwrap();
}

/// The reconciliation reads every block of every partition (in chunks of
/// `CHUNK_BLOCKS`), so one row taken or added anywhere is seen; and it sees the ledger
/// and the tables at one instant, so records stored while it reads are no mismatch.
#[test]
fn reconciliation_reads_every_block_in_one_snapshot_while_records_are_stored() {
    use tmidb::integrity::{Pace, reconcile};
    let api = api_stack();
    create_category(json!({"name": "integrity_blocks", "fields": [
        {"name": "pad", "type": "text"}, {"name": "v", "type": "int"}]}));
    let home = api.home.clone();
    let q = |sql: &str| psql(&home, sql);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = rt.block_on(async {
        let cfg = tmidb::config::Config::load(&home).unwrap();
        tmidb::db::connect(&cfg, 4).await.unwrap()
    });
    let partitions = tmidb::db::categories::PartitionCache::default();
    let total: u128 = 30_000;
    for from in (0..total).step_by(5_000) {
        rt.block_on(async {
            let mut tx = pool.begin().await.unwrap();
            write_padded(&pool, &mut tx, &partitions, from, 5_000).await;
            tx.commit().await.unwrap();
        });
    }
    let blocks: i64 = q(
        "SELECT max(pg_relation_size(c.oid)) / 8192 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'rec_integrity_blocks'::regclass",
    )
    .parse()
    .unwrap();
    assert!(
        blocks > 3 * tmidb::integrity::CHUNK_BLOCKS,
        "each partition spans several chunks: {blocks} blocks"
    );
    let check = |pace| {
        let r = rt
            .block_on(reconcile(
                &pool,
                None,
                std::time::Duration::from_secs(600),
                pace,
            ))
            .unwrap();
        r.categories
            .into_iter()
            .find(|c| c.category == "integrity_blocks")
            .unwrap()
    };
    let c = check(Pace::Now);
    assert_eq!((c.ledger_rows, c.stored_rows), (30_000, 30_000), "{c:?}");
    assert!(
        c.checksum_ok && c.missing_rows == 0 && c.unexpected_rows == 0,
        "{c:?}"
    );

    // One row from a block past the first chunks of a partition, taken and put back.
    let deep = 2 * tmidb::integrity::CHUNK_BLOCKS + 10;
    q(&format!(
        "CREATE TABLE integrity_kept AS SELECT * FROM rec_integrity_blocks
         WHERE ctid >= '({deep},0)' ORDER BY ctid LIMIT 1;
         DELETE FROM rec_integrity_blocks WHERE id = (SELECT id FROM integrity_kept)"
    ));
    let c = check(Pace::Background);
    assert_eq!((c.missing_rows, c.checksum_ok), (1, false), "{c:?}");
    q("INSERT INTO rec_integrity_blocks SELECT * FROM integrity_kept");
    let c = check(Pace::Now);
    assert!(c.checksum_ok && c.missing_rows == 0, "{c:?}");
    // A row the ledger never saw.
    q(
        "INSERT INTO rec_integrity_blocks (id, target, ts, schema_version, v)
       SELECT gen_random_uuid(), 'x', ts, schema_version, 1 FROM integrity_kept;
       DROP TABLE integrity_kept",
    );
    let c = check(Pace::Now);
    assert_eq!((c.unexpected_rows, c.checksum_ok), (1, false), "{c:?}");
    q("DELETE FROM rec_integrity_blocks WHERE target = 'x'");

    // Records committed after the reconciliation read the ledger, before it reads the
    // rows (it waits for the table a writer holds): still a match, of the ledger and
    // the rows as they were when it began.
    let c = rt.block_on(async {
        let mut writer = pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE rec_integrity_blocks IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *writer)
            .await
            .unwrap();
        let task = tokio::spawn({
            let pool = pool.clone();
            async move {
                reconcile(&pool, None, std::time::Duration::from_secs(600), Pace::Now)
                    .await
                    .unwrap()
            }
        });
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_inherits i ON i.inhrelid = l.relation
                 WHERE NOT l.granted AND i.inhparent = 'rec_integrity_blocks'::regclass",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        write_padded(&pool, &mut writer, &partitions, total, 200).await;
        writer.commit().await.unwrap();
        let report = task.await.unwrap();
        report
            .categories
            .into_iter()
            .find(|c| c.category == "integrity_blocks")
            .unwrap()
    });
    assert_eq!(c.ledger_rows, total as i64, "{c:?}");
    assert!(
        c.checksum_ok && c.missing_rows == 0 && c.unexpected_rows == 0,
        "{c:?}"
    );
    let c = check(Pace::Now);
    assert_eq!(c.ledger_rows, total as i64 + 200, "{c:?}");
    assert!(c.checksum_ok, "{c:?}");
}

/// Migration 0005 on a database at 0004 holding rollups in the old shape (a row per
/// field with a text key): every field gets a slot (name order), every target a
/// series, every (target, width, bucket) one row whose arrays hold what the old rows
/// held, and the read path answers from them as before.
#[test]
fn migration_0005_folds_the_rows_of_each_bucket_into_one_without_losing_a_figure() {
    let api = api_stack();
    let home = api.home.clone();
    let db = "tmidb_migration_0005";
    psql(&home, &format!("DROP DATABASE IF EXISTS {db}"));
    psql(&home, &format!("CREATE DATABASE {db}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = tmidb::config::Config::load(&home).unwrap();
        let (host, port) = cfg.endpoints.postgresql.rsplit_once(':').unwrap();
        let password = std::fs::read_to_string(cfg.secrets_dir.join("postgresql.password")).unwrap();
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(host)
            .port(port.parse().unwrap())
            .username("postgres")
            .password(password.trim())
            .database(db);
        let pool = sqlx::PgPool::connect_with(options).await.unwrap();
        let migrator = sqlx::migrate!("./sql");
        migrator.run_to(4, &pool).await.unwrap();
        for statement in [
            "INSERT INTO categories (name, current_version) VALUES ('old', 2), ('other', 1)",
            r#"INSERT INTO category_versions (category, version, fields) VALUES
               ('old', 1, '[{"name": "n", "type": "int"}, {"name": "temp", "type": "float"}, {"name": "note", "type": "text"}]'),
               ('old', 2, '[{"name": "temp", "type": "float"}, {"name": "pressure", "type": "float"}]'),
               ('other', 1, '[{"name": "v", "type": "float"}]')"#,
            // `gone` is in the rollups only (its version was edited by hand, say).
            "INSERT INTO rollups (category, width, field, target, bucket, count, min, max, sum) VALUES
               ('old', '1m', 'temp', 'a', '2026-12-01T10:17:00Z', 2, 1, 3, 4),
               ('old', '1m', 'n',    'a', '2026-12-01T10:17:00Z', 1, 5, 5, 5),
               ('old', '1m', 'gone', 'a', '2026-12-01T10:17:00Z', 1, -2, -2, -2),
               ('old', '1m', 'temp', 'a', '2026-12-01T10:18:00Z', 1, 7, 7, 7),
               ('old', '1h', 'temp', 'a', '2026-12-01T10:00:00Z', 3, 1, 7, 11),
               ('old', '1m', 'pressure', 'b', '2026-12-01T10:17:00Z', 4, 990, 1010, 4000),
               ('other', '1m', 'v', 'a', '2026-12-01T10:17:00Z', 1, 0.5, 0.5, 0.5)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        migrator.run(&pool).await.unwrap();
        let fields: Vec<(String, String, i32)> = sqlx::query_as(
            "SELECT category, field, slot FROM rollup_fields ORDER BY category, slot",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let fields: Vec<String> = fields
            .iter()
            .map(|(c, f, s)| format!("{c}.{f}={s}"))
            .collect();
        assert_eq!(
            fields,
            ["old.gone=0", "old.n=1", "old.pressure=2", "old.temp=3", "other.v=0"]
        );
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(' ', s.category, s.target, r.width,
                              to_char(r.bucket AT TIME ZONE 'UTC', 'HH24:MI'), r.count, r.min, r.max, r.sum)
             FROM rollups r JOIN rollup_series s ON s.id = r.series
             ORDER BY s.category, s.target, r.width, r.bucket",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                "old a 60 10:17 {1,1,0,2} {-2,5,Infinity,1} {-2,5,-Infinity,3} {-2,5,0,4}",
                "old a 60 10:18 {0,0,0,1} {Infinity,Infinity,Infinity,7} {-Infinity,-Infinity,-Infinity,7} {0,0,0,7}",
                "old a 3600 10:00 {0,0,0,3} {Infinity,Infinity,Infinity,1} {-Infinity,-Infinity,-Infinity,7} {0,0,0,11}",
                "old b 60 10:17 {0,0,4,0} {Infinity,Infinity,990,Infinity} {-Infinity,-Infinity,1010,-Infinity} {0,0,4000,0}",
                "other a 60 10:17 {1} {0.5} {0.5} {0.5}",
            ]
        );
        // The read path over the migrated rows: temp of target a in one 4-minute bucket.
        let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();
        let sel = tmidb::model::query::Selection {
            target: Some("a".into()),
            from: Some(parse("2026-12-01T10:16:00Z")),
            to: Some(parse("2026-12-01T10:20:00Z")),
            filters: vec![],
        };
        let (n, body) =
            tmidb::db::records::buckets_from_rollups(&pool, "old", 60, 3, 240.0, &sel, 10)
                .await
                .unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(n, 1, "{body}");
        assert_eq!(
            (&body[0]["count"], &body[0]["min"], &body[0]["max"], &body[0]["sum"]),
            (&json!(3), &json!(1), &json!(7), &json!(11)),
            "{body}"
        );
        pool.close().await;
    });
    psql(&home, &format!("DROP DATABASE {db}"));
}
