//! What taking records answers, the same for the api's direct insert and the
//! data-manager's push.

use poem_openapi::Object;

use crate::web::error::Issue;

/// What an insert did.
#[derive(Debug, Object)]
pub struct InsertResult {
    /// Records accepted: stored, or already stored (a record with the same target,
    /// time and values is kept once, however often it is sent).
    pub accepted: u64,
    /// Records rejected (see `errors`).
    pub rejected: u64,
    /// Schema version the records were validated against.
    pub schema_version: i32,
    /// Why each rejected record was rejected, by its index in the request.
    pub errors: Vec<Issue>,
}
