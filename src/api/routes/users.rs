//! `/api/v1/users`: admin-only CRUD, and changing one's own password.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::{self, Auth};
use crate::api::users::{User, UserRow, fetch, user_from};
use crate::model::access::Role;
use crate::web::error::{ApiError, ApiResult};
use crate::web::names::{Name, Password};

/// User routes.
#[derive(Default)]
pub struct UsersApi;

/// A new user.
#[derive(Debug, Object)]
pub struct NewUser {
    /// Name: lowercase letters, digits, `_`, `.`, `-`, starting with a letter or digit.
    pub username: Name,
    /// Password (at least 10 characters).
    #[oai(write_only)]
    pub password: Password,
    // The role.
    pub role: Role,
}

/// Changes to a user.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct UserChange {
    // New role.
    pub role: Option<Role>,
    /// New password (at least 10 characters).
    #[oai(write_only)]
    pub password: Option<Password>,
}

/// A password change.
#[derive(Debug, Object)]
pub struct PasswordChange {
    /// The current password.
    #[oai(write_only)]
    pub current_password: String,
    /// The new password (at least 10 characters).
    #[oai(write_only)]
    pub new_password: Password,
}

/// User creation answers.
#[derive(ApiResponse)]
pub enum UserCreated {
    /// Created.
    #[oai(status = 201)]
    Created(Json<User>, #[oai(header = "Location")] String),
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Users")]
impl UsersApi {
    /// Every user (admin).
    #[oai(path = "/users", method = "get", operation_id = "listUsers")]
    async fn list(&self, state: Data<&Arc<AppState>>, auth: Auth) -> ApiResult<Json<Vec<User>>> {
        auth.principal().require_admin()?;
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT id, username, role, created_at, updated_at FROM users ORDER BY username",
        )
        .fetch_all(&state.pool)
        .await?;
        Ok(Json(rows.into_iter().map(user_from).collect()))
    }

    /// Create a user (admin).
    #[oai(path = "/users", method = "post", operation_id = "createUser")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<NewUser>,
    ) -> ApiResult<UserCreated> {
        auth.principal().require_admin()?;
        let hash = auth::hash_password(body.password.to_string()).await?;
        let row: UserRow = sqlx::query_as(
            "INSERT INTO users (id, username, password_hash, role) VALUES ($1, $2, $3, $4)
             RETURNING id, username, role, created_at, updated_at",
        )
        .bind(Uuid::new_v4())
        .bind(&body.username)
        .bind(hash)
        .bind(body.role.as_str())
        .fetch_one(&state.pool)
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict(_) => {
                ApiError::conflict(format!("user `{}` already exists", body.username))
            }
            other => other,
        })?;
        let user = user_from(row);
        let location = format!("/api/v1/users/{}", user.id);
        Ok(UserCreated::Created(Json(user), location))
    }

    /// One user (admin).
    #[oai(path = "/users/:id", method = "get", operation_id = "getUser")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<User>> {
        auth.principal().require_admin()?;
        fetch(&state, id.0).await.map(Json)
    }

    /// Change a user's role or password (admin).
    #[oai(path = "/users/:id", method = "patch", operation_id = "updateUser")]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<UserChange>,
    ) -> ApiResult<Json<User>> {
        let p = auth.principal();
        p.require_admin()?;
        let before = fetch(&state, id.0).await?;
        if let Some(role) = body.role {
            if before.role == Role::Admin && role != Role::Admin {
                last_admin_guard(&state).await?;
            }
            sqlx::query("UPDATE users SET role = $2, updated_at = now() WHERE id = $1")
                .bind(id.0)
                .bind(role.as_str())
                .execute(&state.pool)
                .await?;
        }
        if let Some(pw) = &body.password {
            let hash = auth::hash_password(pw.to_string()).await?;
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
                .bind(id.0)
                .bind(hash)
                .execute(&state.pool)
                .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(id.0)
                .execute(&state.pool)
                .await?;
        }
        fetch(&state, id.0).await.map(Json)
    }

    /// Delete a user (admin; not the last admin).
    #[oai(path = "/users/:id", method = "delete", operation_id = "deleteUser")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        auth.principal().require_admin()?;
        let u = fetch(&state, id.0).await?;
        if u.role == Role::Admin {
            last_admin_guard(&state).await?;
        }
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.0)
            .execute(&state.pool)
            .await?;
        Ok(NoContent::Done)
    }

    /// Change your own password (ends your other sessions).
    #[oai(
        path = "/users/me/password",
        method = "put",
        operation_id = "changeOwnPassword"
    )]
    async fn change_password(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<PasswordChange>,
    ) -> ApiResult<NoContent> {
        let p = auth.principal();
        if p.scopes.is_some() {
            return Err(ApiError::forbidden(
                "log in with your password to change it",
            ));
        }
        let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(p.user_id)
            .fetch_one(&state.pool)
            .await?;
        if !auth::verify_password(body.current_password.clone(), hash).await {
            return Err(ApiError::forbidden("the current password is wrong"));
        }
        let hash = auth::hash_password(body.new_password.to_string()).await?;
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
        Ok(NoContent::Done)
    }
}

/// Refuses to remove or demote the last admin.
async fn last_admin_guard(state: &AppState) -> ApiResult<()> {
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin'")
        .fetch_one(&state.pool)
        .await?;
    if admins <= 1 {
        return Err(ApiError::conflict(
            "this is the last admin; make another user admin first",
        ));
    }
    Ok(())
}
