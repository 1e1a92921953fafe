//! Route definitions, one module per resource; every operation has an operationId, tags
//! and documented error responses.

pub mod alerts;
pub mod auth;
pub mod categories;
pub mod dead_letters;
pub mod files;
pub mod records;
pub mod sources;
mod system;
pub mod users;

use poem_openapi::{ApiResponse, Tags};

/// No content.
#[derive(ApiResponse)]
pub enum NoContent {
    /// Done.
    #[oai(status = 204)]
    Done,
}

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
    /// Ingestion sources and their transformations.
    Sources,
    /// Records that failed ingestion: fix and replay.
    DeadLetters,
    /// Alert rules and notifications.
    Alerts,
}

/// Every route group.
pub type Api = (
    system::SystemApi,
    auth::AuthApi,
    users::UsersApi,
    categories::CategoriesApi,
    records::RecordsApi,
    files::FilesApi,
    sources::SourcesApi,
    dead_letters::DeadLettersApi,
    alerts::AlertsApi,
);

/// The route groups as one value for the OpenAPI service.
pub fn api() -> Api {
    Default::default()
}
