//! The API's error responses: one JSON shape (`code`, `message`, optional per-item
//! `errors`) and one variant per status, so every operation documents them all.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

/// What went wrong.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Machine-readable code (`unauthorized`, `validation_failed`, …).
    pub code: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Per-item problems (e.g. one per rejected record or field).
    #[oai(skip_serializing_if_is_empty)]
    pub errors: Vec<Issue>,
}

/// One problem with one item of the request.
#[derive(Debug, Clone, Object)]
pub struct Issue {
    /// Index of the item in the request array, if any.
    #[oai(skip_serializing_if_is_none)]
    pub index: Option<u64>,
    /// The field concerned, if any.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

impl From<crate::api::schema::Problem> for Issue {
    fn from(p: crate::api::schema::Problem) -> Issue {
        Issue {
            index: None,
            field: p.field,
            reason: p.reason,
        }
    }
}

impl Issue {
    /// A problem of the item at `index` of the request.
    pub fn at(index: usize, p: crate::api::schema::Problem) -> Issue {
        Issue {
            index: Some(index as u64),
            ..Issue::from(p)
        }
    }
}

/// Error responses.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No valid session or token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// Authenticated, but the role or token scope does not allow this (or the CSRF
    /// header is missing on a cookie-authenticated write).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Conflicts with what exists (duplicate name, records still present, …).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// Too many attempts: retry after the given seconds.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// An internal error (logged with details).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A dependency (SeaweedFS, the supervisor) is not available.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        code: code.into(),
        message: message.into(),
        errors: vec![],
    })
}

impl ApiError {
    /// The error body (code, message, per-item issues).
    pub fn body(&self) -> &ErrorBody {
        match self {
            ApiError::BadRequest(b)
            | ApiError::Unauthorized(b)
            | ApiError::Forbidden(b)
            | ApiError::NotFound(b)
            | ApiError::Conflict(b)
            | ApiError::TooManyRequests(b, _)
            | ApiError::Internal(b)
            | ApiError::Unavailable(b) => &b.0,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(body("bad_request", message))
    }
    /// 400 with per-item issues.
    pub fn invalid(message: impl Into<String>, errors: Vec<Issue>) -> ApiError {
        ApiError::BadRequest(Json(ErrorBody {
            code: "validation_failed".into(),
            message: message.into(),
            errors,
        }))
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::Unauthorized(body("unauthorized", message))
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::Forbidden(body("forbidden", message))
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(body("not_found", message))
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::Conflict(body("conflict", message))
    }
    /// 429.
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError::TooManyRequests(body("too_many_requests", message), retry_after)
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::Unavailable(body("unavailable", message))
    }
    /// 500; the cause is logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {cause}");
        ApiError::Internal(body(
            "internal",
            "internal error; the api log has the details",
        ))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return ApiError::conflict(format!(
                    "already exists ({})",
                    db.constraint().unwrap_or("unique")
                ));
            }
            if db.is_check_violation() {
                return ApiError::bad_request(format!(
                    "rejected by the database ({})",
                    db.constraint().unwrap_or("check")
                ));
            }
        }
        ApiError::internal(e)
    }
}

/// Shorthand for route results.
pub type ApiResult<T> = Result<T, ApiError>;
