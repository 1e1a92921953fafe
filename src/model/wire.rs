//! The messages of the pipeline: validated records and their batches, dead letters,
//! and the events live followers receive. Their ids are digests of their content, so
//! the same content is the same id wherever it is made (`Nats-Msg-Id`, dead letters).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One validated record on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Content id (unique per category).
    pub id: uuid::Uuid,
    /// Target.
    pub target: String,
    /// Time.
    pub ts: DateTime<Utc>,
    /// Field values.
    pub values: std::collections::BTreeMap<String, Value>,
}

/// One message: a batch of one category, validated against `schema_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Category.
    pub category: String,
    /// Schema version the records were validated against.
    pub schema_version: i32,
    /// The source that sent them (absent in messages of versions before 0.2, and
    /// not part of the message id: the same records are the same message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The records.
    pub records: Vec<WireRecord>,
}

impl Batch {
    /// `Nats-Msg-Id`: a digest of the category, version and record ids.
    pub fn msg_id(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.category.as_bytes());
        h.update(self.schema_version.to_le_bytes());
        for r in &self.records {
            h.update(r.id.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// A record that failed transformation or validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Stable id: a digest of category, source and raw payload (the same bad record
    /// from the same source is one dead letter).
    pub id: uuid::Uuid,
    /// Category.
    pub category: String,
    /// Source name (`http_push` / `nats` when pushed without a defined source).
    pub source: String,
    /// Where in the source it was (line, index, stream sequence …).
    pub position: String,
    /// The record as received, before transformation.
    pub raw: Value,
    /// Why it was rejected.
    pub reasons: Vec<crate::model::schema::Problem>,
    /// Schema version it was checked against.
    pub schema_version: i32,
}

impl DeadLetter {
    /// The id of a dead letter with this content.
    pub fn id_for(category: &str, source: &str, raw: &Value) -> uuid::Uuid {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [category, source] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(serde_json::to_vec(raw).expect("json"));
        let mut b = [0u8; 16];
        b.copy_from_slice(&h.finalize()[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// A message of dead letters of one category (subject `tmidb.dead.{category}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadBatch {
    /// Category.
    pub category: String,
    /// The letters.
    pub letters: Vec<DeadLetter>,
}

impl DeadBatch {
    /// `Nats-Msg-Id`: a digest of the letter ids.
    pub fn msg_id(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"dead\0");
        for l in &self.letters {
            h.update(l.id.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// What SSE clients receive (published on [`crate::pipeline::EVENTS_STREAM`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Records just committed.
    Records {
        /// Category.
        category: String,
        /// The records (`target`, `ts` and field values).
        records: Vec<Value>,
    },
    /// An alert fired or resolved.
    Alert(super::alert::Notification),
}

/// One record to store, with its id (borrowed from a pipeline batch or an api insert): what the write path stores.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// Content id (unique per category).
    pub id: uuid::Uuid,
    /// Target.
    pub target: &'a str,
    /// Time.
    pub ts: DateTime<Utc>,
    /// Field values by name.
    pub values: &'a BTreeMap<String, Value>,
}

impl Row<'_> {
    /// The row as the api shows a stored record (what `GET …/records` answers): `target`,
    /// `ts` as PostgreSQL writes it, `schema_version`, then the fields that have a value.
    pub fn stored_json(&self, schema_version: i32) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("target".into(), self.target.into());
        m.insert(
            "ts".into(),
            crate::model::schema::stored_time(self.ts).into(),
        );
        m.insert("schema_version".into(), schema_version.into());
        for (k, v) in self.values.iter().filter(|(_, v)| !v.is_null()) {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

impl<'a> From<&'a WireRecord> for Row<'a> {
    fn from(r: &'a WireRecord) -> Self {
        Row {
            id: r.id,
            target: &r.target,
            ts: r.ts,
            values: &r.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ids: &[u128]) -> Batch {
        Batch {
            category: "c".into(),
            schema_version: 1,
            source: None,
            records: ids
                .iter()
                .map(|i| WireRecord {
                    id: uuid::Uuid::from_u128(*i),
                    target: "t".into(),
                    ts: DateTime::from_timestamp(0, 0).unwrap(),
                    values: BTreeMap::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn msg_ids_follow_the_content_only() {
        assert_eq!(batch(&[1, 2]).msg_id(), batch(&[1, 2]).msg_id());
        assert_ne!(batch(&[1, 2]).msg_id(), batch(&[2, 1]).msg_id());
        let mut other_version = batch(&[1, 2]);
        other_version.schema_version = 2;
        assert_ne!(batch(&[1, 2]).msg_id(), other_version.msg_id());
        assert_eq!(batch(&[1]).msg_id().len(), 32, "16 bytes in hex");
    }

    #[test]
    fn dead_letter_ids_follow_category_source_and_payload() {
        let raw = serde_json::json!({"x": 1});
        let id = DeadLetter::id_for("c", "s", &raw);
        assert_eq!(id, DeadLetter::id_for("c", "s", &raw));
        assert_ne!(id, DeadLetter::id_for("c", "s2", &raw));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            DeadLetter::id_for("ab", "c", &raw),
            DeadLetter::id_for("a", "bc", &raw)
        );
    }
}
