//! Files, for both front-ends of the api: bytes in SeaweedFS ([`store`]), metadata in
//! PostgreSQL. Object keys are `files/<uuid>`, never derived from names users supply.
//! A file linked to a category is read and written with that category's access;
//! unlinked files are read by any user and written by editors.

pub mod store;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use sha2::Digest;
use uuid::Uuid;

use super::AppState;
use crate::model::access::Principal;
use crate::web::error::{ApiError, ApiResult};
pub use store::FileStore;
use store::{Counting, Hashing, parse_range};

/// A stored file's metadata.
#[derive(Debug, Clone, Object)]
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

impl FileRow {
    fn info(&self) -> FileInfo {
        FileInfo {
            id: self.id,
            name: self.name.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            content_type: self.content_type.clone(),
            owner: self.owner,
            target: self.target.clone(),
            category: self.category.clone(),
            created_at: self.created_at,
        }
    }
}

const COLUMNS: &str =
    "id, name, size, sha256, content_type, owner, target, category, created_at, object_key";

fn files(state: &AppState) -> ApiResult<&FileStore> {
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

/// Whether `p` may change files of `category` (None: unlinked ones).
pub fn may_write(p: &Principal, category: Option<&str>) -> bool {
    check(p, category, true).is_ok()
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

/// The files `p` may read, oldest first, of `target` and or `category`.
pub async fn list(
    state: &AppState,
    p: &Principal,
    target: Option<&str>,
    category: Option<&str>,
) -> ApiResult<Vec<FileInfo>> {
    let rows: Vec<FileRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM files WHERE ($1::text IS NULL OR target = $1) AND ($2::text IS NULL OR category = $2) ORDER BY created_at"
    )))
    .bind(target)
    .bind(category)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .iter()
        .filter(|r| check(p, r.category.as_deref(), false).is_ok())
        .map(FileRow::info)
        .collect())
}

/// One file's metadata.
pub async fn info(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<FileInfo> {
    let r = fetch(state, id).await?;
    check(p, r.category.as_deref(), false)?;
    Ok(r.info())
}

/// What is uploaded.
pub struct Upload<R> {
    /// The bytes.
    pub body: R,
    /// The name it was sent with (control characters are dropped, at most 255 kept).
    pub name: Option<String>,
    /// Its content type (default `application/octet-stream`).
    pub content_type: Option<String>,
    /// The target it belongs to.
    pub target: Option<String>,
    /// The category it belongs to.
    pub category: Option<String>,
}

/// Stores an upload: the bytes stream to SeaweedFS while their SHA-256 is computed,
/// refused past `api.max_upload_bytes` (413; nothing is kept).
pub async fn upload<R: tokio::io::AsyncRead + Unpin + Send>(
    state: &AppState,
    p: &Principal,
    up: Upload<R>,
) -> ApiResult<FileInfo> {
    if let Some(c) = &up.category {
        crate::db::categories::get(&state.pool, c, None).await?;
    }
    check(p, up.category.as_deref(), true)?;
    let fs = files(state)?;
    let bucket = fs.bucket().await?;
    let name = up
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("upload")
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect::<String>();
    let content_type = up
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let id = Uuid::new_v4();
    let key = format!("files/{id}");
    let mut reader = Hashing::new(up.body, state.cfg.max_upload_bytes);
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
    .bind(&up.target)
    .bind(&up.category)
    .bind(&key)
    .fetch_one(&state.pool)
    .await?;
    tracing::info!(file = %id, size = reader.size, by = %p.username, "file uploaded");
    Ok(row.info())
}

/// A download under way.
pub struct Download {
    /// The file.
    pub file: FileInfo,
    /// The bytes sent: the whole file, or the range asked for.
    pub range: Option<(u64, u64)>,
    /// How many bytes the body holds.
    pub len: u64,
    /// The bytes, streamed from SeaweedFS.
    pub body: poem::Body,
}

impl Download {
    /// `Content-Disposition` of the file, as an attachment under its name.
    pub fn disposition(&self) -> String {
        format!(
            "attachment; filename=\"{}\"",
            self.file.name.replace(['"', '\\', '\r', '\n'], "_")
        )
    }
}

/// The bytes of file `id` (the part `range`, a `Range` header, asks for); Err(size)
/// when the range lies outside the file. The body streams: a failure of SeaweedFS
/// mid-way resumes from the byte reached rather than truncate.
pub async fn download(
    state: &AppState,
    p: &Principal,
    id: Uuid,
    range: Option<&str>,
) -> ApiResult<Result<Download, u64>> {
    let r = fetch(state, id).await?;
    check(p, r.category.as_deref(), false)?;
    let size = r.size as u64;
    let Ok(span) = parse_range(range, size) else {
        return Ok(Err(size));
    };
    let fs = files(state)?;
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
            let mut w = Counting::new(&mut w);
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
    Ok(Ok(Download {
        file: r.info(),
        range: span,
        len: if size == 0 { 0 } else { end - start + 1 },
        body: poem::Body::from_async_read(rd),
    }))
}

/// Deletes file `id`, bytes and metadata.
pub async fn delete(state: &AppState, p: &Principal, id: Uuid) -> ApiResult<FileInfo> {
    let r = fetch(state, id).await?;
    check(p, r.category.as_deref(), true)?;
    let fs = files(state)?;
    fs.bucket()
        .await?
        .delete_object(&r.object_key)
        .await
        .map_err(|e| fs.error(e))?;
    sqlx::query("DELETE FROM files WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await?;
    tracing::info!(file = %id, by = %p.username, "file deleted");
    Ok(r.info())
}
