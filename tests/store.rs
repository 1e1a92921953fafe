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
    let write = |values: &[(u128, &str, f64)]| {
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
                .map(|(_, _, t)| BTreeMap::from([("temp".to_string(), Value::from(*t))]))
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
    let rows = [(1, "a", 31.0), (2, "a", 20.0), (3, "b", 40.0)];
    let first = write(&rows);
    assert_eq!(first.new_rows, 3);
    // Target a's latest record (same time: the last one) is 20, b's is 40.
    assert_eq!(first.alerts, 1, "{first:?}");
    assert_eq!(first.live.len(), 1);
    assert_eq!(first.live[0].records.len(), 3);
    assert_eq!(first.live[0].records[2]["target"], "b");
    let q = |sql: &str| psql(&home, sql);
    assert_eq!(q("SELECT count(*) FROM rec_store_path"), "3");
    assert_eq!(
        q(
            "SELECT count, min, max, sum FROM rollups WHERE category = 'store_path' AND width = '1m' AND target = 'a'"
        ),
        "2|20|31|51"
    );
    assert_eq!(
        q(
            "SELECT bucket = date_bin('1 minute', '2026-12-02T10:17:05Z'::timestamptz, '2000-01-01') FROM rollups WHERE category = 'store_path' AND width = '1m' AND target = 'a'"
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
        q(
            "SELECT count FROM rollups WHERE category = 'store_path' AND width = '1h' AND target = 'a'"
        ),
        "2",
        "a repeated record adds nothing to its rollup"
    );
    assert_eq!(
        q(
            "SELECT string_agg(records || '|' || new_rows, ',' ORDER BY id) FROM ingest_batches WHERE category = 'store_path'"
        ),
        "3|3,3|0"
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
