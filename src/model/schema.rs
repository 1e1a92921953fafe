//! Category schemas: field types and constraints, schema evolution rules, record
//! validation, and the strict identifier rule every name that reaches SQL text passes.
//!
//! One validator for every way records arrive (the api now, the ingestion pipeline
//! later): [`Schema::validate`] turns a JSON object into a checked [`Record`] or says,
//! per field, what is wrong.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use serde_json::{Map, Value};

/// Keys every record has besides its category's fields.
pub const RESERVED: &[&str] = &["target", "ts", "id", "schema_version", "received_at"];

/// Whether `s` may be used as a category or field name (and so, quoted, in SQL):
/// a lowercase letter, then lowercase letters, digits or `_`, at most 48 characters.
pub fn valid_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_')
        && s.len() <= 48
}

/// The earliest time a record or timestamp field may hold (PostgreSQL holds earlier
/// ones, but RFC 3339 cannot write a year before 1).
pub const EARLIEST: &str = "0001-01-01T00:00:00Z";
/// The end (exclusive) of the times a record may hold: RFC 3339's last year, in UTC.
pub const END: &str = "10000-01-01T00:00:00Z";

/// Whether `t` lies in [`EARLIEST`, `END`): what every timestamp passes before it is
/// stored, so no time the database (or its month partitions) cannot take is accepted.
pub fn storable_time(t: DateTime<Utc>) -> Result<(), String> {
    use chrono::Datelike;
    if (1..=9999).contains(&t.year()) {
        Ok(())
    } else {
        Err(format!(
            "{} is outside the storable range {EARLIEST} .. 9999-12-31T23:59:59Z (UTC)",
            t.to_rfc3339()
        ))
    }
}

/// Checks text that will be stored: PostgreSQL text and jsonb cannot hold NUL.
fn storable_text(s: &str) -> Result<(), String> {
    match s.find('\0') {
        Some(at) => Err(format!(
            "holds a NUL character (\\u0000) at character {}; remove it",
            s[..at].chars().count()
        )),
        None => Ok(()),
    }
}

/// Checks every string and key of a JSON value (see [`storable_text`]).
fn storable_json(v: &Value) -> Result<(), String> {
    match v {
        Value::String(s) => storable_text(s),
        Value::Array(a) => a.iter().try_for_each(storable_json),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            storable_text(k).map_err(|e| format!("key {e}"))?;
            storable_json(x)
        }),
        _ => Ok(()),
    }
}

/// A copy of `v` with every NUL character replaced by `␀` (U+2400), for keeping a
/// record the database could not take as a readable dead letter.
pub fn without_nul(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('\0', "\u{2400}")),
        Value::Array(a) => Value::Array(a.iter().map(without_nul).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.replace('\0', "\u{2400}"), without_nul(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Field types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// 64-bit integer.
    Int,
    /// 64-bit float.
    Float,
    /// true / false.
    Bool,
    /// UTF-8 text.
    Text,
    /// RFC 3339 time.
    Timestamp,
    /// Any JSON value.
    Json,
}

impl FieldType {
    /// The PostgreSQL column type.
    pub fn sql(self) -> &'static str {
        match self {
            FieldType::Int => "bigint",
            FieldType::Float => "double precision",
            FieldType::Bool => "boolean",
            FieldType::Text => "text",
            FieldType::Timestamp => "timestamptz",
            FieldType::Json => "jsonb",
        }
    }

    /// The column type as PostgreSQL's `format_type` spells it (how an existing
    /// column's type is compared with a field's).
    pub fn pg_type_name(self) -> &'static str {
        match self {
            FieldType::Timestamp => "timestamp with time zone",
            other => other.sql(),
        }
    }

    /// Its name in a schema (`int`, `float`, …).
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Text => "text",
            FieldType::Timestamp => "timestamp",
            FieldType::Json => "json",
        }
    }
}

/// One field of a category.
#[derive(Debug, Clone, PartialEq, Object, serde::Serialize, serde::Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct Field {
    /// Name: a lowercase letter, then lowercase letters, digits or `_` (at most 48);
    /// not a reserved key (`target`, `ts`, `id`, `schema_version`, `received_at`).
    #[oai(validator(pattern = "^[a-z][a-z0-9_]*$", min_length = 1, max_length = 48))]
    pub name: String,
    // The type (a plain $ref in the spec: generators reject allOf around enums).
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Every new record must have it.
    #[oai(default)]
    #[serde(default)]
    pub required: bool,
    /// Lowest allowed value (int, float).
    pub min: Option<f64>,
    /// Highest allowed value (int, float).
    pub max: Option<f64>,
    /// Allowed values (text).
    #[oai(rename = "enum")]
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<String>>,
    /// Longest allowed text, in characters.
    pub max_length: Option<u32>,
    /// Unit of measurement (documentation only).
    pub unit: Option<String>,
    /// What the field means.
    pub description: Option<String>,
}

impl Field {
    /// An optional field of `kind` without constraints, unit or description.
    pub fn new(name: &str, kind: FieldType) -> Field {
        Field {
            name: name.into(),
            kind,
            required: false,
            min: None,
            max: None,
            enum_values: None,
            max_length: None,
            unit: None,
            description: None,
        }
    }
}

/// A validated category schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Category name.
    pub category: String,
    /// Version.
    pub version: i32,
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// Each numeric field's place in a rollup row (see [`crate::model::rollup`]),
    /// given when a version first names the field and never changed.
    pub rollup_slots: BTreeMap<String, usize>,
}

/// A problem with a schema or a record: which field and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Field (or key) concerned.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: &str, reason: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.to_string()),
            reason: reason.into(),
        }
    }
}

fn problem(field: &str, reason: impl Into<String>) -> Problem {
    Problem::new(field, reason)
}

/// The rule for user and source names (as the tables' CHECK constraints): 1..63
/// lowercase letters, digits, `_`, `.`, `-`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// How one field differs between two versions of a schema.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldChange {
    /// Only in the newer version.
    Added(Field),
    /// Only in the older version (its column and stored values stay).
    Removed(Field),
    /// In both, declared differently: what changed, each as `what: old → new`.
    Changed(String, Vec<String>),
}

/// What changed from the fields `old` to the fields `new`, in the order of `new`
/// (then what was removed, in the order of `old`).
pub fn diff(old: &[Field], new: &[Field]) -> Vec<FieldChange> {
    fn show<T: std::fmt::Debug>(v: &Option<T>) -> String {
        match v {
            None => "none".into(),
            Some(x) => format!("{x:?}").trim_matches('"').to_string(),
        }
    }
    let mut out = vec![];
    for n in new {
        let Some(o) = old.iter().find(|o| o.name == n.name) else {
            out.push(FieldChange::Added(n.clone()));
            continue;
        };
        let mut what = vec![];
        let mut cmp = |label: &str, a: String, b: String| {
            if a != b {
                what.push(format!("{label}: {a} → {b}"));
            }
        };
        cmp("type", o.kind.name().into(), n.kind.name().into());
        cmp("required", o.required.to_string(), n.required.to_string());
        cmp("min", show(&o.min), show(&n.min));
        cmp("max", show(&o.max), show(&n.max));
        cmp("enum", show(&o.enum_values), show(&n.enum_values));
        cmp("max_length", show(&o.max_length), show(&n.max_length));
        cmp("unit", show(&o.unit), show(&n.unit));
        cmp("description", show(&o.description), show(&n.description));
        if !what.is_empty() {
            out.push(FieldChange::Changed(n.name.clone(), what));
        }
    }
    for o in old.iter().filter(|o| !new.iter().any(|n| n.name == o.name)) {
        out.push(FieldChange::Removed(o.clone()));
    }
    out
}

/// Checks a category name and its fields; every problem is reported.
pub fn check_definition(category: &str, fields: &[Field]) -> Vec<Problem> {
    let mut out = vec![];
    if !valid_identifier(category) {
        out.push(Problem {
            field: None,
            reason: format!("category name `{category}` must be a lowercase letter then lowercase letters, digits or _ (at most 48)"),
        });
    }
    if fields.is_empty() {
        out.push(Problem {
            field: None,
            reason: "a category needs at least one field".into(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for f in fields {
        if !valid_identifier(&f.name) {
            out.push(problem(&f.name, "field names are a lowercase letter then lowercase letters, digits or _ (at most 48)"));
            continue;
        }
        if RESERVED.contains(&f.name.as_str()) {
            out.push(problem(
                &f.name,
                format!(
                    "`{}` is reserved (records have {} already)",
                    f.name,
                    RESERVED.join(", ")
                ),
            ));
        }
        if !seen.insert(&f.name) {
            out.push(problem(&f.name, "declared twice"));
        }
        let numeric = matches!(f.kind, FieldType::Int | FieldType::Float);
        if (f.min.is_some() || f.max.is_some()) && !numeric {
            out.push(problem(
                &f.name,
                format!(
                    "min/max apply to int and float fields, not {}",
                    f.kind.name()
                ),
            ));
        }
        if let (Some(lo), Some(hi)) = (f.min, f.max)
            && lo > hi
        {
            out.push(problem(&f.name, format!("min {lo} is above max {hi}")));
        }
        if f.enum_values.is_some() && f.kind != FieldType::Text {
            out.push(problem(&f.name, "enum applies to text fields"));
        }
        if f.enum_values.as_ref().is_some_and(|e| e.is_empty()) {
            out.push(problem(&f.name, "enum needs at least one value"));
        }
        if f.max_length.is_some() && f.kind != FieldType::Text {
            out.push(problem(&f.name, "max_length applies to text fields"));
        }
    }
    if fields.len() > 200 {
        out.push(Problem {
            field: None,
            reason: "at most 200 fields".into(),
        });
    }
    out
}

/// Checks that `new` can follow `old`: fields may be added, removed from the schema
/// (their data stays) or get new constraints; a type never changes.
pub fn check_evolution(old: &[Field], new: &[Field]) -> Vec<Problem> {
    new.iter()
        .filter_map(|n| {
            let o = old.iter().find(|o| o.name == n.name)?;
            (o.kind != n.kind).then(|| {
                problem(
                    &n.name,
                    format!(
                        "changing the type from {} to {} would rewrite stored records; add a new field instead",
                        o.kind.name(),
                        n.kind.name()
                    ),
                )
            })
        })
        .collect()
}

/// A record that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The target.
    pub target: String,
    /// The time (server time when absent).
    pub ts: DateTime<Utc>,
    /// Field values by name (only declared fields).
    pub values: BTreeMap<String, Value>,
}

impl Schema {
    /// Validates one record against this schema: `target` (string), `ts` (RFC 3339,
    /// optional), the declared fields with their types and constraints; unknown keys are
    /// errors. Returns every problem.
    pub fn validate(&self, rec: &Value, now: DateTime<Utc>) -> Result<Record, Vec<Problem>> {
        let Some(obj) = rec.as_object() else {
            return Err(vec![Problem {
                field: None,
                reason: "a record is a JSON object".into(),
            }]);
        };
        let mut problems = vec![];
        let target = match obj.get("target") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => {
                if let Err(e) = storable_text(s) {
                    problems.push(problem("target", e));
                }
                s.clone()
            }
            Some(Value::String(_)) => {
                problems.push(problem("target", "must be 1..200 characters"));
                String::new()
            }
            Some(_) => {
                problems.push(problem("target", "must be a string"));
                String::new()
            }
            None => {
                problems.push(problem("target", "is required"));
                String::new()
            }
        };
        let ts = match obj.get("ts") {
            None | Some(Value::Null) => now,
            Some(Value::String(s)) => match parse_time(s) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(problem("ts", e));
                    now
                }
            },
            Some(_) => {
                problems.push(problem("ts", "must be an RFC 3339 string"));
                now
            }
        };
        let mut values = BTreeMap::new();
        for (k, v) in obj {
            if k == "target" || k == "ts" {
                continue;
            }
            match self.fields.iter().find(|f| f.name == *k) {
                None => problems.push(problem(
                    k,
                    format!("not a field of {} v{}", self.category, self.version),
                )),
                Some(_) if v.is_null() => {}
                Some(f) => match check_value(f, v) {
                    Ok(v) => {
                        values.insert(k.clone(), v);
                    }
                    Err(reason) => problems.push(problem(k, reason)),
                },
            }
        }
        for f in self.fields.iter().filter(|f| f.required) {
            if !values.contains_key(&f.name)
                && !problems.iter().any(|p| p.field.as_deref() == Some(&f.name))
            {
                problems.push(problem(&f.name, "is required"));
            }
        }
        if problems.is_empty() {
            Ok(Record {
                target,
                ts: chrono::SubsecRound::trunc_subsecs(ts, 6),
                values,
            })
        } else {
            Err(problems)
        }
    }
}

/// Parses an RFC 3339 time that can be stored (see [`storable_time`]), cut to the
/// microsecond (what the database holds, so what is hashed, stored and shown agree).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e})"))?
        .with_timezone(&Utc);
    storable_time(t)?;
    Ok(chrono::SubsecRound::trunc_subsecs(t, 6))
}

/// A stored time as the api shows it, the way PostgreSQL writes a `timestamptz` in
/// JSON in UTC: `2026-11-26T08:00:00.25+00:00` (fraction without trailing zeros).
pub fn stored_time(t: DateTime<Utc>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let micros = t.timestamp_subsec_micros();
    if micros > 0 {
        s.push('.');
        s.push_str(format!("{micros:06}").trim_end_matches('0'));
    }
    s.push_str("+00:00");
    s
}

/// Checks one value; returns it normalised (timestamps as RFC 3339 UTC).
fn check_value(f: &Field, v: &Value) -> Result<Value, String> {
    let range = |x: f64| -> Result<(), String> {
        if let Some(lo) = f.min
            && x < lo
        {
            return Err(format!("{x} is below the minimum {lo}"));
        }
        if let Some(hi) = f.max
            && x > hi
        {
            return Err(format!("{x} is above the maximum {hi}"));
        }
        Ok(())
    };
    match f.kind {
        FieldType::Int => {
            let i = v
                .as_i64()
                .ok_or_else(|| format!("expected an integer, got {v}"))?;
            range(i as f64)?;
            Ok(v.clone())
        }
        FieldType::Float => {
            let x = v
                .as_f64()
                .ok_or_else(|| format!("expected a number, got {v}"))?;
            range(x)?;
            Ok(v.clone())
        }
        FieldType::Bool => v
            .is_boolean()
            .then(|| v.clone())
            .ok_or_else(|| format!("expected true or false, got {v}")),
        FieldType::Text => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a string, got {v}"))?;
            storable_text(s)?;
            if let Some(max) = f.max_length
                && s.chars().count() > max as usize
            {
                return Err(format!("longer than {max} characters"));
            }
            if let Some(allowed) = &f.enum_values
                && !allowed.iter().any(|a| a == s)
            {
                return Err(format!("`{s}` is not one of {}", allowed.join(", ")));
            }
            Ok(v.clone())
        }
        FieldType::Timestamp => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected an RFC 3339 string, got {v}"))?;
            Ok(Value::String(stored_time(parse_time(s)?)))
        }
        FieldType::Json => {
            storable_json(v)?;
            Ok(v.clone())
        }
    }
}

impl Record {
    /// A stable id from the record's content: the same record always gets the same id,
    /// so a redelivered or re-sent record is stored once (`ON CONFLICT DO NOTHING`).
    pub fn content_id(&self, category: &str) -> uuid::Uuid {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(category.as_bytes());
        h.update([0]);
        h.update(self.target.as_bytes());
        h.update([0]);
        h.update(
            self.ts
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_bytes(),
        );
        h.update([0]);
        // BTreeMap: keys in order, so the same values always hash alike.
        h.update(serde_json::to_vec(&self.values).expect("json"));
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// Record JSON for an API answer: `target`, `ts`, then the fields.
pub fn record_json(target: &str, ts: DateTime<Utc>, values: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("target".into(), target.into());
    m.insert("ts".into(), ts.to_rfc3339().into());
    m.extend(values);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str, kind: FieldType) -> Field {
        Field::new(name, kind)
    }

    fn weather() -> Schema {
        let mut temp = f("temp", FieldType::Float);
        temp.required = true;
        let mut hum = f("humidity", FieldType::Float);
        hum.min = Some(0.0);
        hum.max = Some(100.0);
        let mut sky = f("sky", FieldType::Text);
        sky.enum_values = Some(vec!["clear".into(), "cloudy".into()]);
        Schema {
            category: "weather".into(),
            version: 1,
            fields: vec![
                temp,
                hum,
                sky,
                f("n", FieldType::Int),
                f("at", FieldType::Timestamp),
            ],
            rollup_slots: Default::default(),
        }
    }

    #[test]
    fn identifiers_are_strict() {
        for ok in ["weather", "temp_c", "a1"] {
            assert!(valid_identifier(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "Temp",
            "a-b",
            "a b",
            "x\"; drop table users; --",
            "é",
            &"a".repeat(49),
        ] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn records_are_checked_field_by_field() {
        let now = Utc::now();
        let ok = weather()
            .validate(
                &json!({"target": "st1", "ts": "2026-11-26T10:00:00+01:00", "temp": 3.5, "n": 2}),
                now,
            )
            .unwrap();
        assert_eq!(ok.ts.to_rfc3339(), "2026-11-26T09:00:00+00:00");
        assert_eq!(ok.values["temp"], 3.5);
        let no_ts = weather()
            .validate(&json!({"target": "st1", "temp": 1}), now)
            .unwrap();
        assert_eq!(no_ts.ts, chrono::SubsecRound::trunc_subsecs(now, 6));
        // Times are cut to the microsecond the database keeps, and shown as it shows them.
        let fine = weather()
            .validate(
                &json!({"target": "st1", "ts": "2026-11-26T10:00:00.123456789Z", "temp": 1,
                        "at": "2026-11-26T11:00:00.250+01:00"}),
                now,
            )
            .unwrap();
        assert_eq!(stored_time(fine.ts), "2026-11-26T10:00:00.123456+00:00");
        assert_eq!(fine.values["at"], "2026-11-26T10:00:00.25+00:00");
        assert_eq!(
            stored_time(parse_time("0500-01-01T00:00:00Z").unwrap()),
            "0500-01-01T00:00:00+00:00"
        );
        let bad = weather()
            .validate(&json!({"temp": "warm", "humidity": 120, "sky": "purple", "n": 1.5, "wind": 3, "at": "noon"}), now)
            .unwrap_err();
        let fields: Vec<&str> = bad.iter().filter_map(|p| p.field.as_deref()).collect();
        for want in ["target", "temp", "humidity", "sky", "n", "wind", "at"] {
            assert!(fields.contains(&want), "{want} missing from {bad:?}");
        }
        assert!(
            bad.iter()
                .any(|p| p.reason.contains("above the maximum 100"))
        );
        let missing = weather()
            .validate(&json!({"target": "x"}), now)
            .unwrap_err();
        assert_eq!(missing, vec![problem("temp", "is required")]);
    }

    #[test]
    fn what_postgresql_cannot_store_is_refused_by_field() {
        let mut s = weather();
        s.fields.push(f("note", FieldType::Text));
        s.fields.push(f("doc", FieldType::Json));
        let now = Utc::now();
        for (rec, field) in [
            (
                json!({"target": "t", "temp": 1, "ts": "9999-12-31T23:59:59-01:00"}),
                "ts",
            ),
            (
                json!({"target": "t", "temp": 1, "ts": "0000-06-01T00:00:00Z"}),
                "ts",
            ),
            (
                json!({"target": "t", "temp": 1, "at": "9999-12-31T23:30:00-02:00"}),
                "at",
            ),
            (json!({"target": "a\u{0}b", "temp": 1}), "target"),
            (json!({"target": "t", "temp": 1, "note": "x\u{0}"}), "note"),
            (
                json!({"target": "t", "temp": 1, "doc": {"k": ["\u{0}"]}}),
                "doc",
            ),
            (
                json!({"target": "t", "temp": 1, "doc": {"k\u{0}": 1}}),
                "doc",
            ),
        ] {
            let p = s.validate(&rec, now).unwrap_err();
            assert_eq!(p.len(), 1, "{rec}: {p:?}");
            assert_eq!(p[0].field.as_deref(), Some(field), "{rec}: {p:?}");
        }
        let edge = s
            .validate(
                &json!({"target": "t", "temp": 1, "ts": "9999-12-31T23:59:59Z"}),
                now,
            )
            .unwrap();
        assert_eq!(edge.ts.to_rfc3339(), "9999-12-31T23:59:59+00:00");
        assert_eq!(
            without_nul(&json!({"a\u{0}": ["b\u{0}"]})),
            json!({"a\u{2400}": ["b\u{2400}"]})
        );
    }

    #[test]
    fn definitions_and_evolution_are_checked() {
        let mut bad = vec![
            f("ts", FieldType::Int),
            f("x", FieldType::Text),
            f("x", FieldType::Int),
            f("Bad", FieldType::Int),
        ];
        bad[1].min = Some(1.0);
        let p = check_definition("weather", &bad);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(!check_definition("drop table", &[f("a", FieldType::Int)]).is_empty());
        let changed = check_evolution(
            &[f("a", FieldType::Int)],
            &[f("a", FieldType::Text), f("b", FieldType::Int)],
        );
        assert_eq!(changed.len(), 1);
        assert!(changed[0].reason.contains("from int to text"));
    }

    #[test]
    fn a_diff_names_what_was_added_removed_and_changed() {
        let mut temp = Field::new("temp", FieldType::Float);
        let hum = Field::new("humidity", FieldType::Float);
        let old = vec![temp.clone(), hum.clone()];
        temp.required = true;
        temp.min = Some(-40.0);
        temp.unit = Some("°C".into());
        let site = Field::new("site", FieldType::Text);
        let new = vec![temp.clone(), site.clone()];
        assert_eq!(
            diff(&old, &new),
            [
                FieldChange::Changed(
                    "temp".into(),
                    vec![
                        "required: false → true".into(),
                        "min: none → -40.0".into(),
                        "unit: none → °C".into()
                    ]
                ),
                FieldChange::Added(site),
                FieldChange::Removed(hum),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
