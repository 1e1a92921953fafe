//! `/api/v1/alert-rules` and `/api/v1/alerts`: rules per category (editor) and the
//! notifications they produced.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::alerts as domain;
use crate::api::auth::Auth;
use crate::model::alert::{AlertRule, Notification};
use crate::web::error::ApiResult;
use crate::web::names::{CategoryName, Name};

/// Alert routes.
#[derive(Default)]
pub struct AlertsApi;

/// What a backtest of a rule found.
#[derive(Debug, Object)]
pub struct AlertPreview {
    /// Start of the window looked at (a day before the request).
    pub from: DateTime<Utc>,
    /// Its end: now, or the last record read when there were more than a backtest
    /// reads.
    pub to: DateTime<Utc>,
    /// Records read.
    pub records: u64,
    /// The window held more records than a backtest reads (500 000).
    pub truncated: bool,
    /// The notifications the rule would have sent, oldest first.
    pub notifications: Vec<PreviewNotification>,
}

/// A notification a backtest says the rule would have sent.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PreviewNotification {
    /// When (the record's time; for absence, when the window ran out).
    pub at: DateTime<Utc>,
    /// Target.
    pub target: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The value that crossed the threshold (threshold rules).
    pub value: Option<f64>,
    /// What happened, in words.
    pub message: String,
}

/// Rule creation answers.
#[derive(ApiResponse)]
pub enum RuleCreated {
    /// Created.
    #[oai(status = 201)]
    Created(Json<AlertRule>, #[oai(header = "Location")] String),
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Alerts")]
impl AlertsApi {
    /// Define an alert rule (editor): `threshold` (`field`, `op`, `value`) or `absence`
    /// (`window`), optionally for one `target`, with webhooks.
    #[oai(
        path = "/alert-rules",
        method = "post",
        operation_id = "createAlertRule"
    )]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<AlertRule>,
    ) -> ApiResult<RuleCreated> {
        let r = domain::create(&state, auth.principal(), body.0).await?;
        Ok(RuleCreated::Created(
            Json(r.clone()),
            format!("/api/v1/alert-rules/{}", r.id),
        ))
    }

    /// Backtest a rule without storing it: what it would have notified over the last
    /// day of its category's records.
    ///
    /// Records are taken oldest first, each as the data-consumer evaluates a stored
    /// batch; absence rules are judged on the records' own times. Needs read access
    /// to the category; the rule is checked as on creation.
    #[oai(
        path = "/alert-rules/preview",
        method = "post",
        operation_id = "previewAlertRule"
    )]
    async fn preview(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<AlertRule>,
    ) -> ApiResult<Json<AlertPreview>> {
        let p = domain::preview(&state, auth.principal(), &body).await?;
        Ok(Json(AlertPreview {
            from: p.from,
            to: p.to,
            records: p.records as u64,
            truncated: p.truncated,
            notifications: p
                .fired
                .into_iter()
                .map(|f| PreviewNotification {
                    at: f.at,
                    state: if f.transition.firing {
                        "firing"
                    } else {
                        "resolved"
                    }
                    .into(),
                    target: f.transition.target,
                    value: f.transition.value,
                    message: f.transition.message,
                })
                .collect(),
        }))
    }

    /// Every alert rule (of one category).
    #[oai(path = "/alert-rules", method = "get", operation_id = "listAlertRules")]
    async fn list_rules(
        &self,
        state: Data<&Arc<AppState>>,
        _auth: Auth,
        category: Query<Option<CategoryName>>,
    ) -> ApiResult<Json<Vec<AlertRule>>> {
        Ok(Json(domain::rules(&state, category.0.as_deref()).await?))
    }

    /// Delete an alert rule (by id or name); its notifications stay.
    #[oai(
        path = "/alert-rules/:key",
        method = "delete",
        operation_id = "deleteAlertRule"
    )]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        key: Path<Name>,
    ) -> ApiResult<NoContent> {
        domain::delete(&state, auth.principal(), &key.0).await?;
        Ok(NoContent::Done)
    }

    /// Notifications, newest first (`category` needs read access to it).
    #[oai(path = "/alerts", method = "get", operation_id = "listAlerts")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        category: Query<Option<CategoryName>>,
        /// At most this many (default 100, at most 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> ApiResult<Json<Vec<Notification>>> {
        let limit = limit.0.unwrap_or(100);
        Ok(Json(
            domain::notifications(&state, auth.principal(), category.0.as_deref(), limit).await?,
        ))
    }
}
