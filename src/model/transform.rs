//! Per-source transformation of raw records, applied before validation: field renames,
//! constants and defaults, unit scaling, the time from a named field and format, and
//! the target from a field. Pure functions; a failure names the field and the reason,
//! and the record goes to the dead letters with it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::schema::Problem;

/// `value * factor + offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Object)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Multiplier (default 1).
    #[serde(default = "one")]
    #[oai(default = "one")]
    pub factor: f64,
    /// Added after multiplying (default 0).
    #[serde(default)]
    #[oai(default)]
    pub offset: f64,
}

fn one() -> f64 {
    1.0
}

/// Where the record time comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Object)]
#[serde(deny_unknown_fields)]
pub struct TimeSpec {
    /// The field holding the time (removed from the record once parsed).
    pub field: String,
    /// `rfc3339` (default), `unix` (seconds, may be fractional), `unix_ms`, or a
    /// strftime pattern such as `%d/%m/%Y %H:%M:%S` (UTC unless it has `%z`).
    #[serde(default = "rfc3339")]
    #[oai(default = "rfc3339")]
    pub format: String,
}

fn rfc3339() -> String {
    "rfc3339".into()
}

/// A source's transformation (every part optional), applied in this order: `rename`,
/// `constants`, `defaults`, `scale`, `timestamp`, `target_field`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Object)]
#[oai(skip_serializing_if_is_none)]
#[serde(default, deny_unknown_fields)]
pub struct Transform {
    /// Field renames, from → to.
    #[oai(default)]
    pub rename: BTreeMap<String, String>,
    /// Values set on every record (replacing what it has).
    #[oai(default)]
    pub constants: BTreeMap<String, Value>,
    /// Values set where the record has none.
    #[oai(default)]
    pub defaults: BTreeMap<String, Value>,
    /// Numeric fields to scale (e.g. tenths of a degree: `{"factor": 0.1}`).
    #[oai(default)]
    pub scale: BTreeMap<String, Scale>,
    /// Take the time from this field, in this format.
    pub timestamp: Option<TimeSpec>,
    /// Take the target from this field (strings as they are, numbers as text); the field
    /// is kept only if the schema declares it.
    pub target_field: Option<String>,
}

impl Transform {
    /// Whether it changes nothing.
    pub fn is_identity(&self) -> bool {
        *self == Transform::default()
    }

    /// Checks the definition itself (formats parse, renames do not collide); every
    /// problem is reported, named `transform.PART.KEY`.
    pub fn check(&self) -> Vec<Problem> {
        let mut out = vec![];
        let mut seen = std::collections::HashSet::new();
        for (from, to) in &self.rename {
            if from == to {
                out.push(Problem::new(
                    &format!("transform.rename.{from}"),
                    "renames a field to itself",
                ));
            }
            if !seen.insert(to) {
                out.push(Problem::new(
                    &format!("transform.rename.{from}"),
                    format!("two fields are renamed to `{to}`"),
                ));
            }
        }
        for (k, s) in &self.scale {
            if !s.factor.is_finite() || !s.offset.is_finite() {
                out.push(Problem::new(
                    &format!("transform.scale.{k}"),
                    "factor and offset must be finite numbers",
                ));
            }
        }
        if let Some(t) = &self.timestamp {
            let f = t.format.as_str();
            if !matches!(f, "rfc3339" | "unix" | "unix_ms") {
                use chrono::format::{Item, StrftimeItems};
                if f.is_empty() || StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                    out.push(Problem::new(
                        "transform.timestamp.format",
                        format!("`{f}` is not rfc3339, unix, unix_ms or a valid strftime pattern"),
                    ));
                }
            }
            if t.field.is_empty() {
                out.push(Problem::new(
                    "transform.timestamp.field",
                    "must name a field",
                ));
            }
        }
        if self.target_field.as_deref() == Some("") {
            out.push(Problem::new("transform.target_field", "must name a field"));
        }
        out
    }

    /// Applies the transformation to one raw record. `keep` says whether the schema
    /// declares a field (the target field is dropped unless it does).
    pub fn apply(&self, raw: &Value, keep: impl Fn(&str) -> bool) -> Result<Value, Vec<Problem>> {
        let Some(obj) = raw.as_object() else {
            return Err(vec![Problem {
                field: None,
                reason: "a record is a JSON object".into(),
            }]);
        };
        if self.is_identity() {
            return Ok(raw.clone());
        }
        let mut problems = vec![];
        let mut rec: Map<String, Value> = Map::new();
        for (k, v) in obj {
            let name = self.rename.get(k).unwrap_or(k);
            rec.insert(name.clone(), v.clone());
        }
        for (k, v) in &self.constants {
            rec.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.defaults {
            if rec.get(k).is_none_or(Value::is_null) {
                rec.insert(k.clone(), v.clone());
            }
        }
        for (k, s) in &self.scale {
            match rec.get(k) {
                None | Some(Value::Null) => {}
                Some(v) => match number(v) {
                    Some(x) => {
                        let y = x * s.factor + s.offset;
                        rec.insert(k.clone(), json_number(y));
                    }
                    None => {
                        problems.push(Problem::new(k, format!("cannot scale {v}: not a number")))
                    }
                },
            }
        }
        if let Some(t) = &self.timestamp {
            match rec.remove(&t.field) {
                None | Some(Value::Null) => problems.push(Problem::new(
                    &t.field,
                    "is missing (the time is taken from it)",
                )),
                Some(v) => match parse_time(&v, &t.format) {
                    Ok(ts) => {
                        rec.insert(
                            "ts".into(),
                            ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                                .into(),
                        );
                    }
                    Err(e) => problems.push(Problem::new(&t.field, e)),
                },
            }
        }
        if let Some(f) = &self.target_field {
            match rec.get(f) {
                Some(Value::String(s)) => {
                    let s = s.clone();
                    rec.insert("target".into(), s.into());
                }
                Some(Value::Number(n)) => {
                    let s = n.to_string();
                    rec.insert("target".into(), s.into());
                }
                None | Some(Value::Null) => {
                    problems.push(Problem::new(f, "is missing (the target is taken from it)"))
                }
                Some(v) => problems.push(Problem::new(
                    f,
                    format!("{v} cannot be a target (a string or number is needed)"),
                )),
            }
            if f != "target" && !keep(f) {
                rec.remove(f);
            }
        }
        if problems.is_empty() {
            Ok(Value::Object(rec))
        } else {
            Err(problems)
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Integral results stay integers, so scaling into an `int` field works.
fn json_number(y: f64) -> Value {
    if y.fract() == 0.0 && y.abs() < 9.0e15 {
        Value::from(y as i64)
    } else {
        Value::from(y)
    }
}

/// Parses a time value in `format` (see [`TimeSpec::format`]).
pub fn parse_time(v: &Value, format: &str) -> Result<DateTime<Utc>, String> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => return Err(format!("{other} is not a time")),
    };
    let bad = || format!("`{text}` does not match the time format `{format}`");
    match format {
        "rfc3339" => DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad()),
        "unix" | "unix_ms" => {
            let x: f64 = text.parse().map_err(|_| bad())?;
            let secs = if format == "unix" { x } else { x / 1000.0 };
            let micros = (secs * 1e6).round();
            if !micros.is_finite() || micros.abs() > 8.0e15 {
                return Err(bad());
            }
            DateTime::from_timestamp_micros(micros as i64).ok_or_else(bad)
        }
        pattern => DateTime::parse_from_str(&text, pattern)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| NaiveDateTime::parse_from_str(&text, pattern).map(|n| n.and_utc()))
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(&text, pattern)
                    .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
            })
            .map_err(|_| bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(v: Value) -> Transform {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_rule_applies_in_order() {
        let tr = t(json!({
            "rename": {"temp_dc": "temperature", "dev": "device"},
            "constants": {"site": "plant-1"},
            "defaults": {"status": "ok", "site": "never"},
            "scale": {"temperature": {"factor": 0.1, "offset": -1}},
            "timestamp": {"field": "when", "format": "%d/%m/%Y %H:%M:%S"},
            "target_field": "device"
        }));
        assert!(tr.check().is_empty());
        let out = tr
            .apply(
                &json!({"temp_dc": 215, "dev": 42, "when": "26/11/2026 10:30:00", "site": "x"}),
                |f| f == "temperature" || f == "site" || f == "status",
            )
            .unwrap();
        assert_eq!(
            out,
            json!({"target": "42", "temperature": 20.5, "site": "plant-1", "status": "ok",
                   "ts": "2026-11-26T10:30:00Z"})
        );
    }

    #[test]
    fn failures_name_the_field() {
        let tr = t(
            json!({"scale": {"v": {"factor": 2}}, "timestamp": {"field": "t", "format": "unix_ms"},
                          "target_field": "id"}),
        );
        let e = tr
            .apply(&json!({"v": "abc", "t": "soon"}), |_| true)
            .unwrap_err();
        let fields: Vec<_> = e.iter().map(|p| p.field.clone().unwrap()).collect();
        assert_eq!(fields, ["v", "t", "id"], "{e:?}");
        assert!(e[1].reason.contains("unix_ms"), "{e:?}");
        let ok = tr
            .apply(&json!({"v": 3, "t": 1764153000123u64, "id": "a"}), |_| true)
            .unwrap();
        assert_eq!(ok["v"], json!(6), "integral results stay integers");
        assert_eq!(ok["ts"], json!("2025-11-26T10:30:00.123Z"));
        assert_eq!(ok["id"], json!("a"), "kept: the schema declares it");
    }

    #[test]
    fn definitions_are_checked() {
        let tr =
            t(json!({"rename": {"a": "x", "b": "x"}, "timestamp": {"field": "t", "format": "%Q"}}));
        let p = tr.check();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            serde_json::from_value::<Transform>(json!({"renames": {}})).is_err(),
            "unknown keys are refused"
        );
        assert_eq!(
            parse_time(&json!(1.5), "unix").unwrap().timestamp_millis(),
            1500
        );
        assert!(parse_time(&json!("2026-01-01"), "%Y-%m-%d").is_ok());
    }
}
