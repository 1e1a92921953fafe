//! Users as both front-ends of the api show them (never with their password hash).

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use uuid::Uuid;

use super::AppState;
use crate::model::access::Role;
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
