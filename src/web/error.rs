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
    /// Per-item problems (e.g. one per rejected record or field); empty when the
    /// error concerns the request as a whole. Always present.
    pub errors: Vec<Issue>,
}

impl ErrorBody {
    /// A body with no per-item issues.
    pub fn new(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            errors: vec![],
        }
    }

    /// This body as a response with `status` (for errors raised outside the routes,
    /// where there is no [`ApiError`] variant to return).
    pub fn response(&self, status: poem::http::StatusCode) -> poem::Response {
        use poem_openapi::types::ToJSON;
        poem::Response::builder()
            .status(status)
            .content_type("application/json; charset=utf-8")
            .body(self.to_json_string())
    }
}

/// One problem with one item of the request.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
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

impl From<crate::model::schema::Problem> for Issue {
    fn from(p: crate::model::schema::Problem) -> Issue {
        Issue {
            index: None,
            field: p.field,
            reason: p.reason,
        }
    }
}

impl Issue {
    /// A problem of the item at `index` of the request.
    pub fn at(index: usize, p: crate::model::schema::Problem) -> Issue {
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
    /// The request body is larger than the operation takes.
    #[oai(status = 413)]
    TooLarge(Json<ErrorBody>),
    /// The request body is not JSON (or not the media type the operation takes).
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A dependency (PostgreSQL, NATS, SeaweedFS, the supervisor) is not available:
    /// retry after the given seconds. Never a reason to drop credentials.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
}

fn body(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody::new(code, message))
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
            | ApiError::TooLarge(b)
            | ApiError::UnsupportedMediaType(b)
            | ApiError::Unavailable(b, _) => &b.0,
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
    /// 413.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::TooLarge(body("too_large", message))
    }
    /// 429.
    pub fn too_many(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError::TooManyRequests(body("too_many_requests", message), retry_after)
    }
    /// 503, retry in a few seconds.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::Unavailable(body("unavailable", message), RETRY_AFTER_OUTAGE)
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

/// Seconds a client waits before retrying after an outage (503): the supervisor
/// restarts a crashed dependency within about a second.
pub const RETRY_AFTER_OUTAGE: u64 = 2;

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        if crate::db::is_outage(&e) {
            tracing::warn!("database unavailable: {e}");
            return ApiError::unavailable("the database is not reachable right now; retry shortly");
        }
        if let sqlx::Error::Database(db) = &e {
            // Name what clashed in the request's terms, not the constraint's.
            let what = db
                .constraint()
                .map(|c| constraint_subject(db.table(), c))
                .unwrap_or_else(|| "a value".into());
            if db.is_unique_violation() {
                return ApiError::conflict(format!("{what} is already taken"));
            }
            // Data exceptions and constraints an operator added: a value the database
            // refuses although validation let it by.
            if db.is_check_violation() || db.code().is_some_and(|c| c.starts_with("22")) {
                return ApiError::bad_request(format!(
                    "the database refused a value: {}",
                    db.message()
                ));
            }
        }
        ApiError::internal(e)
    }
}

/// `users_username_key` of table `users` → "the username"; anything else → "a value".
fn constraint_subject(table: Option<&str>, constraint: &str) -> String {
    let rest = table
        .and_then(|t| constraint.strip_prefix(t))
        .map(|r| r.trim_start_matches('_'))
        .unwrap_or(constraint);
    let column = ["_key", "_pkey", "_check", "_fkey"]
        .iter()
        .find_map(|s| rest.strip_suffix(s))
        .unwrap_or(rest);
    if column.is_empty() || column == "pkey" {
        "the name".into()
    } else {
        format!("the {}", column.replace('_', " "))
    }
}

/// Shorthand for route results.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<crate::model::access::Denied> for ApiError {
    fn from(d: crate::model::access::Denied) -> ApiError {
        ApiError::forbidden(d.0)
    }
}

impl From<crate::db::categories::CategoryError> for ApiError {
    fn from(e: crate::db::categories::CategoryError) -> ApiError {
        match e {
            crate::db::categories::CategoryError::NotFound(m) => ApiError::not_found(m),
            crate::db::categories::CategoryError::Conflict(m) => ApiError::conflict(m),
            crate::db::categories::CategoryError::Invalid(p) => ApiError::invalid(
                "the category definition is invalid",
                p.into_iter().map(Issue::from).collect(),
            ),
            crate::db::categories::CategoryError::Incompatible(p) => {
                ApiError::Conflict(Json(ErrorBody {
                    code: "incompatible_change".into(),
                    message: "the new schema is incompatible with stored records".into(),
                    errors: p.into_iter().map(Issue::from).collect(),
                }))
            }
            crate::db::categories::CategoryError::Changed(m) => {
                ApiError::Conflict(Json(ErrorBody::new("changed", m)))
            }
            crate::db::categories::CategoryError::Sql(e) => ApiError::from(e),
        }
    }
}
