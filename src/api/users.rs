//! Users, for both front-ends of the api (never with their password hash): listing,
//! creating, changing a role or password, deleting (never the last admin), and
//! changing one's own password.
//!
//! A change of role or password ends the user's sessions: whoever held one logs in
//! again and gets a new session id (the console then opens a new session for an
//! admin who changed their own account, [`super::session::issue`]).

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

use super::AppState;
use super::auth::{hash_password, verify_password};
use crate::model::access::{Principal, Role};
use crate::web::error::{ApiError, ApiResult};

/// A user.
#[derive(Debug, Clone, Object)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Name: lowercase letters, digits, `_`, `.`, `-`.
    pub username: String,
    // The role (a plain $ref in the spec: generators reject allOf around enums).
    pub role: Role,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A `users` row (no password hash).
#[derive(sqlx::FromRow)]
pub struct UserRow {
    id: Uuid,
    username: String,
    role: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The user a row describes.
pub fn user_from(r: UserRow) -> User {
    User {
        id: r.id,
        username: r.username,
        role: Role::parse(&r.role),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// One user by id.
pub async fn fetch(state: &AppState, id: Uuid) -> ApiResult<User> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT id, username, role, created_at, updated_at FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    row.map(user_from)
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}

/// Every user, by name (admin).
pub async fn list(state: &AppState, p: &Principal) -> ApiResult<Vec<User>> {
    p.require_admin()?;
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT id, username, role, created_at, updated_at FROM users ORDER BY username",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(rows.into_iter().map(user_from).collect())
}

/// Creates `username` with `password` and `role` (admin); the password has passed
/// its rule ([`crate::web::names::Password`]).
pub async fn create(
    state: &AppState,
    p: &Principal,
    username: &str,
    password: &str,
    role: Role,
) -> ApiResult<User> {
    p.require_admin()?;
    let hash = hash_password(password.to_string()).await?;
    let row: UserRow = sqlx::query_as(
        "INSERT INTO users (id, username, password_hash, role) VALUES ($1, $2, $3, $4)
         RETURNING id, username, role, created_at, updated_at",
    )
    .bind(Uuid::new_v4())
    .bind(username)
    .bind(hash)
    .bind(role.as_str())
    .fetch_one(&state.pool)
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict(_) => ApiError::conflict(format!("user `{username}` already exists")),
        other => other,
    })?;
    tracing::info!(user = %username, role = role.as_str(), by = %p.username, "user created");
    Ok(user_from(row))
}

/// A change to a user.
#[derive(Debug, Default)]
pub struct Change<'a> {
    /// The new role.
    pub role: Option<Role>,
    /// The new password (it has passed its rule).
    pub password: Option<&'a str>,
    /// Change only while the user is as last seen (`updated_at`): a form opened
    /// before another change is refused, not applied over it.
    pub expected: Option<DateTime<Utc>>,
}

/// Changes the user `id` (admin): its role (never demoting the last admin) and or
/// its password. A role or password change ends the user's sessions.
pub async fn update(
    state: &AppState,
    p: &Principal,
    id: Uuid,
    change: Change<'_>,
) -> ApiResult<User> {
    p.require_admin()?;
    let hash = match change.password {
        Some(pw) => Some(hash_password(pw.to_string()).await?),
        None => None,
    };
    let mut tx = state.pool.begin().await?;
    let before = locked(&mut tx, id).await?;
    if let Some(seen) = change.expected
        && seen != before.updated_at
    {
        return Err(ApiError::conflict(format!(
            "user `{}` was changed by someone else since this form was opened; reload it and make the change again",
            before.username
        )));
    }
    let role_changes = change.role.is_some_and(|r| r != before.role);
    if let Some(role) = change.role.filter(|_| role_changes) {
        if before.role == Role::Admin {
            last_admin_guard(&mut tx).await?;
        }
        sqlx::query("UPDATE users SET role = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(hash) = &hash {
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
    }
    if role_changes || hash.is_some() {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tracing::info!(user = %before.username, role_changed = role_changes, password_changed = hash.is_some(), by = %p.username, "user changed; their sessions ended");
    }
    tx.commit().await?;
    fetch(state, id).await
}

/// Deletes the user `id` (admin; never the last admin).
pub async fn delete(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<User> {
    p.require_admin()?;
    let mut tx = state.pool.begin().await?;
    let u = locked(&mut tx, id).await?;
    if u.role == Role::Admin {
        last_admin_guard(&mut tx).await?;
    }
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::warn!(user = %u.username, by = %p.username, "user deleted");
    Ok(u)
}

/// Changes the caller's own password after checking the current one; ends the
/// caller's other sessions (the one asking stays). Tokens cannot do this.
pub async fn change_own_password(
    state: &AppState,
    p: &Principal,
    current: &str,
    new: &str,
) -> ApiResult<()> {
    if p.scopes.is_some() {
        return Err(ApiError::forbidden(
            "log in with your password to change it",
        ));
    }
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(p.user_id)
        .fetch_one(&state.pool)
        .await?;
    if !verify_password(current.to_string(), hash).await {
        return Err(ApiError::forbidden("the current password is wrong"));
    }
    let hash = hash_password(new.to_string()).await?;
    let mut tx = state.pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(p.user_id)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    // Whoever else held a session of this user (a stolen one, another browser)
    // must log in again with the new password.
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash IS DISTINCT FROM $2")
        .bind(p.user_id)
        .bind(&p.session_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(user = %p.username, "password changed; other sessions ended");
    Ok(())
}

/// The user `id`, its row locked until the transaction ends.
async fn locked(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: Uuid) -> ApiResult<User> {
    let row: Option<UserRow> = sqlx::query_as(
        "SELECT id, username, role, created_at, updated_at FROM users WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(user_from)
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))
}

/// Refuses to remove or demote the last admin (the admins' rows are locked until the
/// transaction ends, so two admins demoting each other cannot both succeed).
async fn last_admin_guard(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> ApiResult<()> {
    let admins: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin' FOR UPDATE")
            .fetch_all(&mut **tx)
            .await?;
    if admins.len() <= 1 {
        return Err(ApiError::conflict(
            "this is the last admin; make another user admin first",
        ));
    }
    Ok(())
}
