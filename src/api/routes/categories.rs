//! `/api/v1/categories`: categories and their versioned schemas (the records of a
//! category are [`super::records`]).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::api::categories as domain;
use crate::db::categories::Category;
use crate::model::schema::Field;
use crate::web::error::ApiResult;
use crate::web::names::CategoryName;

/// Category routes.
#[derive(Default)]
pub struct CategoriesApi;

/// A new category.
#[derive(Debug, Object)]
pub struct NewCategory {
    /// Name: a lowercase letter, then lowercase letters, digits or `_` (at most 48).
    pub name: CategoryName,
    /// What its records are.
    #[oai(default)]
    pub description: String,
    /// The fields of version 1 (1 to 200).
    #[oai(validator(min_items = 1, max_items = 200))]
    pub fields: Vec<Field>,
}

/// A new version of a category's schema.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CategoryChange {
    /// New description (unchanged when absent).
    pub description: Option<String>,
    /// The complete field list of the new version (1 to 200).
    #[oai(validator(min_items = 1, max_items = 200))]
    pub fields: Vec<Field>,
}

/// Category creation answers.
#[derive(ApiResponse)]
pub enum CategoryCreated {
    /// Created at version 1.
    #[oai(status = 201)]
    Created(Json<Category>, #[oai(header = "Location")] String),
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Categories")]
impl CategoriesApi {
    /// Create a category (editor): its schema version 1 and its record table.
    #[oai(path = "/categories", method = "post", operation_id = "createCategory")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        body: Json<NewCategory>,
    ) -> ApiResult<CategoryCreated> {
        let c = domain::create(
            &state,
            auth.principal(),
            &body.name,
            &body.description,
            &body.fields,
        )
        .await?;
        Ok(CategoryCreated::Created(
            Json(c.clone()),
            format!("/api/v1/categories/{}", c.name),
        ))
    }

    /// Every category at its current version.
    #[oai(path = "/categories", method = "get", operation_id = "listCategories")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        _auth: Auth,
    ) -> ApiResult<Json<Vec<Category>>> {
        Ok(Json(domain::list(&state).await?))
    }

    /// One category, at its current version or the `version` asked for.
    #[oai(
        path = "/categories/:name",
        method = "get",
        operation_id = "getCategory"
    )]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        _auth: Auth,
        name: Path<CategoryName>,
        version: Query<Option<i32>>,
    ) -> ApiResult<Json<Category>> {
        Ok(Json(domain::get(&state, &name.0, version.0).await?))
    }

    /// Change a category's schema (editor): stores version N+1. Fields may be added,
    /// removed or re-constrained; a field's type cannot change (409 names the field).
    #[oai(
        path = "/categories/:name",
        method = "put",
        operation_id = "updateCategory"
    )]
    async fn update(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        body: Json<CategoryChange>,
    ) -> ApiResult<Json<Category>> {
        let c = domain::update(
            &state,
            auth.principal(),
            &name.0,
            body.description.as_deref(),
            &body.fields,
            None,
        )
        .await?;
        Ok(Json(c))
    }

    /// Delete a category (editor); refused while it has records unless `force=true`.
    #[oai(
        path = "/categories/:name",
        method = "delete",
        operation_id = "deleteCategory"
    )]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        name: Path<CategoryName>,
        force: Query<Option<bool>>,
    ) -> ApiResult<NoContent> {
        domain::delete(&state, auth.principal(), &name.0, force.0.unwrap_or(false)).await?;
        Ok(NoContent::Done)
    }
}
