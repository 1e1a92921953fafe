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
use crate::api::auth::Auth;
use crate::api::users::{self as domain, Change, User, fetch};
use crate::model::access::Role;
use crate::web::error::ApiResult;
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
        Ok(Json(domain::list(&state, auth.principal()).await?))
    }

    /// Create a user (admin).
    #[oai(path = "/users", method = "post", operation_id = "createUser")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<NewUser>,
    ) -> ApiResult<UserCreated> {
        let user = domain::create(
            &state,
            auth.principal(),
            &body.username,
            &body.password,
            body.role,
        )
        .await?;
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
    ///
    /// Either change ends the user's sessions: they log in again.
    #[oai(path = "/users/:id", method = "patch", operation_id = "updateUser")]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
        body: Json<UserChange>,
    ) -> ApiResult<Json<User>> {
        let change = Change {
            role: body.role,
            password: body.password.as_deref(),
            expected: None,
        };
        Ok(Json(
            domain::update(&state, auth.principal(), id.0, change).await?,
        ))
    }

    /// Delete a user (admin; not the last admin).
    #[oai(path = "/users/:id", method = "delete", operation_id = "deleteUser")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        domain::delete(&state, auth.principal(), id.0).await?;
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
        domain::change_own_password(
            &state,
            auth.principal(),
            &body.current_password,
            &body.new_password,
        )
        .await?;
        Ok(NoContent::Done)
    }
}
