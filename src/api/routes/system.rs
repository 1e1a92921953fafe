//! `/healthz`, `/readyz`, and `/api/v1/system/units` (the supervisor, through its
//! control socket and the shared protocol module).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::api::units::{Unit, UnitAction};
use crate::web::error::ApiResult;

/// System routes.
#[derive(Default)]
pub struct SystemApi;

/// What readiness depends on.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Readiness {
    /// PostgreSQL answers.
    pub postgresql: bool,
    /// SeaweedFS (S3) answers; absent when file storage is not configured.
    pub seaweedfs: Option<bool>,
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
    /// Every unit of the supervisor (admin).
    #[oai(
        path = "/api/v1/system/units",
        method = "get",
        operation_id = "listUnits"
    )]
    async fn units(&self, state: Data<&Arc<AppState>>, auth: Auth) -> ApiResult<Json<Vec<Unit>>> {
        auth.principal().require_admin()?;
        let units = crate::api::units::list(&state).await?;
        Ok(Json(units.into_iter().map(Into::into).collect()))
    }

    /// Start, stop or restart a unit (admin); answers once it has settled.
    #[oai(
        path = "/api/v1/system/units/:name/:action",
        method = "post",
        operation_id = "controlUnit"
    )]
    async fn control(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<String>,
        action: Path<UnitAction>,
    ) -> ApiResult<Json<Vec<Unit>>> {
        let p = auth.principal();
        p.require_admin()?;
        let units = crate::api::units::control(&state, &name.0, action.0, &p.username).await?;
        Ok(Json(units.into_iter().map(Into::into).collect()))
    }

    /// Liveness: the process answers.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }

    /// Readiness: PostgreSQL answers, and SeaweedFS when file storage is configured
    /// (503 otherwise, saying what is down).
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> ReadyResponse {
        let pg = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
        let s3 = match &state.files {
            Some(f) => Some(
                tokio::time::timeout(std::time::Duration::from_secs(3), f.check())
                    .await
                    .is_ok_and(|r| r.is_ok()),
            ),
            None => None,
        };
        let r = Readiness {
            postgresql: pg,
            seaweedfs: s3,
            storage: state.storage.as_str().into(),
        };
        if pg && s3 != Some(false) {
            ReadyResponse::Ready(Json(r))
        } else {
            ReadyResponse::NotReady(Json(r))
        }
    }

    /// Integrity reconciliation (admin): data-stream sequences acknowledged by the
    /// writers against the ledger of stored batches, and per category the ledger's row
    /// count and checksum against the rows stored. `ok` is false on any gap, missing or
    /// unexpected row. Reads every record table: expect seconds on large tables.
    #[oai(path = "/api/v1/integrity", method = "get", operation_id = "integrity")]
    async fn integrity(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
    ) -> ApiResult<Json<crate::integrity::Report>> {
        auth.principal().require_admin()?;
        let r = crate::integrity::reconcile(
            &state.pool,
            state.nats.as_ref(),
            state.cfg.ingest_max_pending_age,
            crate::integrity::Pace::Now,
        )
        .await?;
        crate::integrity::log(&r);
        Ok(Json(r))
    }
}
