//! Categories and their versioned schemas, for both front-ends of the api: listing,
//! reading a version, the history of versions, creating, changing (optionally only
//! while the schema is still at the version the change was made against) and
//! deleting. The cache of current schemas is kept in step with every change made here.

use chrono::{DateTime, Utc};

use super::AppState;
use crate::db::categories::{self as store, Category};
use crate::model::access::Principal;
use crate::model::schema::Field;
use crate::web::error::ApiResult;

/// Every category at its current version (any signed-in user sees the schemas).
pub async fn list(state: &AppState) -> ApiResult<Vec<Category>> {
    Ok(store::list(&state.pool).await?)
}

/// `name` at `version` (None: the current one).
pub async fn get(state: &AppState, name: &str, version: Option<i32>) -> ApiResult<Category> {
    Ok(store::get(&state.pool, name, version).await?)
}

/// Version `version` of `name`'s schema, from the cache (None when there is no such
/// version, or the database cannot be asked).
pub async fn schema(
    state: &AppState,
    name: &str,
    version: i32,
) -> Option<std::sync::Arc<crate::model::schema::Schema>> {
    state.schemas.version(&state.pool, name, version).await.ok()
}

/// One stored version of a schema.
#[derive(Debug, Clone)]
pub struct Version {
    /// Its number.
    pub version: i32,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Its fields.
    pub fields: Vec<Field>,
}

/// Every version of `name`'s schema, oldest first.
pub async fn versions(state: &AppState, name: &str) -> ApiResult<Vec<Version>> {
    store::get(&state.pool, name, None).await?;
    Ok(store::versions(&state.pool, name)
        .await?
        .into_iter()
        .map(|(version, created_at, fields)| Version {
            version,
            created_at,
            fields,
        })
        .collect())
}

/// Creates `name` at version 1 with its record table (editor).
pub async fn create(
    state: &AppState,
    p: &Principal,
    name: &str,
    description: &str,
    fields: &[Field],
) -> ApiResult<Category> {
    p.require_editor()?;
    let c = store::create(&state.pool, state.storage, name, description, fields).await?;
    state.schemas.forget(&c.name);
    tracing::info!(category = %c.name, by = %p.username, "category created");
    Ok(c)
}

/// Stores version N+1 of `name` (editor): fields may be added, removed or
/// re-constrained; a field's type cannot change (409 naming the field). With
/// `expected`, only while the current version is still that one (409 otherwise).
pub async fn update(
    state: &AppState,
    p: &Principal,
    name: &str,
    description: Option<&str>,
    fields: &[Field],
    expected: Option<i32>,
) -> ApiResult<Category> {
    p.require_editor()?;
    state.schemas.forget(name);
    let c = store::update(&state.pool, name, description, fields, expected).await?;
    state.schemas.forget(&c.name);
    tracing::info!(category = %c.name, version = c.version, by = %p.username, "category schema changed");
    Ok(c)
}

/// Deletes `name` (editor); refused while it has records unless `force`. How many
/// records went with it.
pub async fn delete(state: &AppState, p: &Principal, name: &str, force: bool) -> ApiResult<u64> {
    p.require_editor()?;
    let n = store::delete(&state.pool, name, force).await;
    state.schemas.forget(name);
    let n = n?;
    tracing::warn!(category = %name, records = n, by = %p.username, "category deleted");
    Ok(n)
}
