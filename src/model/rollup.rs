//! Rollups: count, min, max and sum of every numeric field per target in 1-minute and
//! 1-hour buckets, kept up to date by the write path ([`crate::db::store`]) from the
//! rows each transaction adds. Pure: the deltas are computed here, applied there.
//!
//! A rollup row holds one bucket of one target with every numeric field's figures, in
//! arrays indexed by the field's slot (given when a schema version first names the
//! field, never changed), so a record adds one row per width however many fields it
//! has, on a key of fixed width (series id, width, bucket).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Rollup widths in seconds (the `width` column of `rollups`): 1 minute and 1 hour.
pub const WIDTHS: &[i32] = &[60, 3600];

/// A rollup row's key before its series is numbered: category, target, width
/// (seconds), bucket start.
pub type RollupKey = (String, String, i32, DateTime<Utc>);

/// Count, min, max and sum of one field in one rollup bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    /// Values.
    pub count: i64,
    /// Lowest (+∞ without values).
    pub min: f64,
    /// Highest (−∞ without values).
    pub max: f64,
    /// Sum.
    pub sum: f64,
}

impl Agg {
    /// No values: what a slot holds in a bucket where its field had none (merging it
    /// changes nothing).
    pub const EMPTY: Agg = Agg {
        count: 0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        sum: 0.0,
    };

    /// Adds another bucket's figures.
    pub fn merge(&mut self, o: Agg) {
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }
}

/// Rollup deltas of a transaction, merged by key: per key, one [`Agg`] per slot
/// (index = the field's slot, [`Schema::rollup_slots`](crate::model::schema::Schema)).
#[derive(Debug, Default)]
pub struct Rollups(pub BTreeMap<RollupKey, Vec<Agg>>);

impl Rollups {
    /// Adds the numeric `fields` (name, slot) of one stored record to its buckets of
    /// every width: one key per width, however many fields it has.
    pub fn add_record(
        &mut self,
        category: &str,
        fields: &[(&str, usize)],
        target: &str,
        ts: DateTime<Utc>,
        values: &BTreeMap<String, Value>,
    ) {
        let numbers: Vec<(usize, f64)> = fields
            .iter()
            .filter_map(|&(field, slot)| Some((slot, values.get(field)?.as_f64()?)))
            .collect();
        if numbers.is_empty() {
            return;
        }
        for &secs in WIDTHS {
            let key = (
                category.to_string(),
                target.to_string(),
                secs,
                bucket(ts, secs.into()),
            );
            let aggs = self.0.entry(key).or_default();
            for &(slot, v) in &numbers {
                if aggs.len() <= slot {
                    aggs.resize(slot + 1, Agg::EMPTY);
                }
                aggs[slot].merge(Agg {
                    count: 1,
                    min: v,
                    max: v,
                    sum: v,
                });
            }
        }
    }

    /// Adds every bucket of `other`.
    pub fn absorb(&mut self, other: Rollups) {
        for (k, aggs) in other.0 {
            let mine = self.0.entry(k).or_default();
            if mine.len() < aggs.len() {
                mine.resize(aggs.len(), Agg::EMPTY);
            }
            for (m, a) in mine.iter_mut().zip(aggs) {
                m.merge(a);
            }
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
    fn record_deltas_merge_per_key_and_slot_and_skip_non_numeric_values() {
        let mut r = Rollups::default();
        let values = |x: serde_json::Value| -> BTreeMap<String, Value> {
            serde_json::from_value(x).unwrap()
        };
        let ts = t("2026-12-02T10:17:05Z");
        let fields = [("v", 1), ("w", 0)];
        r.add_record("c", &fields, "a", ts, &values(serde_json::json!({"v": 2})));
        r.add_record(
            "c",
            &fields,
            "a",
            ts,
            &values(serde_json::json!({"v": -1.5, "w": 7})),
        );
        r.add_record(
            "c",
            &fields,
            "a",
            ts,
            &values(serde_json::json!({"v": "x"})),
        );
        r.add_record("c", &fields, "b", ts, &values(serde_json::json!({})));
        assert_eq!(r.0.len(), 2, "one key per width, target a only: {:?}", r.0);
        let minute = &r.0[&("c".into(), "a".into(), 60, t("2026-12-02T10:17:00Z"))];
        let v = Agg {
            count: 2,
            min: -1.5,
            max: 2.0,
            sum: 0.5,
        };
        let w = Agg {
            count: 1,
            min: 7.0,
            max: 7.0,
            sum: 7.0,
        };
        assert_eq!(minute, &vec![w, v], "slot 0 is w, slot 1 is v");
        let mut other = Rollups::default();
        other.add_record(
            "c",
            &[("v", 1)],
            "a",
            ts,
            &values(serde_json::json!({"v": 10})),
        );
        other.add_record(
            "c",
            &[("x", 2)],
            "a",
            ts,
            &values(serde_json::json!({"x": 1})),
        );
        r.absorb(other);
        let hour = &r.0[&("c".into(), "a".into(), 3600, t("2026-12-02T10:00:00Z"))];
        let x = Agg {
            count: 1,
            min: 1.0,
            max: 1.0,
            sum: 1.0,
        };
        let v = Agg {
            count: 3,
            min: -1.5,
            max: 10.0,
            sum: 10.5,
        };
        assert_eq!(
            hour,
            &vec![w, v, x],
            "a longer row lengthens the merged one"
        );
        let mut empty = Agg::EMPTY;
        empty.merge(Agg::EMPTY);
        assert_eq!(empty, Agg::EMPTY);
    }
}
