//! Sessions, for both front-ends of the api (REST login and the web console): opening
//! one for a user name and password (argon2id, throttled per user and per address,
//! the same time spent for unknown names), closing one, and the cookie that carries
//! it (HttpOnly, SameSite=Strict).
//!
//! A login always makes a new session id and ends the one the client presented, if
//! any, so an id planted before login never becomes an authenticated one.

use chrono::{DateTime, Utc};

use super::AppState;
use super::auth::{SESSION_COOKIE, SESSION_TTL, dummy_hash, new_token, verify_password};
use super::users::{User, UserRow, user_from};
use crate::model::access::{SESSION_PREFIX, token_hash};
use crate::web::error::{ApiError, ApiResult};

/// A session just opened.
#[derive(Debug)]
pub struct Opened {
    /// Whose.
    pub user: User,
    /// The session token (the cookie's value, or a `tmss_` Bearer token).
    pub token: String,
    /// The token cookie-authenticated writes must carry (header or form field).
    pub csrf: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// A user row with its password hash.
#[derive(sqlx::FromRow)]
struct LoginRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

/// Opens a session for `username` / `password` from client address `addr`; `previous`
/// is the session token the client presented, ended on success. Wrong credentials
/// are 401 and count against the user and the address (429 with the wait once either
/// is locked).
pub async fn open(
    state: &AppState,
    username: &str,
    password: &str,
    addr: &str,
    previous: Option<&str>,
) -> ApiResult<Opened> {
    let user_key = [format!("user:{username}")];
    let addr_key = [format!("addr:{addr}")];
    let wait = state
        .throttle_user
        .locked(&user_key)
        .max(state.throttle_addr.locked(&addr_key));
    if let Some(wait) = wait {
        return Err(ApiError::too_many(
            format!("too many failed logins; try again in {wait} s"),
            wait,
        ));
    }
    let row: Option<LoginRow> = sqlx::query_as(
        "SELECT id, username, role, created_at, updated_at, password_hash FROM users WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(&state.pool)
    .await?;
    let ok = match &row {
        Some(r) => verify_password(password.to_string(), r.password_hash.clone()).await,
        None => {
            // Spend the same time as a real check, so timing does not reveal names.
            let _ = verify_password(password.to_string(), dummy_hash().await).await;
            false
        }
    };
    let Some(r) = row.filter(|_| ok) else {
        state.throttle_user.fail(&user_key);
        state.throttle_addr.fail(&addr_key);
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    state.throttle_user.succeed(&user_key[0]);
    issue(state, user_from(r.user), previous).await
}

/// Opens a new session for `user`, who has proved who they are (a login, or a
/// change of their own account in the console, after which their sessions were
/// ended); `previous`, the session the client presented, is ended.
pub async fn issue(state: &AppState, user: User, previous: Option<&str>) -> ApiResult<Opened> {
    let token = new_token(SESSION_PREFIX);
    let csrf = crate::setup::random_token(32);
    let expires_at = Utc::now() + SESSION_TTL;
    let mut tx = state.pool.begin().await?;
    if let Some(old) = previous {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash(old))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash(&token))
    .bind(user.id)
    .bind(&csrf)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Opened {
        user,
        token,
        csrf,
        expires_at,
    })
}

/// The user of the live session `token` and its CSRF token (401 when there is no
/// such session).
pub async fn lookup(
    state: &AppState,
    token: &str,
) -> ApiResult<(crate::model::access::Principal, String)> {
    crate::web::bearer::session(&state.pool, token).await
}

/// Ends the session of `token` (nothing if there is none).
pub async fn close(state: &AppState, token: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash(token))
        .execute(&state.pool)
        .await?;
    Ok(())
}

/// One of a user's live sessions.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionInfo {
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// Whether it is the one asking.
    pub current: bool,
}

/// The live sessions of `user`, newest first; `current` is the asking session's hash.
pub async fn list(
    state: &AppState,
    user: uuid::Uuid,
    current: Option<&[u8]>,
) -> ApiResult<Vec<SessionInfo>> {
    Ok(sqlx::query_as(
        "SELECT created_at, expires_at, token_hash = $2 AS current FROM sessions
         WHERE user_id = $1 AND expires_at > now() ORDER BY created_at DESC",
    )
    .bind(user)
    .bind(current)
    .fetch_all(&state.pool)
    .await?)
}

/// Ends every session of `user` ("log out everywhere"); how many there were.
pub async fn close_all(state: &AppState, user: uuid::Uuid) -> ApiResult<u64> {
    Ok(sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user)
        .execute(&state.pool)
        .await?
        .rows_affected())
}

/// The `Set-Cookie` value carrying session `token`.
pub fn cookie(token: &str) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}
