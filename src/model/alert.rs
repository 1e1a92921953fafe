//! Alert rules and notifications, and the pure part of their evaluation.
//!
//! A rule is a threshold on a numeric field (`temperature > 30`) or the absence of data
//! from a target for a window. Thresholds are evaluated on the records stored, in the
//! storing transaction ([`crate::db::store`], with the state in [`crate::db::alerts`]);
//! absence is checked periodically; delivery is [`crate::alerts`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::schema::{FieldType, Problem, Schema};

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum AlertKind {
    /// `field op value` on the latest record of a target.
    Threshold,
    /// No record from a target for `window`.
    Absence,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
pub enum Op {
    /// >
    Gt,
    /// >=
    Gte,
    /// <
    Lt,
    /// <=
    Lte,
    /// =
    Eq,
    /// ≠
    Ne,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Gte => a >= b,
            Op::Lt => a < b,
            Op::Lte => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }

    /// The comparison named `s` (`gt`, `gte`, `lt`, `lte`, `eq`, `ne`).
    pub fn parse(s: &str) -> Option<Op> {
        [Op::Gt, Op::Gte, Op::Lt, Op::Lte, Op::Eq, Op::Ne]
            .into_iter()
            .find(|o| o.as_str() == s)
    }

    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            Op::Ne => "<>",
            other => other.symbol(),
        }
    }

    /// The name stored in SQL and accepted in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Eq => "eq",
            Op::Ne => "ne",
        }
    }

    /// How it is written in a message (`>`, `!=`, …).
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Gte => ">=",
            Op::Lt => "<",
            Op::Lte => "<=",
            Op::Eq => "=",
            Op::Ne => "!=",
        }
    }
}

/// An alert rule as stored and shown.
#[derive(Debug, Clone, PartialEq, Object, Serialize, Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct AlertRule {
    /// Id.
    #[oai(read_only)]
    #[serde(default = "Uuid::new_v4")]
    pub id: Uuid,
    /// Name (unique, 1..100 characters), used in notifications.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: String,
    /// Category watched.
    #[oai(validator(pattern = "^[a-z][a-z0-9_]*$", min_length = 1, max_length = 48))]
    pub category: String,
    // `threshold` or `absence` (a plain $ref in the spec).
    pub kind: AlertKind,
    /// Threshold: the numeric field compared.
    pub field: Option<String>,
    // Threshold: the comparison.
    pub op: Option<Op>,
    /// Threshold: the value compared with.
    pub value: Option<f64>,
    /// Only this target (absence: the target expected to report; otherwise every
    /// target seen).
    pub target: Option<String>,
    /// Absence: how long without data before firing (e.g. `5m`; default `60s`).
    #[oai(default = "default_window")]
    #[serde(default = "default_window")]
    pub window: String,
    /// URLs that get each notification as a JSON POST.
    #[oai(default)]
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Disabled rules are kept but not evaluated.
    #[oai(default = "yes")]
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn default_window() -> String {
    "60s".into()
}

fn yes() -> bool {
    true
}

/// A firing or resolved notification (stored, published, POSTed to webhooks).
#[derive(Debug, Clone, PartialEq, Object, Serialize, Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct Notification {
    /// Id (receivers can drop repeats of a retried delivery by it).
    pub id: Uuid,
    /// Rule name.
    pub rule: String,
    /// Category.
    pub category: String,
    /// Target.
    pub target: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The value that crossed the threshold (threshold rules).
    pub value: Option<f64>,
    /// What happened, in words.
    pub message: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl AlertRule {
    /// Checks a rule against its category's schema; every problem is reported.
    pub fn check(&self, schema: &Schema) -> Vec<Problem> {
        let mut out = vec![];
        if !(1..=100).contains(&self.name.chars().count()) {
            out.push(Problem::new("name", "must be 1..100 characters"));
        }
        match self.kind {
            AlertKind::Threshold => {
                match &self.field {
                    None => out.push(Problem::new("field", "a threshold rule needs a field")),
                    Some(f) => match schema.fields.iter().find(|x| &x.name == f) {
                        None => out.push(Problem::new(
                            "field",
                            format!("`{f}` is not a field of {}", schema.category),
                        )),
                        Some(x) if !matches!(x.kind, FieldType::Int | FieldType::Float) => out
                            .push(Problem::new(
                                "field",
                                format!("`{f}` is not numeric (int or float)"),
                            )),
                        _ => {}
                    },
                }
                if self.op.is_none() {
                    out.push(Problem::new(
                        "op",
                        "a threshold rule needs op (gt gte lt lte eq ne)",
                    ));
                }
                if !self.value.is_some_and(f64::is_finite) {
                    out.push(Problem::new(
                        "value",
                        "a threshold rule needs a finite value",
                    ));
                }
            }
            AlertKind::Absence => {
                if self.window_secs().is_none() {
                    out.push(Problem::new(
                        "window",
                        format!("`{}` is not a duration of at least 1s", self.window),
                    ));
                }
            }
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if !(w.starts_with("http://") || w.starts_with("https://"))
                || reqwest::Url::parse(w).is_err()
            {
                out.push(Problem::new(
                    &format!("webhooks[{i}]"),
                    format!("`{w}` is not an http(s) URL"),
                ));
            }
        }
        out
    }

    /// The window in whole seconds, if it is a valid one.
    pub fn window_secs(&self) -> Option<i32> {
        humantime::parse_duration(&self.window)
            .ok()
            .filter(|d| d.as_secs() >= 1 && d.as_secs() < i32::MAX as u64)
            .map(|d| d.as_secs() as i32)
    }
}

/// The condition of `rule` per target on `records` (target, time, values), from each
/// target's latest record: (time, holds, value). Records of other targets, and for a
/// threshold those without a numeric value of the field, are skipped.
pub fn conditions<'a>(
    rule: &AlertRule,
    records: impl IntoIterator<Item = (&'a str, DateTime<Utc>, &'a BTreeMap<String, Value>)>,
) -> BTreeMap<&'a str, (DateTime<Utc>, bool, Option<f64>)> {
    let mut latest: BTreeMap<&str, (DateTime<Utc>, bool, Option<f64>)> = BTreeMap::new();
    for (target, ts, values) in records {
        if rule.target.as_ref().is_some_and(|t| t != target) {
            continue;
        }
        let (holds, value) = match rule.kind {
            AlertKind::Absence => (false, None),
            AlertKind::Threshold => {
                let v = rule
                    .field
                    .as_ref()
                    .and_then(|f| values.get(f))
                    .and_then(Value::as_f64);
                let Some(v) = v else { continue };
                let holds = rule
                    .op
                    .zip(rule.value)
                    .is_some_and(|(op, x)| op.holds(v, x));
                (holds, Some(v))
            }
        };
        let e = latest.entry(target).or_insert((ts, holds, value));
        if ts >= e.0 {
            *e = (ts, holds, value);
        }
    }
    latest
}

/// What a transition of `rule` for `target` says, in words.
pub fn message(rule: &AlertRule, target: &str, firing: bool, value: Option<f64>) -> String {
    match (rule.kind, firing) {
        (AlertKind::Threshold, true) => format!(
            "{} {} = {} {} {}",
            target,
            rule.field.as_deref().unwrap_or(""),
            value.unwrap_or(f64::NAN),
            rule.op.map(Op::symbol).unwrap_or(""),
            rule.value.unwrap_or(f64::NAN)
        ),
        (AlertKind::Threshold, false) => format!(
            "{} {} back to {}",
            target,
            rule.field.as_deref().unwrap_or(""),
            value.unwrap_or(f64::NAN)
        ),
        (AlertKind::Absence, _) => format!("{target} reports again"),
    }
}

/// A change of a rule's state for one target: it fires or resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The target.
    pub target: String,
    /// Whether it fires now (false: resolved).
    pub firing: bool,
    /// The value that decided (threshold rules).
    pub value: Option<f64>,
    /// What happened, in words ([`message`]).
    pub message: String,
}

/// The transitions of `rule` when the conditions `latest` (from [`conditions`]) meet
/// each target's previous state (`was_firing`): one per target whose state changes.
/// This is the rule the data-consumer applies in the storing transaction, and the
/// backtest of a rule over stored records.
pub fn transitions(
    rule: &AlertRule,
    latest: &BTreeMap<&str, (DateTime<Utc>, bool, Option<f64>)>,
    was_firing: impl Fn(&str) -> bool,
) -> Vec<Transition> {
    latest
        .iter()
        .filter(|(target, (_, holds, _))| was_firing(target) != *holds)
        .map(|(target, (_, holds, value))| Transition {
            target: target.to_string(),
            firing: *holds,
            value: *value,
            message: message(rule, target, *holds, *value),
        })
        .collect()
}

/// What an absence rule firing for `target` says: silent for `window_secs` since
/// `last`.
pub fn absence_message(target: &str, window_secs: i32, last: DateTime<Utc>) -> String {
    format!(
        "no data from {target} for {window_secs} s (last at {})",
        last.to_rfc3339()
    )
}

/// A notification a backtest says the rule would have sent, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// When (the record's time; for absence, when the window ran out).
    pub at: DateTime<Utc>,
    /// The transition.
    pub transition: Transition,
}

/// What a rule would have notified over stored records: fed records oldest first,
/// each as the data-consumer sees a batch of one ([`conditions`], then
/// [`transitions`] against the state so far, every target starting quiet). Absence
/// rules are judged on the records' own times: a gap longer than the window fires
/// when the window ran out and resolves at the next record.
pub struct Backtest<'r> {
    rule: &'r AlertRule,
    /// Per target: firing, last record's time.
    state: BTreeMap<String, (bool, DateTime<Utc>)>,
    fired: Vec<Fired>,
}

impl<'r> Backtest<'r> {
    /// A backtest of `rule`, every target quiet.
    pub fn new(rule: &'r AlertRule) -> Backtest<'r> {
        Backtest {
            rule,
            state: BTreeMap::new(),
            fired: vec![],
        }
    }

    /// The next record (not older than the previous one).
    pub fn record(&mut self, target: &str, ts: DateTime<Utc>, values: &BTreeMap<String, Value>) {
        if self.rule.target.as_deref().is_some_and(|t| t != target) {
            return;
        }
        if self.rule.kind == AlertKind::Absence
            && let (Some(w), Some((_, last))) = (self.rule.window_secs(), self.state.get(target))
        {
            let ran_out = *last + chrono::Duration::seconds(w as i64);
            if ran_out < ts {
                let last = *last;
                self.fired.push(Fired {
                    at: ran_out,
                    transition: Transition {
                        target: target.to_string(),
                        firing: true,
                        value: None,
                        message: absence_message(target, w, last),
                    },
                });
                self.state.insert(target.to_string(), (true, last));
            }
        }
        let latest = conditions(self.rule, [(target, ts, values)]);
        let state = &self.state;
        let changes = transitions(self.rule, &latest, |t| state.get(t).is_some_and(|s| s.0));
        for t in changes {
            self.fired.push(Fired {
                at: ts,
                transition: t,
            });
        }
        if let Some((_, holds, _)) = latest.get(target) {
            self.state.insert(target.to_string(), (*holds, ts));
        }
    }

    /// The notifications up to `until` (absence rules: targets silent since then).
    pub fn finish(mut self, until: DateTime<Utc>) -> Vec<Fired> {
        if self.rule.kind == AlertKind::Absence
            && let Some(w) = self.rule.window_secs()
        {
            for (target, (firing, last)) in &self.state {
                let ran_out = *last + chrono::Duration::seconds(w as i64);
                if !firing && ran_out < until {
                    self.fired.push(Fired {
                        at: ran_out,
                        transition: Transition {
                            target: target.clone(),
                            firing: true,
                            value: None,
                            message: absence_message(target, w, *last),
                        },
                    });
                }
            }
            self.fired.sort_by_key(|f| f.at);
        }
        self.fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(target: Option<&str>) -> AlertRule {
        serde_json::from_value(serde_json::json!({
            "name": "hot", "category": "c", "kind": "threshold", "field": "temp",
            "op": "gt", "value": 30.0, "target": target,
        }))
        .unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_latest_record_of_each_target_decides_whatever_the_order() {
        let v =
            |x: f64| -> BTreeMap<String, Value> { [("temp".to_string(), Value::from(x))].into() };
        let (hot, cool, text) = (
            v(31.0),
            v(20.0),
            BTreeMap::from([("temp".into(), "x".into())]),
        );
        let late = t("2026-12-02T10:00:02Z");
        let early = t("2026-12-02T10:00:01Z");
        let records = [
            ("a", late, &hot),
            ("a", early, &cool),
            ("b", early, &hot),
            ("b", late, &cool),
            ("c", late, &text),
        ];
        let got = conditions(&rule(None), records);
        assert_eq!(got["a"], (late, true, Some(31.0)));
        assert_eq!(got["b"], (late, false, Some(20.0)));
        assert!(
            !got.contains_key("c"),
            "a non-numeric value is no evidence: {got:?}"
        );
        let only_b = conditions(&rule(Some("b")), records);
        assert_eq!(only_b.keys().copied().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn messages_name_the_value_and_the_bound() {
        let r = rule(None);
        assert_eq!(message(&r, "a", true, Some(31.0)), "a temp = 31 > 30");
        assert_eq!(message(&r, "a", false, Some(20.0)), "a temp back to 20");
        assert!(Op::Gte.holds(30.0, 30.0) && !Op::Gt.holds(30.0, 30.0));
    }

    #[test]
    fn a_backtest_notifies_each_crossing_once_as_the_consumer_would() {
        let r = rule(None);
        let v =
            |x: f64| -> BTreeMap<String, Value> { [("temp".to_string(), Value::from(x))].into() };
        let mut b = Backtest::new(&r);
        let at = |s: u32| t(&format!("2026-12-02T10:00:{s:02}Z"));
        for (s, target, x) in [
            (1, "a", 20.0),
            (2, "a", 31.0),
            (3, "a", 35.0),
            (4, "b", 40.0),
            (5, "a", 25.0),
            (6, "a", 31.0),
        ] {
            b.record(target, at(s), &v(x));
        }
        let fired: Vec<(u32, &str, bool)> = b
            .finish(at(59))
            .iter()
            .map(|f| {
                (
                    f.at.format("%S").to_string().parse().unwrap(),
                    if f.transition.target == "a" { "a" } else { "b" },
                    f.transition.firing,
                )
            })
            .collect();
        assert_eq!(
            fired,
            [
                (2, "a", true),
                (4, "b", true),
                (5, "a", false),
                (6, "a", true)
            ],
            "fires on crossing, not on every record above"
        );
    }

    #[test]
    fn an_absence_backtest_fires_when_the_window_runs_out_and_resolves_on_the_next_record() {
        let r: AlertRule = serde_json::from_value(serde_json::json!({
            "name": "quiet", "category": "c", "kind": "absence", "window": "60s"}))
        .unwrap();
        let none = BTreeMap::new();
        let mut b = Backtest::new(&r);
        b.record("a", t("2026-12-02T10:00:00Z"), &none);
        b.record("a", t("2026-12-02T10:00:30Z"), &none);
        b.record("a", t("2026-12-02T10:05:00Z"), &none);
        let fired = b.finish(t("2026-12-02T10:10:00Z"));
        let got: Vec<(String, bool)> = fired
            .iter()
            .map(|f| (f.at.format("%H:%M:%S").to_string(), f.transition.firing))
            .collect();
        assert_eq!(
            got,
            [
                ("10:01:30".to_string(), true),
                ("10:05:00".to_string(), false),
                ("10:06:00".to_string(), true)
            ]
        );
        assert_eq!(fired[1].transition.message, "a reports again");
        assert!(
            fired[0]
                .transition
                .message
                .starts_with("no data from a for 60 s")
        );
    }
}
