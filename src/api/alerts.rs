//! Alert rules and their notifications, for both front-ends of the api: rules per
//! category (editor), checked against the category's schema; the notifications they
//! produced; and a backtest of a rule over the last day of stored records with the
//! data-consumer's own evaluation ([`crate::model::alert::Backtest`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::AppState;
use crate::db::alerts;
use crate::model::access::Principal;
use crate::model::alert::{AlertKind, AlertRule, Backtest, Fired, Notification};
use crate::model::query::Selection;
use crate::web::error::{ApiError, ApiResult, Issue};

/// Most records a backtest reads (the oldest first).
pub const BACKTEST_RECORDS: i64 = 500_000;

/// The rule's problems against its category's schema, as the error.
async fn check(state: &AppState, rule: &AlertRule) -> ApiResult<()> {
    let schema = state.schemas.get(&state.pool, &rule.category).await?;
    let problems = rule.check(&schema);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            format!("alert rule `{}` is invalid", rule.name),
            problems.into_iter().map(Issue::from).collect(),
        ))
    }
}

/// Every rule (of `category`).
pub async fn rules(state: &AppState, category: Option<&str>) -> ApiResult<Vec<AlertRule>> {
    Ok(alerts::list_rules(&state.pool, category).await?)
}

/// Defines `rule` (editor) under a new id.
pub async fn create(state: &AppState, p: &Principal, mut rule: AlertRule) -> ApiResult<AlertRule> {
    p.require_editor()?;
    check(state, &rule).await?;
    rule.id = uuid::Uuid::new_v4();
    let r = alerts::create_rule(&state.pool, &rule).await?;
    tracing::info!(rule = %r.name, category = %r.category, by = %p.username, "alert rule defined");
    Ok(r)
}

/// Deletes the rule `key` (id or name; editor); its notifications stay.
pub async fn delete(state: &AppState, p: &Principal, key: &str) -> ApiResult<()> {
    p.require_editor()?;
    if alerts::delete_rule(&state.pool, key).await? {
        tracing::info!(rule = %key, by = %p.username, "alert rule deleted");
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no alert rule `{key}`")))
    }
}

/// Notifications, newest first, at most `limit` (1..=1000): a category's need read
/// access to it; all categories at once need an admin.
pub async fn notifications(
    state: &AppState,
    p: &Principal,
    category: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<Notification>> {
    match category {
        Some(c) => p.require_read(c)?,
        None => p.require_admin()?,
    }
    Ok(alerts::list(&state.pool, category, limit.clamp(1, 1000)).await?)
}

/// What a backtest found.
#[derive(Debug)]
pub struct Preview {
    /// The window looked at.
    pub from: DateTime<Utc>,
    /// Its end.
    pub to: DateTime<Utc>,
    /// Records read.
    pub records: usize,
    /// Whether there were more than [`BACKTEST_RECORDS`] (the window was cut short at
    /// the last record read).
    pub truncated: bool,
    /// The notifications the rule would have sent, oldest first.
    pub fired: Vec<Fired>,
}

/// What `rule` (not stored) would have notified over the last day of its category's
/// records, for a reader of the category.
pub async fn preview(state: &AppState, p: &Principal, rule: &AlertRule) -> ApiResult<Preview> {
    p.require_read(&rule.category)?;
    check(state, rule).await?;
    let schema = state.schemas.get(&state.pool, &rule.category).await?;
    let to = Utc::now();
    let from = to - chrono::Duration::days(1);
    let sel = Selection {
        target: rule.target.clone(),
        from: Some(from),
        to: Some(to),
        filters: vec![],
    };
    let field = match rule.kind {
        AlertKind::Threshold => rule.field.as_deref(),
        AlertKind::Absence => None,
    };
    let points =
        crate::db::records::points(&state.pool, &schema, &sel, field, BACKTEST_RECORDS + 1).await?;
    let truncated = points.len() as i64 > BACKTEST_RECORDS;
    let points = &points[..points.len().min(BACKTEST_RECORDS as usize)];
    let mut b = Backtest::new(rule);
    let mut values = BTreeMap::new();
    for (target, ts, value) in points {
        values.clear();
        if let (Some(f), Some(v)) = (field, value) {
            values.insert(f.to_string(), serde_json::Value::from(*v));
        }
        b.record(target, *ts, &values);
    }
    let until = match (truncated, points.last()) {
        (true, Some((_, ts, _))) => *ts,
        _ => to,
    };
    Ok(Preview {
        from,
        to: until,
        records: points.len(),
        truncated,
        fired: b.finish(until),
    })
}
