//! Route definitions, one module per resource; every operation has an operationId, tags
//! and documented error responses.

pub mod auth;
pub mod categories;
pub mod files;
mod system;
pub mod users;

use poem_openapi::Tags;

/// Tags grouping the operations in the spec and Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Health, readiness and supervisor control.
    System,
    /// Login, logout, the calling user.
    Auth,
    /// API tokens.
    Tokens,
    /// Users (admin).
    Users,
    /// Category schemas (versioned).
    Categories,
    /// Records of a category.
    Records,
    /// Files (bytes in SeaweedFS).
    Files,
}

/// Every route group.
pub type Api = (
    system::SystemApi,
    auth::AuthApi,
    users::UsersApi,
    categories::CategoriesApi,
    files::FilesApi,
);

/// The route groups as one value for the OpenAPI service.
pub fn api() -> Api {
    (
        system::SystemApi,
        auth::AuthApi,
        users::UsersApi,
        categories::CategoriesApi,
        files::FilesApi,
    )
}
