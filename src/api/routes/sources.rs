//! `/api/v1/sources`: where records come from and how they are transformed (editor;
//! `file` and `exec` sources, which read the server's disk or run programs, need an
//! admin). The data-manager picks changes up without a restart.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::api::sources::{self as domain, Definition};
use crate::model::source::{Source, SourceKind};
use crate::model::transform::Transform;
use crate::web::error::ApiResult;
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

impl From<SourceDefinition> for Definition {
    fn from(d: SourceDefinition) -> Definition {
        Definition {
            name: d.name.into_string(),
            category: d.category.into_string(),
            kind: d.kind,
            config: d.config,
            transform: d.transform,
            enabled: d.enabled,
        }
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
        let s = domain::create(&state, auth.principal(), body.0.into()).await?;
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
        Ok(Json(domain::list(&state, category.0.as_deref()).await?))
    }

    /// One source, by id or name.
    #[oai(path = "/sources/:key", method = "get", operation_id = "getSource")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        _auth: Auth,
        key: Path<Name>,
    ) -> ApiResult<Json<Source>> {
        Ok(Json(domain::get(&state, &key.0).await?))
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
        Ok(Json(
            domain::update(&state, auth.principal(), &key.0, body.0.into(), None).await?,
        ))
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
        domain::delete(&state, auth.principal(), &key.0).await?;
        Ok(NoContent::Done)
    }
}
