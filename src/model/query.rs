//! What a read of a category's records selects: a target, a time range, field filters
//! (`FIELD:OP:VALUE`) and an order. One type for every reader (a page of records, an
//! aggregation, an export, a live follower), so the console's view, its export and
//! the REST API's answer to the same parameters select the same records.
//!
//! A filter is checked against the schema when it is parsed (the field exists, the
//! operator suits its type, the value is of its type), so a bad filter is refused
//! with words naming it before any SQL runs; [`FieldFilter::matches`] applies the
//! same comparison to a record in memory (live followers).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::model::alert::Op;
use crate::model::schema::{FieldType, Schema};

/// Records oldest first or newest first (ties broken by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

impl Order {
    /// `ASC` or `DESC`.
    pub fn sql(self) -> &'static str {
        match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }

    /// Its name in a URL (`asc`, `desc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// One comparison of a field with a value, checked against the field's type.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldFilter {
    /// The field.
    pub field: String,
    /// Its type.
    pub kind: FieldType,
    /// The comparison.
    pub op: Op,
    /// The value as written (bound to SQL cast to the field's type).
    pub value: String,
    /// The value as JSON, for comparing records in memory.
    parsed: Value,
}

impl FieldFilter {
    /// Parses `FIELD:OP:VALUE` against `schema`; the error names the filter and what
    /// is wrong with it.
    pub fn parse(spec: &str, schema: &Schema) -> Result<FieldFilter, String> {
        let mut parts = spec.splitn(3, ':');
        let (Some(field), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("filter `{spec}` must be FIELD:OP:VALUE"));
        };
        let Some(def) = schema.fields.iter().find(|x| x.name == field) else {
            return Err(format!(
                "filter `{spec}`: `{field}` is not a field of {}",
                schema.category
            ));
        };
        let Some(op) = Op::parse(op) else {
            return Err(format!(
                "filter `{spec}`: unknown operator `{op}` (eq ne gt gte lt lte)"
            ));
        };
        let parsed = typed_value(def.kind, value).map_err(|why| {
            format!(
                "filter `{spec}`: a filter value does not fit its field's type: {why} ({} is {})",
                def.name,
                def.kind.name()
            )
        })?;
        if matches!(def.kind, FieldType::Json | FieldType::Bool) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!(
                "filter `{spec}`: a {} field is compared with eq or ne only",
                def.kind.name()
            ));
        }
        Ok(FieldFilter {
            field: def.name.clone(),
            kind: def.kind,
            op,
            value: value.to_string(),
            parsed,
        })
    }

    /// The filter as written in a URL: `FIELD:OP:VALUE`.
    pub fn spec(&self) -> String {
        format!("{}:{}:{}", self.field, self.op.as_str(), self.value)
    }

    /// Whether `record` (a record as stored records are shown: field values by name,
    /// times in RFC 3339) passes. A record without a value never passes, as in SQL.
    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        let Some(v) = record.get(&self.field).filter(|v| !v.is_null()) else {
            return false;
        };
        use std::cmp::Ordering;
        let ord: Option<Ordering> = match self.kind {
            FieldType::Int | FieldType::Float => v
                .as_f64()
                .zip(self.parsed.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b)),
            FieldType::Text => v.as_str().zip(self.parsed.as_str()).map(|(a, b)| a.cmp(b)),
            FieldType::Timestamp => v
                .as_str()
                .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
                .zip(
                    self.parsed
                        .as_str()
                        .and_then(|b| DateTime::parse_from_rfc3339(b).ok()),
                )
                .map(|(a, b)| a.cmp(&b)),
            FieldType::Bool | FieldType::Json => Some(if *v == self.parsed {
                Ordering::Equal
            } else {
                Ordering::Less
            }),
        };
        ord.is_some_and(|o| match self.op {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Gt => o == Ordering::Greater,
            Op::Gte => o != Ordering::Less,
            Op::Lt => o == Ordering::Less,
            Op::Lte => o != Ordering::Greater,
        })
    }
}

/// `value` read as a value of `kind` (text stays text), or why it is not one.
fn typed_value(kind: FieldType, value: &str) -> Result<Value, String> {
    let bad = || format!("`{value}` is not a {}", kind.name());
    Ok(match kind {
        FieldType::Int => Value::from(value.trim().parse::<i64>().map_err(|_| bad())?),
        FieldType::Float => {
            let x = value.trim().parse::<f64>().map_err(|_| bad())?;
            if !x.is_finite() {
                return Err(bad());
            }
            Value::from(x)
        }
        FieldType::Bool => Value::from(value.trim().parse::<bool>().map_err(|_| bad())?),
        FieldType::Text => Value::from(value),
        FieldType::Timestamp => {
            let t = DateTime::parse_from_rfc3339(value.trim()).map_err(|_| bad())?;
            Value::from(t.to_rfc3339())
        }
        FieldType::Json => serde_json::from_str(value).map_err(|_| bad())?,
    })
}

/// What a read selects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Only this target.
    pub target: Option<String>,
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Every filter must hold.
    pub filters: Vec<FieldFilter>,
}

impl Selection {
    /// A selection of `target`, `from`, `to` and the filters `specs` (`FIELD:OP:VALUE`)
    /// over `schema`; every bad filter is named.
    pub fn new(
        schema: &Schema,
        target: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        specs: &[String],
    ) -> Result<Selection, Vec<String>> {
        let mut filters = vec![];
        let mut errors = vec![];
        for s in specs.iter().filter(|s| !s.is_empty()) {
            match FieldFilter::parse(s, schema) {
                Ok(f) => filters.push(f),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Selection {
            target,
            from,
            to,
            filters,
        })
    }

    /// Whether a record as stored records are shown (`target`, `ts`, field values)
    /// is selected.
    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        if let Some(t) = &self.target
            && record.get("target").and_then(Value::as_str) != Some(t.as_str())
        {
            return false;
        }
        if self.from.is_some() || self.to.is_some() {
            let Some(ts) = record
                .get("ts")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            else {
                return false;
            };
            if self.from.is_some_and(|f| ts < f) || self.to.is_some_and(|t| ts >= t) {
                return false;
            }
        }
        self.filters.iter().all(|f| f.matches(record))
    }
}

/// A page boundary: the last record's time and id (`TIME~UUID`, opaque to clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Its time.
    pub ts: DateTime<Utc>,
    /// Its id.
    pub id: uuid::Uuid,
}

impl Cursor {
    /// Reads a cursor as its `Display` writes it.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (t, i) = s.split_once('~')?;
        Some(Cursor {
            ts: DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc),
            id: uuid::Uuid::parse_str(i).ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}~{}",
            self.ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::Field;

    fn schema() -> Schema {
        Schema {
            category: "weather".into(),
            version: 1,
            fields: vec![
                Field::new("temp", FieldType::Float),
                Field::new("n", FieldType::Int),
                Field::new("site", FieldType::Text),
                Field::new("ok", FieldType::Bool),
                Field::new("seen", FieldType::Timestamp),
                Field::new("extra", FieldType::Json),
            ],
            rollup_slots: Default::default(),
        }
    }

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn bad_filters_are_named_before_any_sql_runs() {
        let s = schema();
        let err = |spec: &str| FieldFilter::parse(spec, &s).unwrap_err();
        assert!(err("temp").contains("must be FIELD:OP:VALUE"));
        assert!(err("nope:eq:1").contains("`nope` is not a field of weather"));
        assert!(err("temp:like:1").contains("unknown operator `like`"));
        assert!(
            err("n:gt:1.5").contains("`1.5` is not a int"),
            "{}",
            err("n:gt:1.5")
        );
        assert!(err("temp:gt:hot").contains("does not fit its field's type"));
        assert!(err("temp:gt:NaN").contains("is not a float"));
        assert!(err("seen:gt:yesterday").contains("is not a timestamp"));
        assert!(err("ok:gt:true").contains("eq or ne only"));
        assert!(err("extra:eq:{").contains("is not a json"));
        // A value may hold the separator.
        let f = FieldFilter::parse("site:eq:a:b", &s).unwrap();
        assert_eq!((f.value.as_str(), f.spec()), ("a:b", "site:eq:a:b".into()));
        let bad = Selection::new(
            &s,
            None,
            None,
            None,
            &["x:eq:1".into(), "temp:gt:1".into(), "y".into()],
        );
        assert_eq!(bad.unwrap_err().len(), 2, "every bad filter is named");
    }

    #[test]
    fn a_record_matches_in_memory_as_the_sql_selects_it() {
        let s = schema();
        let f = |spec: &str| FieldFilter::parse(spec, &s).unwrap();
        let r = rec(
            serde_json::json!({"target": "a", "ts": "2026-12-06T10:00:00+00:00",
            "temp": 21.5, "n": 3, "site": "b", "ok": true, "seen": "2026-12-06T09:00:00Z", "extra": {"x": 1}}),
        );
        for (spec, want) in [
            ("temp:gt:21", true),
            ("temp:gt:21.5", false),
            ("temp:gte:21.5", true),
            ("n:eq:3", true),
            ("n:ne:3", false),
            ("n:lt:10", true),
            ("site:eq:b", true),
            ("site:gt:a", true),
            ("ok:eq:true", true),
            ("ok:ne:true", false),
            ("seen:lt:2026-12-06T09:30:00+00:00", true),
            ("seen:eq:2026-12-06T10:00:00+01:00", true),
            ("extra:eq:{\"x\":1}", true),
            ("extra:ne:{\"x\":1}", false),
        ] {
            assert_eq!(f(spec).matches(&r), want, "{spec}");
        }
        let without = rec(serde_json::json!({"target": "a", "ts": "2026-12-06T10:00:00+00:00"}));
        assert!(!f("temp:ne:1").matches(&without), "NULL passes no filter");

        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let sel = Selection::new(
            &s,
            Some("a".into()),
            Some(t("2026-12-06T10:00:00Z")),
            Some(t("2026-12-06T11:00:00Z")),
            &["temp:gt:20".into()],
        )
        .unwrap();
        assert!(sel.matches(&r));
        let mut other = r.clone();
        other.insert("target".into(), "b".into());
        assert!(!sel.matches(&other));
        let mut late = r.clone();
        late.insert("ts".into(), "2026-12-06T11:00:00+00:00".into());
        assert!(!sel.matches(&late), "`to` is exclusive");
    }

    #[test]
    fn cursors_read_back_what_they_write() {
        let c = Cursor {
            ts: DateTime::parse_from_rfc3339("2026-12-06T10:00:00.000001Z")
                .unwrap()
                .with_timezone(&Utc),
            id: uuid::Uuid::nil(),
        };
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        assert_eq!(Cursor::parse("yesterday"), None);
    }
}
