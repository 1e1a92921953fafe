//! `/healthz`, `/readyz`.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::api::AppState;

/// System routes.
pub struct SystemApi;

/// What readiness depends on.
#[derive(Debug, Object)]
pub struct Readiness {
    /// PostgreSQL answers.
    pub postgresql: bool,
    /// Time-series storage: `timescaledb` or `partitioned`.
    pub storage: String,
}

/// Readiness answers.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready to serve.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A dependency is down.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[OpenApi(tag = "ApiTags::System")]
impl SystemApi {
    /// Liveness: the process answers.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }

    /// Readiness: PostgreSQL answers.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> ReadyResponse {
        let pg = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
        let r = Readiness {
            postgresql: pg,
            storage: state.storage.as_str().into(),
        };
        if pg {
            ReadyResponse::Ready(Json(r))
        } else {
            ReadyResponse::NotReady(Json(r))
        }
    }
}
