//! `/api/v1/sources`: where records come from and how they are transformed (editor;
//! `file` and `exec` sources, which read the server's disk or run programs, need an
//! admin). The data-manager picks changes up without a restart.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;
use uuid::Uuid;

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::db::sources as store;
use crate::model::access::Principal;
use crate::model::source::{Source, SourceKind};
use crate::model::transform::Transform;
use crate::web::error::{ApiError, ApiResult, Issue};
use crate::web::names::{CategoryName, Name};

/// Source routes.
#[derive(Default)]
pub struct SourcesApi;

/// A source definition.
///
/// `config` by kind: `http_push` and `nats`: `{}`. `http_poll`: `url`, `interval`
/// (default `30s`), `records` (JSON pointer to the array in the response), `fields`
/// (field → JSON pointer within an item), `headers`. `file`: `path` (directory, relative
/// to the tmiDB home). `exec`: `command` (program and arguments), `env`.
#[derive(Debug, Object)]
pub struct SourceDefinition {
    /// Name (unique): lowercase letters, digits, `_`, `.`, `-`, starting with a letter
    /// or digit.
    pub name: Name,
    /// The category its records belong to.
    pub category: CategoryName,
    // How it gets records.
    pub kind: SourceKind,
    /// Kind-specific settings (see above).
    #[oai(default = "empty")]
    pub config: Value,
    /// Transformation applied before validation.
    #[oai(default)]
    pub transform: Transform,
    /// Whether it runs (default true).
    #[oai(default = "yes")]
    pub enabled: bool,
}

fn empty() -> Value {
    Value::Object(Default::default())
}

fn yes() -> bool {
    true
}

/// Source creation answers.
#[derive(ApiResponse)]
pub enum SourceCreated {
    /// Created.
    #[oai(status = 201)]
    Created(Json<Source>, #[oai(header = "Location")] String),
}

async fn check(state: &AppState, p: &Principal, d: &SourceDefinition) -> ApiResult<()> {
    p.require_editor()?;
    if matches!(d.kind, SourceKind::File | SourceKind::Exec) {
        p.require_admin().map_err(|_| {
            ApiError::forbidden(format!(
                "`{}` sources read the server's disk or run programs; only admins define them",
                d.kind.as_str()
            ))
        })?;
    }
    state.schemas.get(&state.pool, &d.category).await?;
    let issues: Vec<Issue> = crate::model::source::check_config(d.kind, &d.config)
        .into_iter()
        .chain(d.transform.check())
        .map(Issue::from)
        .collect();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            format!("source `{}` is invalid", d.name),
            issues,
        ))
    }
}

async fn find(state: &AppState, key: &str) -> ApiResult<Source> {
    store::get(&state.pool, key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no source `{key}`")))
}

fn source(id: Uuid, d: SourceDefinition) -> Source {
    let now = chrono::Utc::now();
    Source {
        id,
        name: d.name.into_string(),
        category: d.category.into_string(),
        kind: d.kind,
        config: d.config,
        transform: d.transform,
        enabled: d.enabled,
        created_at: now,
        updated_at: now,
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Sources")]
impl SourcesApi {
    /// Define a source (editor; `file` and `exec` need an admin).
    #[oai(path = "/sources", method = "post", operation_id = "createSource")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<SourceDefinition>,
    ) -> ApiResult<SourceCreated> {
        check(&state, auth.principal(), &body).await?;
        if store::get(&state.pool, &body.name).await?.is_some() {
            return Err(ApiError::conflict(format!(
                "source `{}` exists; PUT /api/v1/sources/{} to change it",
                body.name, body.name
            )));
        }
        let s = store::save(&state.pool, &source(Uuid::new_v4(), body.0)).await?;
        tracing::info!(source = %s.name, kind = s.kind.as_str(), by = %auth.principal().username, "source defined");
        Ok(SourceCreated::Created(
            Json(s.clone()),
            format!("/api/v1/sources/{}", s.id),
        ))
    }

    /// Every source (of one category).
    #[oai(path = "/sources", method = "get", operation_id = "listSources")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        _auth: Auth,
        category: Query<Option<CategoryName>>,
    ) -> ApiResult<Json<Vec<Source>>> {
        let all = store::list(&state.pool).await?;
        Ok(Json(
            all.into_iter()
                .filter(|s| category.0.as_ref().is_none_or(|c| *c == s.category))
                .collect(),
        ))
    }

    /// One source, by id or name.
    #[oai(path = "/sources/:key", method = "get", operation_id = "getSource")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        _auth: Auth,
        key: Path<Name>,
    ) -> ApiResult<Json<Source>> {
        Ok(Json(find(&state, &key.0).await?))
    }

    /// Replace a source's definition (it restarts with it).
    #[oai(path = "/sources/:key", method = "put", operation_id = "updateSource")]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        key: Path<Name>,
        body: Json<SourceDefinition>,
    ) -> ApiResult<Json<Source>> {
        let old = find(&state, &key.0).await?;
        check(&state, auth.principal(), &body).await?;
        if matches!(old.kind, SourceKind::File | SourceKind::Exec) {
            auth.principal().require_admin()?;
        }
        let mut s = source(old.id, body.0);
        s.created_at = old.created_at;
        let s = store::save(&state.pool, &s).await?;
        tracing::info!(source = %s.name, by = %auth.principal().username, "source changed");
        Ok(Json(s))
    }

    /// Delete a source (its runner stops; stored records stay).
    #[oai(
        path = "/sources/:key",
        method = "delete",
        operation_id = "deleteSource"
    )]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        key: Path<Name>,
    ) -> ApiResult<NoContent> {
        auth.principal().require_editor()?;
        let s = find(&state, &key.0).await?;
        if matches!(s.kind, SourceKind::File | SourceKind::Exec) {
            auth.principal().require_admin()?;
        }
        store::delete(&state.pool, s.id).await?;
        tracing::info!(source = %s.name, by = %auth.principal().username, "source deleted");
        Ok(NoContent::Done)
    }
}
