//! `/api/v1/auth/*` and `/api/v1/tokens`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::{ApiTags, NoContent};
use crate::api::AppState;
use crate::api::auth::{self, Auth};
use crate::api::tokens::Token;
use crate::api::users::User;
use crate::model::access::{self};
use crate::web::error::ApiResult;
use crate::web::names::{Label, ScopeName};

/// Auth and token routes.
#[derive(Default)]
pub struct AuthApi;

/// Credentials.
#[derive(Debug, Object)]
pub struct LoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    #[oai(write_only)]
    pub password: String,
}

/// A new session.
#[derive(Debug, Object)]
pub struct Session {
    /// Session token: also usable as `Authorization: Bearer …`.
    pub token: String,
    /// Send this as `X-CSRF-Token` on writes authenticated by the cookie.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
    // Who logged in (a plain $ref in the spec).
    pub user: User,
}

/// Login answers.
#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Logged in; the session cookie is set (HttpOnly, SameSite=Strict).
    #[oai(status = 200)]
    Ok(Json<Session>, #[oai(header = "Set-Cookie")] String),
}

/// Logout answers.
#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// Logged out; the cookie is cleared.
    #[oai(status = 204)]
    Done(#[oai(header = "Set-Cookie")] String),
}

/// A new API token.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NewToken {
    /// A name to recognise it by (1..100 characters).
    pub name: Label,
    /// `admin`, `read:CATEGORY`, `write:CATEGORY` (`*` for every category); at least
    /// one.
    #[oai(validator(min_items = 1))]
    pub scopes: Vec<ScopeName>,
    /// Days until it expires, 1 to 3650 (none: never).
    #[oai(validator(minimum(value = "1"), maximum(value = "3650")))]
    pub expires_in_days: Option<u32>,
}

/// Token creation answers.
#[derive(ApiResponse)]
pub enum TokenCreated {
    /// Created; `token` is shown this once.
    #[oai(status = 201)]
    Created(Json<Token>, #[oai(header = "Location")] String),
}

/// The session token of the request, from the cookie or a `tmss_` Bearer header.
fn session_token(req: &poem::Request) -> Option<String> {
    if let Some(c) = req.cookie().get(auth::SESSION_COOKIE) {
        return Some(c.value_str().to_string());
    }
    let h = req.header("Authorization")?;
    let t = h.strip_prefix("Bearer ")?.trim();
    t.starts_with(access::SESSION_PREFIX).then(|| t.to_string())
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Log in: returns a session token and sets the session cookie.
    ///
    /// Repeated failures for one user or from one address are throttled (429 with
    /// Retry-After).
    #[oai(path = "/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        state: Data<&Arc<AppState>>,
        req: &poem::Request,
        body: Json<LoginRequest>,
    ) -> ApiResult<LoginResponse> {
        let addr = req
            .remote_addr()
            .as_socket_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let old = session_token(req);
        let crate::api::session::Opened {
            user,
            token,
            csrf,
            expires_at,
        } = crate::api::session::open(
            &state,
            &body.username,
            &body.password,
            &addr,
            old.as_deref(),
        )
        .await?;
        let cookie = crate::api::session::cookie(&token);
        Ok(LoginResponse::Ok(
            Json(Session {
                token,
                csrf_token: csrf,
                expires_at,
                user,
            }),
            cookie,
        ))
    }

    /// Log out: ends the session and clears the cookie.
    #[oai(path = "/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        state: Data<&Arc<AppState>>,
        req: &poem::Request,
        _auth: Auth,
    ) -> ApiResult<LogoutResponse> {
        if let Some(t) = session_token(req) {
            crate::api::session::close(&state, &t).await?;
        }
        Ok(LogoutResponse::Done(crate::api::session::cleared_cookie()))
    }

    /// The calling user.
    #[oai(path = "/auth/me", method = "get", operation_id = "whoami")]
    async fn me(&self, state: Data<&Arc<AppState>>, auth: Auth) -> ApiResult<Json<User>> {
        crate::api::users::fetch(&state, auth.principal().user_id)
            .await
            .map(Json)
    }

    /// Create an API token for the calling user; the secret is returned once.
    #[oai(
        path = "/tokens",
        method = "post",
        operation_id = "createToken",
        tag = "ApiTags::Tokens"
    )]
    async fn create_token(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<NewToken>,
    ) -> ApiResult<TokenCreated> {
        let scopes: Vec<String> = body.scopes.iter().map(|s| s.to_string()).collect();
        let created = crate::api::tokens::create(
            &state,
            auth.principal(),
            &body.name,
            &scopes,
            body.expires_in_days,
        )
        .await?;
        let location = format!("/api/v1/tokens/{}", created.id);
        Ok(TokenCreated::Created(Json(created), location))
    }

    /// The calling user's tokens (admins: everyone's).
    #[oai(
        path = "/tokens",
        method = "get",
        operation_id = "listTokens",
        tag = "ApiTags::Tokens"
    )]
    async fn list_tokens(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
    ) -> ApiResult<Json<Vec<Token>>> {
        let p = auth.principal();
        let everyone = p.require_admin().is_ok();
        Ok(Json(crate::api::tokens::list(&state, p, everyone).await?))
    }

    /// Revoke a token (your own; admins: any).
    #[oai(
        path = "/tokens/:id",
        method = "delete",
        operation_id = "revokeToken",
        tag = "ApiTags::Tokens"
    )]
    async fn revoke_token(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        crate::api::tokens::revoke(&state, auth.principal(), id.0).await?;
        Ok(NoContent::Done)
    }
}
