//! Route definitions, one module per resource; every operation has an operationId, tags
//! and documented error responses.

mod system;

use poem_openapi::Tags;

/// Tags grouping the operations in the spec and Swagger UI.
#[derive(Tags)]
pub enum ApiTags {
    /// Health, readiness and supervisor control.
    System,
}

/// Every route group (a tuple once there are several).
pub type Api = system::SystemApi;

/// The route groups as one value for the OpenAPI service.
pub fn api() -> Api {
    system::SystemApi
}
