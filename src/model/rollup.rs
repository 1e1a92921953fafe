//! Rollups: count, min, max and sum of every numeric field per target in 1-minute and
//! 1-hour buckets, kept up to date by the write path ([`crate::db::store`]) from the
//! rows each transaction adds. Pure: the deltas are computed here, applied there.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Rollup widths and their lengths in seconds.
pub const WIDTHS: &[(&str, i64)] = &[("1m", 60), ("1h", 3600)];

/// A rollup row's key: category, width, field, target, bucket start (the primary key
/// order).
pub type RollupKey = (String, &'static str, String, String, DateTime<Utc>);

/// Count, min, max and sum of one rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    /// Values.
    pub count: i64,
    /// Lowest.
    pub min: f64,
    /// Highest.
    pub max: f64,
    /// Sum.
    pub sum: f64,
}

impl Agg {
    /// Adds another bucket's figures.
    pub fn merge(&mut self, o: Agg) {
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }
}

/// Rollup deltas of a transaction, merged by key, in the table's key order (bytewise,
/// as its `COLLATE "C"` keys compare).
#[derive(Debug, Default)]
pub struct Rollups(pub BTreeMap<RollupKey, Agg>);

impl Rollups {
    /// Adds one value to the bucket of `key`.
    pub fn add(&mut self, key: RollupKey, value: f64) {
        let one = Agg {
            count: 1,
            min: value,
            max: value,
            sum: value,
        };
        self.0
            .entry(key)
            .and_modify(|a| a.merge(one))
            .or_insert(one);
    }

    /// Adds the numeric `fields` of one stored record to its buckets of every width.
    pub fn add_record(
        &mut self,
        category: &str,
        fields: &[&str],
        target: &str,
        ts: DateTime<Utc>,
        values: &BTreeMap<String, Value>,
    ) {
        for field in fields {
            let Some(v) = values.get(*field).and_then(Value::as_f64) else {
                continue;
            };
            for &(width, secs) in WIDTHS {
                let key = (
                    category.to_string(),
                    width,
                    field.to_string(),
                    target.to_string(),
                    bucket(ts, secs),
                );
                self.add(key, v);
            }
        }
    }

    /// Adds every bucket of `other`.
    pub fn absorb(&mut self, other: Rollups) {
        for (k, a) in other.0 {
            self.0.entry(k).and_modify(|x| x.merge(a)).or_insert(a);
        }
    }
}

/// Start of the `secs`-wide bucket holding `ts`: what `date_bin` from 2000-01-01 gives
/// for widths that divide a day.
pub fn bucket(ts: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let start = ts.timestamp().div_euclid(secs) * secs;
    DateTime::from_timestamp(start, 0).unwrap_or(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn buckets_start_at_whole_minutes_and_hours_before_and_after_1970() {
        assert_eq!(
            bucket(t("2026-12-02T10:17:59.9Z"), 60),
            t("2026-12-02T10:17:00Z")
        );
        assert_eq!(
            bucket(t("2026-12-02T10:17:59Z"), 3600),
            t("2026-12-02T10:00:00Z")
        );
        // div_euclid: a time before the epoch falls in the bucket that starts before it.
        assert_eq!(
            bucket(t("1969-12-31T23:59:30Z"), 60),
            t("1969-12-31T23:59:00Z")
        );
    }

    #[test]
    fn record_deltas_merge_per_key_and_skip_non_numeric_values() {
        let mut r = Rollups::default();
        let values = |x: serde_json::Value| -> BTreeMap<String, Value> {
            serde_json::from_value(x).unwrap()
        };
        let ts = t("2026-12-02T10:17:05Z");
        r.add_record("c", &["v"], "a", ts, &values(serde_json::json!({"v": 2})));
        r.add_record(
            "c",
            &["v"],
            "a",
            ts,
            &values(serde_json::json!({"v": -1.5})),
        );
        r.add_record("c", &["v"], "a", ts, &values(serde_json::json!({"v": "x"})));
        r.add_record("c", &["v"], "b", ts, &values(serde_json::json!({})));
        assert_eq!(r.0.len(), 2, "one key per width, target a only: {:?}", r.0);
        let minute = r.0[&(
            "c".into(),
            "1m",
            "v".into(),
            "a".into(),
            t("2026-12-02T10:17:00Z"),
        )];
        assert_eq!(
            minute,
            Agg {
                count: 2,
                min: -1.5,
                max: 2.0,
                sum: 0.5
            }
        );
        let mut other = Rollups::default();
        other.add_record("c", &["v"], "a", ts, &values(serde_json::json!({"v": 10})));
        r.absorb(other);
        let hour = r.0[&(
            "c".into(),
            "1h",
            "v".into(),
            "a".into(),
            t("2026-12-02T10:00:00Z"),
        )];
        assert_eq!(
            hour,
            Agg {
                count: 3,
                min: -1.5,
                max: 10.0,
                sum: 10.5
            }
        );
    }
}
