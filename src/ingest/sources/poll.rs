//! The `http_poll` source: a URL fetched every interval; records are picked with JSON
//! pointers, and only records newer than the newest already taken per target are
//! published (remembered in `source_state` across restarts).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::patiently;
use crate::ingest::Manager;
use crate::ingest::payload::Item;
use crate::model::source::Source;
use crate::model::source::{PollConfig, duration};

/// Picks records out of a polled document.
pub fn poll_items(doc: &Value, c: &PollConfig, position: &str) -> Result<Vec<Item>, String> {
    let list = if c.records.is_empty() {
        doc
    } else {
        doc.pointer(&c.records)
            .ok_or_else(|| format!("the response has nothing at {}", c.records))?
    };
    let items: Vec<&Value> = match list {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let raw = if c.fields.is_empty() {
                item.clone()
            } else {
                Value::Object(
                    c.fields
                        .iter()
                        .filter_map(|(name, ptr)| {
                            item.pointer(ptr).map(|v| (name.clone(), v.clone()))
                        })
                        .collect(),
                )
            };
            Item::new(format!("{position} item {i}"), raw)
        })
        .collect())
}

pub(super) async fn run(m: &Manager, s: &Source, c: PollConfig) -> Result<(), String> {
    let every = duration(&c.interval).unwrap_or(Duration::from_secs(30));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    // Newest time taken per target.
    let mut seen: BTreeMap<String, DateTime<Utc>> = crate::db::sources::load_state(&m.pool, s.id)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|v| serde_json::from_value(v["seen"].clone()).ok())
        .unwrap_or_default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut req = http.get(&c.url);
        for (k, v) in &c.headers {
            req = req.header(k, v);
        }
        let doc: Value = match req.send().await.and_then(|r| r.error_for_status()) {
            Ok(r) => match r.json().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(source = %s.name, url = %c.url, "the response is not JSON: {e}");
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(source = %s.name, url = %c.url, "poll failed: {e}");
                continue;
            }
        };
        let position = format!(
            "poll {}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let items = match poll_items(&doc, &c, &position) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(source = %s.name, url = %c.url, "{e}");
                continue;
            }
        };
        let schema = match m.schema(&s.category).await {
            Ok(schema) => schema,
            Err(e) => {
                tracing::warn!(source = %s.name, "{e}");
                continue;
            }
        };
        let mut p = crate::ingest::prepare(&schema, &s.name, &s.transform, items);
        p.records
            .retain(|r| seen.get(&r.target).is_none_or(|t| r.ts > *t));
        if p.records.is_empty() && p.dead.is_empty() {
            continue;
        }
        if let Err(e) = patiently(&s.name, || {
            crate::ingest::publish(&m.js, &m.cfg, &s.category, &p)
        })
        .await
        {
            tracing::warn!(source = %s.name, "poll not taken: {e}");
            continue;
        }
        for r in &p.records {
            let t = seen.entry(r.target.clone()).or_insert(r.ts);
            if r.ts > *t {
                *t = r.ts;
            }
        }
        if let Err(e) =
            crate::db::sources::save_state(&m.pool, s.id, &serde_json::json!({"seen": seen})).await
        {
            tracing::warn!(source = %s.name, "cannot remember what was taken: {e}");
        }
        tracing::info!(source = %s.name, accepted = p.records.len(), rejected = p.dead.len(), "poll ingested");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_picked_from_polled_documents() {
        let c: PollConfig = serde_json::from_value(
            json!({"url": "http://x", "records": "/data/items", "fields": {"target": "/id", "v": "/m/v"}}),
        )
        .unwrap();
        let doc = json!({"data": {"items": [{"id": "s1", "m": {"v": 3}}, {"id": "s2"}]}});
        let items = poll_items(&doc, &c, "poll").unwrap();
        assert_eq!(items[0].raw, json!({"target": "s1", "v": 3}));
        assert_eq!(items[1].raw, json!({"target": "s2"}));
        assert!(poll_items(&json!({}), &c, "poll").is_err());
    }
}
