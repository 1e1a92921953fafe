//! `/api/v1/alert-rules` and `/api/v1/alerts`: rules per category (editor) and the
//! notifications they produced.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::db::alerts;
use crate::model::alert::{AlertRule, Notification};
use crate::web::error::{ApiError, ApiResult, Issue};
use crate::web::names::{CategoryName, Name};

/// Alert routes.
#[derive(Default)]
pub struct AlertsApi;

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
        auth.principal().require_editor()?;
        let schema = state.schemas.get(&state.pool, &body.category).await?;
        let problems = body.check(&schema);
        if !problems.is_empty() {
            return Err(ApiError::invalid(
                format!("alert rule `{}` is invalid", body.name),
                problems.into_iter().map(Issue::from).collect(),
            ));
        }
        let mut rule = body.0;
        rule.id = uuid::Uuid::new_v4();
        let r = alerts::create_rule(&state.pool, &rule).await?;
        tracing::info!(rule = %r.name, category = %r.category, by = %auth.principal().username, "alert rule defined");
        Ok(RuleCreated::Created(
            Json(r.clone()),
            format!("/api/v1/alert-rules/{}", r.id),
        ))
    }

    /// Every alert rule (of one category).
    #[oai(path = "/alert-rules", method = "get", operation_id = "listAlertRules")]
    async fn list_rules(
        &self,
        state: Data<&Arc<AppState>>,
        _auth: Auth,
        category: Query<Option<CategoryName>>,
    ) -> ApiResult<Json<Vec<AlertRule>>> {
        Ok(Json(
            alerts::list_rules(&state.pool, category.0.as_deref()).await?,
        ))
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
        auth.principal().require_editor()?;
        if alerts::delete_rule(&state.pool, &key.0).await? {
            Ok(NoContent::Done)
        } else {
            Err(ApiError::not_found(format!("no alert rule `{}`", key.0)))
        }
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
        match &category.0 {
            Some(c) => auth.principal().require_read(c)?,
            None => auth.principal().require_admin()?,
        }
        let limit = limit.0.unwrap_or(100).clamp(1, 1000);
        Ok(Json(
            alerts::list(&state.pool, category.0.as_deref(), limit).await?,
        ))
    }
}
