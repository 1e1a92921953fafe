//! The one record write path ([`tmidb::db::store::Writer`]) called directly on the
//! shared test PostgreSQL: what it stores, what it derives, and that a second write of
//! the same records adds nothing.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tmidb::db::store::{Origin, Writer};
use tmidb::model::wire::Row;

use crate::helpers::{api_stack, psql};

#[test]
fn one_write_stores_rows_rollups_alerts_and_the_ledger_and_a_repeat_adds_nothing() {
    let api = api_stack();
    let auth = format!("Bearer {}", api.admin());
    let h = [("Authorization", auth.as_str())];
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/categories",
        &h,
        Some(&json!({"name": "store_path", "fields": [{"name": "temp", "type": "float"}]})),
    );
    assert_eq!(s, 201, "{v}");
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
