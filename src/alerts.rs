//! Alert rules and notifications.
//!
//! A rule is a threshold on a numeric field (`temperature > 30`) or the absence of data
//! from a target for a window. Thresholds are evaluated on the records stored, in the
//! storing transaction (the data-consumer's, or the api's direct insert:
//! [`crate::db::batches`]); absence is checked periodically. State lives in
//! `alert_state`, one row per rule and target, and a transition happens under that
//! row's lock, so with several data-consumers each change fires exactly once.
//!
//! A transition inserts a row in `alerts`, which doubles as an outbox: a delivery loop
//! in every data-consumer claims pending rows (`FOR UPDATE SKIP LOCKED`), publishes
//! them on `tmidb.alerts.{category}` (and `tmidb.live.{category}` for SSE followers)
//! and POSTs them to the rule's webhooks, retrying
//! with exponential backoff (1 s doubling to 5 min, 10 attempts) until delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::api::schema::{FieldType, Problem, Schema};

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

    fn as_str(self) -> &'static str {
        match self {
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Eq => "eq",
            Op::Ne => "ne",
        }
    }

    fn symbol(self) -> &'static str {
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

    fn window_secs(&self) -> Option<i32> {
        humantime::parse_duration(&self.window)
            .ok()
            .filter(|d| d.as_secs() >= 1 && d.as_secs() < i32::MAX as u64)
            .map(|d| d.as_secs() as i32)
    }
}

type RuleRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
    i32,
    Vec<String>,
    bool,
);

const RULE_COLUMNS: &str =
    "id, name, category, kind, field, op, value, target, window_secs, webhooks, enabled";

fn rule_from(r: RuleRow) -> AlertRule {
    fn parse<T: serde::de::DeserializeOwned>(s: String) -> Option<T> {
        serde_json::from_value(serde_json::Value::String(s)).ok()
    }
    AlertRule {
        id: r.0,
        name: r.1,
        category: r.2,
        kind: parse(r.3).unwrap_or(AlertKind::Threshold),
        field: r.4,
        op: r.5.and_then(parse),
        value: r.6,
        target: r.7,
        window: humantime::format_duration(Duration::from_secs(r.8 as u64)).to_string(),
        webhooks: r.9,
        enabled: r.10,
    }
}

/// Every rule (of one category).
pub async fn list_rules(
    pool: &PgPool,
    category: Option<&str>,
) -> Result<Vec<AlertRule>, sqlx::Error> {
    let rows: Vec<RuleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE $1::text IS NULL OR category = $1 ORDER BY name"
    )))
    .bind(category)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(rule_from).collect())
}

/// Stores a new rule (checked by the caller). An absence rule for a fixed target starts
/// its clock now, so a target that never reports fires too.
pub async fn create_rule(pool: &PgPool, r: &AlertRule) -> Result<AlertRule, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row: RuleRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO alert_rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {RULE_COLUMNS}"
    )))
    .bind(r.id)
    .bind(&r.name)
    .bind(&r.category)
    .bind(match r.kind {
        AlertKind::Threshold => "threshold",
        AlertKind::Absence => "absence",
    })
    .bind(&r.field)
    .bind(r.op.map(Op::as_str))
    .bind(r.value)
    .bind(&r.target)
    .bind(r.window_secs().unwrap_or(60))
    .bind(&r.webhooks)
    .bind(r.enabled)
    .fetch_one(&mut *tx)
    .await?;
    if let (AlertKind::Absence, Some(t)) = (r.kind, &r.target) {
        sqlx::query("INSERT INTO alert_state (rule_id, target, firing, last_seen) VALUES ($1, $2, false, now())")
            .bind(r.id)
            .bind(t)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rule_from(row))
}

/// Deletes a rule; false if there was none.
pub async fn delete_rule(pool: &PgPool, key: &str) -> Result<bool, sqlx::Error> {
    let id = Uuid::parse_str(key).ok();
    let n = sqlx::query("DELETE FROM alert_rules WHERE id = $1 OR name = $2")
        .bind(id)
        .bind(key)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(n > 0)
}

type NoteRow = (
    Uuid,
    String,
    String,
    String,
    String,
    Option<f64>,
    String,
    DateTime<Utc>,
);

fn note_from(r: NoteRow) -> Notification {
    Notification {
        id: r.0,
        rule: r.1,
        category: r.2,
        target: r.3,
        state: r.4,
        value: r.5,
        message: r.6,
        at: r.7,
    }
}

/// Notifications, newest first.
pub async fn list(
    pool: &PgPool,
    category: Option<&str>,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    let rows: Vec<NoteRow> = sqlx::query_as(
        "SELECT id, rule, category, target, state, value, message, at FROM alerts
         WHERE $1::text IS NULL OR category = $1 ORDER BY at DESC, id LIMIT $2",
    )
    .bind(category)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(note_from).collect())
}

/// Evaluates the enabled rules of `category` on records just stored, in the storing
/// transaction; returns how many notifications it queued.
pub async fn evaluate(
    tx: &mut Transaction<'_, Postgres>,
    category: &str,
    records: &[crate::db::batches::Row<'_>],
) -> Result<usize, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let rows: Vec<RuleRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE category = $1 AND enabled ORDER BY id"
    )))
    .bind(category)
    .fetch_all(&mut **tx)
    .await?;
    let mut queued = 0;
    for rule in rows.into_iter().map(rule_from) {
        // The condition per target, from its latest record: (holds, value).
        let mut latest: BTreeMap<&str, (DateTime<Utc>, bool, Option<f64>)> = BTreeMap::new();
        for r in records {
            if rule.target.as_ref().is_some_and(|t| t != r.target) {
                continue;
            }
            let (holds, value) = match rule.kind {
                AlertKind::Absence => (false, None),
                AlertKind::Threshold => {
                    let v = rule
                        .field
                        .as_ref()
                        .and_then(|f| r.values.get(f))
                        .and_then(serde_json::Value::as_f64);
                    let Some(v) = v else { continue };
                    let holds = rule
                        .op
                        .zip(rule.value)
                        .is_some_and(|(op, x)| op.holds(v, x));
                    (holds, Some(v))
                }
            };
            let e = latest.entry(r.target).or_insert((r.ts, holds, value));
            if r.ts >= e.0 {
                *e = (r.ts, holds, value);
            }
        }
        if latest.is_empty() {
            continue;
        }
        let targets: Vec<String> = latest.keys().map(|t| t.to_string()).collect();
        sqlx::query(
            "INSERT INTO alert_state (rule_id, target, firing, last_seen)
             SELECT $1, t, false, now() FROM unnest($2::text[]) AS t ORDER BY t ON CONFLICT DO NOTHING",
        )
        .bind(rule.id)
        .bind(&targets)
        .execute(&mut **tx)
        .await?;
        let before: Vec<(String, bool)> = sqlx::query_as(
            "SELECT target, firing FROM alert_state WHERE rule_id = $1 AND target = ANY($2)
             ORDER BY target FOR UPDATE",
        )
        .bind(rule.id)
        .bind(&targets)
        .fetch_all(&mut **tx)
        .await?;
        let firing: Vec<bool> = targets.iter().map(|t| latest[t.as_str()].1).collect();
        sqlx::query(
            "UPDATE alert_state s SET firing = x.f, last_seen = now(),
               changed_at = CASE WHEN s.firing <> x.f THEN now() ELSE s.changed_at END
             FROM unnest($2::text[], $3::bool[]) AS x(t, f) WHERE s.rule_id = $1 AND s.target = x.t",
        )
        .bind(rule.id)
        .bind(&targets)
        .bind(&firing)
        .execute(&mut **tx)
        .await?;
        for (target, was) in before {
            let (_, now_firing, value) = latest[target.as_str()];
            if was == now_firing {
                continue;
            }
            let message = match (rule.kind, now_firing) {
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
            };
            queue(tx, &rule, &target, now_firing, value, &message).await?;
            queued += 1;
        }
    }
    Ok(queued)
}

async fn queue(
    tx: &mut Transaction<'_, Postgres>,
    rule: &AlertRule,
    target: &str,
    firing: bool,
    value: Option<f64>,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alerts (id, rule_id, rule, category, target, state, value, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::new_v4())
    .bind(rule.id)
    .bind(&rule.name)
    .bind(&rule.category)
    .bind(target)
    .bind(if firing { "firing" } else { "resolved" })
    .bind(value)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Fires absence rules whose targets have been silent for their window (one statement:
/// the instance whose update wins queues the notification); returns how many.
pub async fn check_absence(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let n = sqlx::query(
        "WITH fired AS (
           UPDATE alert_state s SET firing = true, changed_at = now()
           FROM alert_rules r
           WHERE r.id = s.rule_id AND r.kind = 'absence' AND r.enabled AND NOT s.firing
             AND s.last_seen < now() - make_interval(secs => r.window_secs)
           RETURNING r.id, r.name, r.category, s.target, s.last_seen, r.window_secs)
         INSERT INTO alerts (id, rule_id, rule, category, target, state, message)
         SELECT gen_random_uuid(), id, name, category, target, 'firing',
                format('no data from %s for %s s (last at %s)', target, window_secs, last_seen)
         FROM fired",
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

type PendingRow = (
    Uuid,
    String,
    String,
    String,
    String,
    Option<f64>,
    String,
    DateTime<Utc>,
    i32,
    Option<Vec<String>>,
);

/// Delivers pending notifications: claims up to 20, publishes each on NATS and POSTs it
/// to its rule's webhooks; failures are retried later with backoff. Returns how many
/// were delivered.
pub async fn deliver(
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    http: &reqwest::Client,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows: Vec<PendingRow> =
        sqlx::query_as(
            "SELECT a.id, a.rule, a.category, a.target, a.state, a.value, a.message, a.at, a.attempts, r.webhooks
             FROM alerts a LEFT JOIN alert_rules r ON r.id = a.rule_id
             WHERE NOT a.done AND a.next_attempt_at <= now()
             ORDER BY a.at LIMIT 20 FOR UPDATE OF a SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
    let mut delivered = 0;
    for r in rows {
        let (attempts, webhooks) = (r.8, r.9.clone().unwrap_or_default());
        let note = note_from((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7));
        let mut error = None;
        let event = crate::pipeline::Event::Alert(note.clone());
        let payload = serde_json::to_vec(&event).expect("json");
        let mut published = Ok(());
        for (prefix, id) in [
            (crate::pipeline::ALERTS_PREFIX, note.id.to_string()),
            (crate::pipeline::LIVE_PREFIX, format!("alert-{}", note.id)),
        ] {
            let r = match crate::pipeline::publish(
                js,
                format!("{prefix}{}", note.category),
                &id,
                payload.clone(),
            )
            .await
            {
                Ok(ack) => tokio::time::timeout(Duration::from_secs(5), ack)
                    .await
                    .map_err(|_| "no JetStream ack within 5 s".to_string())
                    .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            published = published.and(r);
        }
        if let Err(e) = published {
            error = Some(format!("NATS: {e}"));
        }
        for url in &webhooks {
            let sent = http
                .post(url)
                .header("X-Tmidb-Alert-Id", note.id.to_string())
                .json(&note)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => error = Some(format!("{url} answered {}", resp.status())),
                Err(e) => error = Some(format!("{url}: {e}")),
            }
        }
        match error {
            None => {
                sqlx::query("UPDATE alerts SET done = true, attempts = attempts + 1, last_error = NULL WHERE id = $1")
                    .bind(note.id)
                    .execute(&mut *tx)
                    .await?;
                delivered += 1;
                tracing::info!(rule = %note.rule, target = %note.target, state = %note.state, "alert delivered");
            }
            Some(e) => {
                let give_up = attempts + 1 >= 10;
                let delay = 2f64.powi(attempts.min(9)).min(300.0);
                sqlx::query(
                    "UPDATE alerts SET attempts = attempts + 1, last_error = $2, done = $3,
                       next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
                )
                .bind(note.id)
                .bind(&e)
                .bind(give_up)
                .bind(delay)
                .execute(&mut *tx)
                .await?;
                if give_up {
                    tracing::error!(rule = %note.rule, target = %note.target, "alert delivery gave up after 10 attempts: {e}");
                } else {
                    tracing::warn!(rule = %note.rule, target = %note.target, attempt = attempts + 1, "alert delivery failed, retrying in {delay} s: {e}");
                }
            }
        }
    }
    tx.commit().await?;
    Ok(delivered)
}
