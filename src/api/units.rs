//! The supervisor's units, for both front-ends of the api: asked through the control
//! socket with the shared protocol, as `tmidb-cli` does.

use super::AppState;
use crate::control::protocol::{ErrorKind, Request, Response, UnitStatus};
use crate::web::error::{ApiError, ApiResult};

/// Asks the supervisor; 503 when it cannot be reached, 404 for unknown units, 409 for
/// a refused request.
pub async fn ask(state: &AppState, req: Request) -> ApiResult<Response> {
    let mut c = crate::cli::connect(&state.cfg)
        .await
        .map_err(|e| ApiError::unavailable(format!("the supervisor cannot be reached: {e}")))?;
    match c.request(&req).await {
        Ok(Response::Error {
            kind: ErrorKind::UnknownUnit,
            message,
        }) => Err(ApiError::not_found(message)),
        Ok(Response::Error { message, .. }) => Err(ApiError::conflict(message)),
        Ok(r) => Ok(r),
        Err(e) => Err(ApiError::unavailable(format!(
            "the supervisor did not answer: {e}"
        ))),
    }
}

/// Every unit as the supervisor reports it.
pub async fn list(state: &AppState) -> ApiResult<Vec<UnitStatus>> {
    match ask(state, Request::Status { units: vec![] }).await? {
        Response::Status { units } => Ok(units),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}
