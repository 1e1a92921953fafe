//! `/api/v1/auth/*` and `/api/v1/tokens`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::users::User;
use super::{ApiTags, NoContent};
use crate::api::AppState;
use crate::api::auth::{self, Auth};
use crate::model::access::{self, Role, Scope};
use crate::web::error::{ApiError, ApiResult};
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

/// An API token (the secret is shown only when created).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Token {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The secret: only in the answer to its creation.
    #[oai(skip_serializing_if_is_none)]
    pub token: Option<String>,
}

/// Token creation answers.
#[derive(ApiResponse)]
pub enum TokenCreated {
    /// Created; `token` is shown this once.
    #[oai(status = 201)]
    Created(Json<Token>, #[oai(header = "Location")] String),
}

/// An `api_tokens` row (no hash).
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn token_from(r: TokenRow) -> Token {
    Token {
        id: r.id,
        name: r.name,
        scopes: r.scopes,
        created_at: r.created_at,
        expires_at: r.expires_at,
        last_used_at: r.last_used_at,
        revoked_at: r.revoked_at,
        token: None,
    }
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
        super::users::fetch(&state, auth.principal().user_id)
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
        let p = auth.principal();
        for s in &body.scopes {
            let scope = Scope::parse(s).map_err(ApiError::bad_request)?;
            // A token narrows its owner; a scope the owner's role cannot use would
            // look like a grant and be none.
            let holds = match &scope {
                Scope::Admin => p.role == Role::Admin,
                Scope::Write(_) => p.role != Role::Viewer,
                Scope::Read(_) => true,
            };
            if !holds {
                return Err(ApiError::forbidden(format!(
                    "a {} cannot hold the scope `{s}`",
                    p.role.as_str()
                )));
            }
        }
        if p.scopes.is_some() {
            return Err(ApiError::forbidden(
                "tokens cannot create tokens; log in with a password",
            ));
        }
        let token = auth::new_token(access::TOKEN_PREFIX);
        let expires = body
            .expires_in_days
            .map(|d| Utc::now() + chrono::Duration::days(d.into()));
        let row: TokenRow = sqlx::query_as(
            "INSERT INTO api_tokens (id, user_id, name, token_hash, scopes, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING id, name, scopes, created_at, expires_at, last_used_at, revoked_at",
        )
        .bind(Uuid::new_v4())
        .bind(p.user_id)
        .bind(&body.name)
        .bind(access::token_hash(&token))
        .bind(&body.scopes)
        .bind(expires)
        .fetch_one(&state.pool)
        .await?;
        let created = Token {
            token: Some(token),
            ..token_from(row)
        };
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
        let all = p.require_admin().is_ok();
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, scopes, created_at, expires_at, last_used_at, revoked_at FROM api_tokens
             WHERE $1 OR user_id = $2 ORDER BY created_at",
        )
        .bind(all)
        .bind(p.user_id)
        .fetch_all(&state.pool)
        .await?;
        Ok(Json(rows.into_iter().map(token_from).collect()))
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
        let p = auth.principal();
        let all = p.require_admin().is_ok();
        let n = sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND ($2 OR user_id = $3)")
            .bind(id.0)
            .bind(all)
            .bind(p.user_id)
            .execute(&state.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(ApiError::not_found(format!("no token {} of yours", id.0)));
        }
        Ok(NoContent::Done)
    }
}
