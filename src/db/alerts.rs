//! Alert rules, their per-target state and the notification outbox, in SQL.
//!
//! State lives in `alert_state`, one row per rule and target, and a transition happens
//! under that row's lock, so with several data-consumers each change fires exactly once.
//! A transition inserts a row in `alerts`, which doubles as an outbox that
//! [`crate::alerts`] delivers from.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::model::alert::{AlertKind, AlertRule, Notification, Op, conditions, transitions};

/// An `alert_rules` row.
#[derive(sqlx::FromRow)]
struct RuleRow {
    id: Uuid,
    name: String,
    category: String,
    kind: String,
    field: Option<String>,
    op: Option<String>,
    value: Option<f64>,
    target: Option<String>,
    window_secs: i32,
    webhooks: Vec<String>,
    enabled: bool,
}

const RULE_COLUMNS: &str =
    "id, name, category, kind, field, op, value, target, window_secs, webhooks, enabled";

fn rule_from(r: RuleRow) -> AlertRule {
    fn parse<T: serde::de::DeserializeOwned>(s: String) -> Option<T> {
        serde_json::from_value(serde_json::Value::String(s)).ok()
    }
    AlertRule {
        id: r.id,
        name: r.name,
        category: r.category,
        kind: parse(r.kind).unwrap_or(AlertKind::Threshold),
        field: r.field,
        op: r.op.and_then(parse),
        value: r.value,
        target: r.target,
        window: humantime::format_duration(Duration::from_secs(r.window_secs as u64)).to_string(),
        webhooks: r.webhooks,
        enabled: r.enabled,
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

/// An `alerts` row.
#[derive(sqlx::FromRow)]
struct NoteRow {
    id: Uuid,
    rule: String,
    category: String,
    target: String,
    state: String,
    value: Option<f64>,
    message: String,
    at: DateTime<Utc>,
}

fn note_from(r: NoteRow) -> Notification {
    Notification {
        id: r.id,
        rule: r.rule,
        category: r.category,
        target: r.target,
        state: r.state,
        value: r.value,
        message: r.message,
        at: r.at,
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
    records: &[crate::model::wire::Row<'_>],
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
        let latest = conditions(&rule, records.iter().map(|r| (r.target, r.ts, r.values)));
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
        let was_firing = |t: &str| before.iter().any(|(x, f)| x == t && *f);
        for t in transitions(&rule, &latest, was_firing) {
            queue(tx, &rule, &t.target, t.firing, t.value, &t.message).await?;
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

/// A pending notification with its attempts and its rule's webhooks.
#[derive(sqlx::FromRow)]
struct PendingRow {
    #[sqlx(flatten)]
    note: NoteRow,
    attempts: i32,
    webhooks: Option<Vec<String>>,
}

/// Claims up to 20 pending notifications (`FOR UPDATE SKIP LOCKED`, so several
/// data-consumers share the outbox): each with its attempts so far and its rule's
/// webhooks.
pub async fn claim_pending(
    tx: &mut Transaction<'_, Postgres>,
) -> Result<Vec<(Notification, i32, Vec<String>)>, sqlx::Error> {
    let rows: Vec<PendingRow> =
        sqlx::query_as(
            "SELECT a.id, a.rule, a.category, a.target, a.state, a.value, a.message, a.at, a.attempts, r.webhooks
             FROM alerts a LEFT JOIN alert_rules r ON r.id = a.rule_id
             WHERE NOT a.done AND a.next_attempt_at <= now()
             ORDER BY a.at LIMIT 20 FOR UPDATE OF a SKIP LOCKED",
        )
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                note_from(r.note),
                r.attempts,
                r.webhooks.unwrap_or_default(),
            )
        })
        .collect())
}

/// Marks a notification delivered.
pub async fn delivered(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alerts SET done = true, attempts = attempts + 1, last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failed delivery: the next attempt in `delay_secs`, or none (`give_up`).
pub async fn failed(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    error: &str,
    give_up: bool,
    delay_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE alerts SET attempts = attempts + 1, last_error = $2, done = $3,
           next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(give_up)
    .bind(delay_secs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
