//! Files: the list (by category and target), uploads (streamed to SeaweedFS as they
//! arrive; the page's script shows progress), downloads, and deletes after a
//! confirmation.

use std::sync::Arc;

use poem::web::{Data, Multipart, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;

use super::frame::Frame;
use super::system::Confirm;
use super::{Fields, or_page, page, see_other, urlencoded};
use crate::api::files::{self as domain, FileInfo, Upload};
use crate::api::{AppState, categories};
use crate::web::error::ApiError;

#[derive(TemplateSimple)]
#[template(path = "files.stpl")]
struct Files<'a> {
    frame: &'a Frame,
    files: Vec<FileInfo>,
    category: &'a str,
    target: &'a str,
    categories: Vec<String>,
    may_upload: bool,
    done: Option<&'a str>,
    error: Option<&'a str>,
    script: String,
}

#[handler]
pub async fn list(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let (category, target) = (q.opt("category"), q.opt("target"));
    let files = match domain::list(&state, &s.principal, target, category).await {
        Ok(f) => f,
        Err(e) => return s.failure("files", e),
    };
    let writable: Vec<String> = categories::list(&state)
        .await
        .map(|l| l.into_iter().map(|c| c.name).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| domain::may_write(&s.principal, Some(c)))
        .collect();
    page(Files {
        frame: &s.frame("Files", "files"),
        may_upload: domain::may_write(&s.principal, None) || !writable.is_empty(),
        files,
        category: category.unwrap_or(""),
        target: target.unwrap_or(""),
        categories: writable,
        done: q.opt("done"),
        error: q.opt("error"),
        script: super::frame::asset("upload.js"),
    })
}

/// Where the files page goes after an upload: the list it came from, saying what
/// happened.
fn after_upload(category: &str, target: &str, key: &str, message: &str) -> Response {
    let mut to = format!("/files?{key}={}", urlencoded(message));
    if !category.is_empty() {
        to.push_str(&format!("&category={}", urlencoded(category)));
    }
    if !target.is_empty() {
        to.push_str(&format!("&target={}", urlencoded(target)));
    }
    see_other(&to)
}

/// The upload form (multipart): `csrf`, then `category` and `target`, then `file`,
/// in that order (the form's own), so the token and the access are checked before
/// a byte of the file is stored.
#[handler]
pub async fn upload(
    state: Data<&Arc<AppState>>,
    req: &Request,
    multipart: poem::Result<Multipart>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let refuse = |why: &str| s.failure("files", ApiError::forbidden(why.to_string()));
    let Ok(mut m) = multipart else {
        return s.failure("files", ApiError::bad_request("send the upload form"));
    };
    let mut fields = Fields::default();
    loop {
        let field = match m.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return s.failure("files", ApiError::bad_request("the form holds no file"));
            }
            Err(e) => return s.failure("files", ApiError::bad_request(e.to_string())),
        };
        let name = field.name().unwrap_or("").to_string();
        if name != "file" {
            let value = field.text().await.unwrap_or_default();
            fields.0.push((name, value));
            continue;
        }
        if let Err(why) = super::guard::form_allowed(req, &s.csrf, fields.get("csrf")) {
            return refuse(why);
        }
        let (category, target) = (
            fields.get("category").trim().to_string(),
            fields.get("target").trim().to_string(),
        );
        let target_ok = target.is_empty() || crate::web::names::Target::new(target.clone()).is_ok();
        if !target_ok {
            return after_upload(
                &category,
                "",
                "error",
                "the target must be 1..200 characters",
            );
        }
        let up = Upload {
            name: field.file_name().map(str::to_string),
            content_type: field.content_type().map(str::to_string),
            category: Some(category.clone()).filter(|c| !c.is_empty()),
            target: Some(target.clone()).filter(|t| !t.is_empty()),
            body: field.into_async_read(),
        };
        return match domain::upload(&state, &s.principal, up).await {
            Ok(f) => {
                let done = format!("{} stored ({} bytes, sha256 {})", f.name, f.size, f.sha256);
                after_upload(&category, &target, "done", &done)
            }
            Err(e @ ApiError::Forbidden(_)) => s.failure("files", e),
            Err(e) => after_upload(&category, &target, "error", &super::reasons(&e).join("; ")),
        };
    }
}

#[handler]
pub async fn download(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let id = or_page!(s.id("files", &id, "file"));
    match domain::download(&state, &s.principal, id, None).await {
        Ok(Ok(d)) => Response::builder()
            .content_type(d.file.content_type.clone())
            .header(poem::http::header::CONTENT_DISPOSITION, d.disposition())
            .header(poem::http::header::CONTENT_LENGTH, d.len)
            .body(d.body),
        Ok(Err(_)) => s.failure("files", ApiError::not_found("no such part of the file")),
        Err(e) => s.failure("files", e),
    }
}

#[handler]
pub async fn confirm_delete(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let uid = or_page!(s.id("files", &id, "file"));
    let f = match domain::info(&state, &s.principal, uid).await {
        Ok(f) => f,
        Err(e) => return s.failure("files", e),
    };
    if !domain::may_write(&s.principal, f.category.as_deref()) {
        return s.failure(
            "files",
            ApiError::forbidden("you may read this file but not delete it"),
        );
    }
    let frame = s.frame(format!("Delete {}", f.name), "files");
    let mut c = Confirm::new(
        &frame,
        format!("Delete the file {}?", f.name),
        format!("/files/{id}/delete"),
        format!("Delete {}", f.name),
    );
    c.alone = format!(
        "Its {} bytes are removed from SeaweedFS and cannot be restored.",
        f.size
    );
    c.cancel = "/files".into();
    page(c)
}

#[handler]
pub async fn delete(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "files", &f).await);
    let id = or_page!(s.id("files", &id, "file"));
    match domain::delete(&state, &s.principal, id).await {
        Ok(f) => super::done("/files", &format!("{} deleted", f.name)),
        Err(e) => s.failure("files", e),
    }
}
