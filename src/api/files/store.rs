//! File bytes in SeaweedFS through its S3 gateway (rust-s3, path style, loopback
//! HTTP): the bucket, a reader that hashes and counts what it uploads, a writer that
//! counts what it downloads, and `Range` headers. When SeaweedFS is down, file
//! operations answer 503 and the rest of the API is unaffected.

use std::pin::Pin;
use std::task::{Context, Poll};

use s3::Bucket;
use s3::creds::Credentials;
use s3::region::Region;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::config::Config;
use crate::web::error::ApiError;

/// The bucket holding every file.
pub const BUCKET: &str = "tmidb-files";

/// The file store: a bucket handle, created on first use.
pub struct FileStore {
    bucket: Box<Bucket>,
    endpoint: String,
    /// "SeaweedFS" for this home's own unit, "S3" for `[s3] endpoint` elsewhere.
    service: &'static str,
    ready: tokio::sync::Mutex<bool>,
}

impl FileStore {
    /// A store on the S3 endpoint of `cfg` (this home's SeaweedFS unless `[s3] endpoint`
    /// says otherwise), if its S3 credentials exist.
    pub fn new(cfg: &Config) -> Option<FileStore> {
        let read = |n: &str| {
            std::fs::read_to_string(cfg.secrets_dir.join(n))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let (ak, sk) = (read("s3.access_key")?, read("s3.secret_key")?);
        let endpoint = cfg.endpoints.s3.clone();
        let own = format!("http://127.0.0.1:{}", cfg.ports["seaweedfs_s3"]);
        let service = if endpoint == own { "SeaweedFS" } else { "S3" };
        let region = Region::Custom {
            region: "us-east-1".into(),
            endpoint: endpoint.clone(),
        };
        let creds = Credentials::new(Some(&ak), Some(&sk), None, None, None).ok()?;
        let bucket = Bucket::new(BUCKET, region, creds).ok()?.with_path_style();
        Some(FileStore {
            bucket,
            endpoint,
            service,
            ready: tokio::sync::Mutex::new(false),
        })
    }

    fn down(&self, e: impl std::fmt::Display) -> ApiError {
        ApiError::unavailable(format!(
            "file storage ({} at {}) is not available: {e}",
            self.service, self.endpoint
        ))
    }

    /// The bucket, created if missing (checked once per process while it succeeds).
    pub async fn bucket(&self) -> Result<&Bucket, ApiError> {
        let mut ready = self.ready.lock().await;
        if !*ready {
            let exists = self.bucket.exists().await.map_err(|e| self.down(e))?;
            if !exists {
                let b = &self.bucket;
                Bucket::create_with_path_style(
                    BUCKET,
                    b.region.clone(),
                    b.credentials().await.map_err(|e| self.down(e))?,
                    s3::BucketConfiguration::default(),
                )
                .await
                .map_err(|e| self.down(e))?;
                tracing::info!("created S3 bucket {BUCKET}");
            }
            *ready = true;
        }
        Ok(&self.bucket)
    }

    /// Whether SeaweedFS answers right now (readiness).
    pub async fn check(&self) -> Result<(), ApiError> {
        self.bucket
            .exists()
            .await
            .map(|_| ())
            .map_err(|e| self.down(e))
    }

    /// Maps a storage error: a missing object is 404, anything else 503.
    pub fn error(&self, e: s3::error::S3Error) -> ApiError {
        match &e {
            s3::error::S3Error::HttpFailWithBody(404, _) => {
                ApiError::not_found("the file's bytes are missing from storage")
            }
            _ => self.down(e),
        }
    }
}

/// Reads through, counting bytes and hashing them; fails once more than `limit` bytes
/// pass.
pub struct Hashing<R> {
    inner: R,
    /// SHA-256 so far.
    pub hash: Sha256,
    /// Bytes so far.
    pub size: u64,
    limit: u64,
}

impl<R> Hashing<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, limit: u64) -> Hashing<R> {
        Hashing {
            inner,
            hash: Sha256::new(),
            size: 0,
            limit,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = buf.filled()[before..].to_vec();
            self.size += new.len() as u64;
            if self.size > self.limit {
                return Poll::Ready(Err(std::io::Error::other(
                    "file larger than the upload limit",
                )));
            }
            self.hash.update(&new);
        }
        r
    }
}

/// An async writer that counts what went through (to resume a download).
pub struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W> Counting<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Counting<W> {
        Counting { inner, written: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written += *n as u64;
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A range that lies outside the file (416).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A parsed `Range: bytes=…` request against a file of `size` bytes:
/// `Ok(None)` = whole file, `Ok(Some((start, end)))` inclusive.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Several ranges: serve the whole file (allowed by RFC 9110).
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 || size == 0 {
                return Err(Unsatisfiable);
            }
            (size.saturating_sub(n), size - 1)
        }
        (s, "") => (
            s.parse().map_err(|_| Unsatisfiable)?,
            size.saturating_sub(1),
        ),
        (s, e) => {
            let (s, e): (u64, u64) = (
                s.parse().map_err(|_| Unsatisfiable)?,
                e.parse().map_err(|_| Unsatisfiable)?,
            );
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if start >= size || start > end {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::{Unsatisfiable, parse_range};

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
    }
}
