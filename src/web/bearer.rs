//! Bearer authentication, shared by the api and the data-manager's push endpoint: an
//! API token (`tmid_…`) or a session token (`tmss_…`), checked against the database
//! pool the application holds as request data (`.data(pool)`).

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::{ApiExtractor, SecurityScheme};
use sqlx::PgPool;

use crate::model::access::{Principal, SESSION_PREFIX, TOKEN_PREFIX};
use crate::web::error::{ApiError, ApiResult};

/// Bearer authentication: an API token (`tmid_…`) or a session token (`tmss_…`).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

/// Bearer authentication alone (the data-manager's push endpoint), with the same
/// JSON 401s as the api's `Auth`.
pub struct BearerOnly(pub Principal);

impl<'a> poem_openapi::ApiExtractor<'a> for BearerOnly {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <BearerAuth as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        <BearerAuth as ApiExtractor>::security_schemes()
    }

    async fn from_request(
        req: &'a Request,
        body: &mut poem::RequestBody,
        _opts: poem_openapi::ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        if !req
            .headers()
            .contains_key(poem::http::header::AUTHORIZATION)
        {
            return Err(ApiError::unauthorized(
                "send `Authorization: Bearer TOKEN` (a token with write:CATEGORY)",
            )
            .into());
        }
        <BearerAuth as ApiExtractor>::from_request(req, body, Default::default())
            .await
            .map(|b| BearerOnly(b.0))
            .map_err(|e| ours(e, "the Authorization header must be `Bearer TOKEN`"))
    }
}

/// Our checkers answer with an ApiError (a response); poem-openapi's own extractors
/// with a bare "authorization error": reworded as `what`.
pub fn ours(e: poem::Error, what: &str) -> poem::Error {
    if e.is_from_response() {
        e
    } else {
        ApiError::unauthorized(what.to_string()).into()
    }
}

/// The database pool of the application serving `req`.
pub fn pool(req: &Request) -> poem::Result<&PgPool> {
    req.data::<PgPool>()
        .ok_or_else(|| ApiError::internal("the application holds no database pool").into())
}

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    Ok(bearer_principal(pool(req)?, &bearer.token).await?)
}

/// The caller behind a Bearer token (an API token or a session token).
pub async fn bearer_principal(pool: &PgPool, token: &str) -> ApiResult<Principal> {
    let t = token.trim();
    if t.starts_with(SESSION_PREFIX) {
        return Ok(session(pool, t).await?.0);
    }
    if !t.starts_with(TOKEN_PREFIX) {
        return Err(ApiError::unauthorized(
            "not a tmiDB token (they start with tmid_ or tmss_)",
        ));
    }
    crate::db::access::token_principal(pool, t)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown, revoked or expired token"))
}

/// A live session's user and CSRF token.
pub async fn session(pool: &PgPool, token: &str) -> ApiResult<(Principal, String)> {
    crate::db::access::session_principal(pool, token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("session expired or logged out; log in again"))
}
