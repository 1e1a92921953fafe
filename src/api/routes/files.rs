//! `/api/v1/files`: upload (multipart, streamed to SeaweedFS while hashed), download
//! (streamed, with Range), list, metadata, delete.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::types::multipart::Upload;
use poem_openapi::{ApiResponse, Multipart, Object, OpenApi};
use sha2::Digest;
use uuid::Uuid;

use super::ApiTags;
use super::NoContent;
use crate::api::AppState;
use crate::api::auth::Auth;
use crate::api::files::{FileStore, Hashing, parse_range};
use crate::model::access::Principal;
use crate::web::error::{ApiError, ApiResult};
use crate::web::names::{CategoryName, Target};

/// File routes.
#[derive(Default)]
pub struct FilesApi;

/// An upload.
#[derive(Debug, Multipart)]
#[oai(deny_unknown_fields)]
pub struct UploadForm {
    /// The file (its name and content type are kept).
    pub file: Upload,
    /// The target it belongs to.
    pub target: Option<Target>,
    /// The category it belongs to (needs write access to it).
    pub category: Option<CategoryName>,
}

/// A stored file's metadata.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct FileInfo {
    /// Id.
    pub id: Uuid,
    /// Name as uploaded.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Content type.
    pub content_type: String,
    /// Uploader.
    pub owner: Option<Uuid>,
    /// Linked target.
    pub target: Option<String>,
    /// Linked category.
    pub category: Option<String>,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
}

/// A `files` row.
#[derive(sqlx::FromRow)]
struct FileRow {
    id: Uuid,
    name: String,
    size: i64,
    sha256: String,
    content_type: String,
    owner: Option<Uuid>,
    target: Option<String>,
    category: Option<String>,
    created_at: DateTime<Utc>,
    object_key: String,
}

fn info(r: &FileRow) -> FileInfo {
    FileInfo {
        id: r.id,
        name: r.name.clone(),
        size: r.size,
        sha256: r.sha256.clone(),
        content_type: r.content_type.clone(),
        owner: r.owner,
        target: r.target.clone(),
        category: r.category.clone(),
        created_at: r.created_at,
    }
}

const COLUMNS: &str =
    "id, name, size, sha256, content_type, owner, target, category, created_at, object_key";

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

fn store(state: &AppState) -> ApiResult<&FileStore> {
    state.files.as_ref().ok_or_else(|| {
        ApiError::unavailable("file storage is not configured (no S3 credentials in secrets/)")
    })
}

/// Who may read or change a file: its category's access, or any user for unlinked files.
fn check(p: &Principal, category: Option<&str>, write: bool) -> ApiResult<()> {
    match (category, write) {
        (Some(c), false) => Ok(p.require_read(c)?),
        (Some(c), true) => Ok(p.require_write(c)?),
        (None, false) => Ok(()),
        (None, true) => p.require_write("*").map_err(|_| {
            ApiError::forbidden("writing unlinked files needs the editor role (tokens: write:*)")
        }),
    }
}

async fn fetch(state: &AppState, id: Uuid) -> ApiResult<FileRow> {
    let row: Option<FileRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM files WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    row.ok_or_else(|| ApiError::not_found(format!("no file {id}")))
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
        let p = auth.principal();
        if let Some(c) = &form.category {
            crate::db::categories::get(&state.pool, c, None).await?;
        }
        check(p, form.category.as_deref(), true)?;
        let fs = store(&state)?;
        let bucket = fs.bucket().await?;
        let name = form
            .file
            .file_name()
            .unwrap_or("upload")
            .chars()
            .filter(|c| !c.is_control())
            .take(255)
            .collect::<String>();
        let content_type = form
            .file
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_string();
        let id = Uuid::new_v4();
        let key = format!("files/{id}");
        let mut reader = Hashing::new(form.file.into_async_read(), state.cfg.max_upload_bytes);
        if let Err(e) = bucket
            .put_object_stream_with_content_type(&mut reader, &key, &content_type)
            .await
        {
            let _ = bucket.delete_object(&key).await;
            if reader.size > state.cfg.max_upload_bytes {
                return Err(ApiError::too_large(format!(
                    "the file is larger than api.max_upload_bytes ({} bytes)",
                    state.cfg.max_upload_bytes
                )));
            }
            return Err(fs.error(e));
        }
        let sha = hex::encode(reader.hash.finalize());
        let row: FileRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO files (id, name, size, sha256, content_type, owner, target, category, object_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(&name)
        .bind(reader.size as i64)
        .bind(&sha)
        .bind(&content_type)
        .bind(p.user_id)
        .bind(&form.target)
        .bind(&form.category)
        .bind(&key)
        .fetch_one(&state.pool)
        .await?;
        tracing::info!(file = %id, size = reader.size, "file uploaded");
        Ok(Uploaded::Created(
            Json(info(&row)),
            format!("/api/v1/files/{id}"),
        ))
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
        let p = auth.principal();
        let rows: Vec<FileRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM files WHERE ($1::text IS NULL OR target = $1) AND ($2::text IS NULL OR category = $2) ORDER BY created_at"
        )))
        .bind(target.0)
        .bind(category.0)
        .fetch_all(&state.pool)
        .await?;
        Ok(Json(
            rows.iter()
                .filter(|r| check(p, r.category.as_deref(), false).is_ok())
                .map(info)
                .collect(),
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
        let r = fetch(&state, id.0).await?;
        check(auth.principal(), r.category.as_deref(), false)?;
        Ok(Json(info(&r)))
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
        let r = fetch(&state, id.0).await?;
        check(auth.principal(), r.category.as_deref(), false)?;
        let size = r.size as u64;
        let span = match parse_range(range.0.as_deref(), size) {
            Ok(s) => s,
            Err(_) => return Ok(Download::NotSatisfiable(format!("bytes */{size}"))),
        };
        let fs = store(&state)?;
        let bucket = fs.bucket().await?.clone();
        let (start, end) = span.unwrap_or((0, size.saturating_sub(1)));
        // Stream: the object is written into one end of a pipe while the body reads the other.
        let (mut w, rd) = tokio::io::duplex(64 * 1024);
        let key = r.object_key.clone();
        if size > 0 {
            // Fail early (503/404) rather than with a truncated 200.
            bucket.head_object(&key).await.map_err(|e| fs.error(e))?;
            tokio::spawn(async move {
                // The status line is already out: on a failure mid-way (SeaweedFS
                // restarting), resume from the byte reached rather than truncate.
                let mut w = crate::api::files::Counting::new(&mut w);
                let mut retry = crate::backoff::Backoff::new(
                    std::time::Duration::from_millis(300),
                    std::time::Duration::from_secs(5),
                )
                .retry();
                for attempt in 1..=5 {
                    let from = start + w.written();
                    if from > end {
                        break;
                    }
                    match bucket
                        .get_object_range_to_writer(&key, from, Some(end), &mut w)
                        .await
                    {
                        Ok(_) if start + w.written() > end => break,
                        Ok(_) => tracing::warn!(
                            "streaming {key}: short read at byte {}; resuming",
                            start + w.written()
                        ),
                        Err(e) if attempt < 5 => {
                            tracing::warn!(
                                "streaming {key} failed at byte {} ({e}); resuming",
                                start + w.written()
                            )
                        }
                        Err(e) => tracing::error!(
                            "streaming {key} failed at byte {}: {e}",
                            start + w.written()
                        ),
                    }
                    retry.wait().await;
                }
            });
        }
        let body = poem::Body::from_async_read(rd);
        let disposition = format!(
            "attachment; filename=\"{}\"",
            r.name.replace(['"', '\\'], "_")
        );
        let len = if size == 0 { 0 } else { end - start + 1 };
        Ok(match span {
            None => Download::Full(
                Binary(body),
                r.content_type.clone(),
                len,
                "bytes".into(),
                disposition,
            ),
            Some(_) => Download::Partial(
                Binary(body),
                r.content_type.clone(),
                len,
                format!("bytes {start}-{end}/{size}"),
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
        let r = fetch(&state, id.0).await?;
        check(auth.principal(), r.category.as_deref(), true)?;
        let fs = store(&state)?;
        fs.bucket()
            .await?
            .delete_object(&r.object_key)
            .await
            .map_err(|e| fs.error(e))?;
        sqlx::query("DELETE FROM files WHERE id = $1")
            .bind(id.0)
            .execute(&state.pool)
            .await?;
        Ok(NoContent::Done)
    }
}
