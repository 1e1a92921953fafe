//! `/api/v1/files`: upload (multipart, streamed to SeaweedFS while hashed), download
//! (streamed, with Range), list, metadata, delete.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::types::multipart::Upload as Part;
use poem_openapi::{ApiResponse, Multipart, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::api::files::{self as domain, FileInfo, Upload};
use crate::web::error::ApiResult;
use crate::web::names::{CategoryName, Target};

/// File routes.
#[derive(Default)]
pub struct FilesApi;

/// An upload.
#[derive(Debug, Multipart)]
#[oai(deny_unknown_fields)]
pub struct UploadForm {
    /// The file (its name and content type are kept).
    pub file: Part,
    /// The target it belongs to.
    pub target: Option<Target>,
    /// The category it belongs to (needs write access to it).
    pub category: Option<CategoryName>,
}

/// Upload answers.
#[derive(ApiResponse)]
pub enum Uploaded {
    /// Stored.
    #[oai(status = 201)]
    Created(Json<FileInfo>, #[oai(header = "Location")] String),
}

/// Download answers (streamed).
#[derive(ApiResponse)]
pub enum Download {
    /// The whole file.
    #[oai(status = 200)]
    Full(
        Binary<poem::Body>,
        #[oai(header = "Content-Type")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Accept-Ranges")] String,
        #[oai(header = "Content-Disposition")] String,
    ),
    /// The requested byte range.
    #[oai(status = 206)]
    Partial(
        Binary<poem::Body>,
        #[oai(header = "Content-Type")] String,
        #[oai(header = "Content-Length")] u64,
        #[oai(header = "Content-Range")] String,
        #[oai(header = "Content-Disposition")] String,
    ),
    /// The range lies outside the file.
    #[oai(status = 416)]
    NotSatisfiable(#[oai(header = "Content-Range")] String),
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Files")]
impl FilesApi {
    /// Upload a file (multipart: `file`, optional `target` and `category`). The bytes
    /// stream to SeaweedFS while their SHA-256 is computed; the size limit is
    /// `api.max_upload_bytes` (413 above it).
    #[oai(path = "/files", method = "post", operation_id = "uploadFile")]
    async fn upload(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        form: UploadForm,
    ) -> ApiResult<Uploaded> {
        let up = Upload {
            name: form.file.file_name().map(str::to_string),
            content_type: form.file.content_type().map(str::to_string),
            target: form.target.map(|t| t.into_string()),
            category: form.category.map(|c| c.into_string()),
            body: form.file.into_async_read(),
        };
        let file = domain::upload(&state, auth.principal(), up).await?;
        let id = file.id;
        Ok(Uploaded::Created(Json(file), format!("/api/v1/files/{id}")))
    }

    /// List files, optionally by target or category.
    #[oai(path = "/files", method = "get", operation_id = "listFiles")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        target: Query<Option<Target>>,
        category: Query<Option<CategoryName>>,
    ) -> ApiResult<Json<Vec<FileInfo>>> {
        Ok(Json(
            domain::list(
                &state,
                auth.principal(),
                target.0.as_deref(),
                category.0.as_deref(),
            )
            .await?,
        ))
    }

    /// A file's metadata.
    #[oai(path = "/files/:id/info", method = "get", operation_id = "getFileInfo")]
    async fn meta(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<FileInfo>> {
        Ok(Json(domain::info(&state, auth.principal(), id.0).await?))
    }

    /// Download a file (streamed; `Range: bytes=…` gives 206 with that part).
    #[oai(path = "/files/:id", method = "get", operation_id = "downloadFile")]
    async fn download(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
        range: Header<Option<String>>,
    ) -> ApiResult<Download> {
        let d = match domain::download(&state, auth.principal(), id.0, range.0.as_deref()).await? {
            Ok(d) => d,
            Err(size) => return Ok(Download::NotSatisfiable(format!("bytes */{size}"))),
        };
        let disposition = d.disposition();
        let content_type = d.file.content_type.clone();
        Ok(match d.range {
            None => Download::Full(
                Binary(d.body),
                content_type,
                d.len,
                "bytes".into(),
                disposition,
            ),
            Some((start, end)) => Download::Partial(
                Binary(d.body),
                content_type,
                d.len,
                format!("bytes {start}-{end}/{}", d.file.size),
                disposition,
            ),
        })
    }

    /// Delete a file (bytes and metadata).
    #[oai(path = "/files/:id", method = "delete", operation_id = "deleteFile")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<NoContent> {
        domain::delete(&state, auth.principal(), id.0).await?;
        Ok(NoContent::Done)
    }
}
