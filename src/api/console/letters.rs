//! Dead letters: why each record was refused, the payload as received beside the
//! fix, a fix checked against the source's transformation and the current schema
//! before it is kept, and replay of one, the selected ones or all of a category with
//! a page that reports progress as it goes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;
use serde_json::Value;
use uuid::Uuid;

use super::frame::Frame;
use super::system::Confirm;
use super::{Fields, Signed, category_names, done, or_page, page, urlencoded};
use crate::api::AppState;
use crate::api::dead_letters::{self as letters, Progress};
use crate::db::dead_letters::{Filter, StoredDeadLetter};
use crate::web::error::ApiError;

#[derive(TemplateSimple)]
#[template(path = "letters.stpl")]
struct Letters<'a> {
    frame: &'a Frame,
    letters: Vec<StoredDeadLetter>,
    category: &'a str,
    source: &'a str,
    status: &'a str,
    categories: Vec<String>,
    next: Option<String>,
    done: Option<&'a str>,
}

/// Letters per page.
const LETTERS: i64 = 100;

#[handler]
pub async fn letters_page(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let status = if q.get("status") == "replayed" {
        "replayed"
    } else {
        "pending"
    };
    let filter = Filter {
        category: q.opt("category"),
        source: q.opt("source"),
        status: Some(status),
    };
    let after = q.opt("after").and_then(|a| Uuid::parse_str(a).ok());
    let categories: Vec<String> = category_names(&state)
        .await
        .into_iter()
        .filter(|c| s.principal.require_read(c).is_ok())
        .collect();
    // Without a category, a non-admin sees the letters of the first category they read.
    let first = categories.first().cloned();
    let chosen = match filter.category {
        None if s.principal.require_admin().is_err() => first.as_deref(),
        c => c,
    };
    let filter = Filter {
        category: chosen,
        ..filter
    };
    let list = if filter.category.is_none() && s.principal.require_admin().is_err() {
        Ok(vec![])
    } else {
        letters::list(&state, &s.principal, filter, LETTERS, after).await
    };
    let list = match list {
        Ok(l) => l,
        Err(e) => return s.failure("dead-letters", e),
    };
    let next = (list.len() as i64 == LETTERS).then(|| {
        let last = list.last().map(|l| l.id.to_string()).unwrap_or_default();
        let mut f = q.clone();
        f.0.retain(|(k, _)| k != "after" && k != "done");
        f.0.push(("after".into(), last));
        f.query(&[])
    });
    page(Letters {
        frame: &s.frame("Dead letters", "dead-letters"),
        letters: list,
        category: filter.category.unwrap_or(""),
        source: filter.source.unwrap_or(""),
        status,
        categories,
        next,
        done: q.opt("done"),
    })
}

#[derive(TemplateSimple)]
#[template(path = "letter.stpl")]
struct LetterPage<'a> {
    frame: &'a Frame,
    letter: StoredDeadLetter,
    raw: String,
    original: Option<String>,
    errors: Vec<String>,
    done: Option<&'a str>,
    may_write: bool,
}

#[handler]
pub async fn letter_page(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
    q: Fields,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let id = or_page!(s.id("dead-letters", &id, "dead letter"));
    match letters::get(&state, &s.principal, id).await {
        Ok(l) => show_letter(
            &s,
            l,
            None,
            vec![],
            q.opt("done"),
            poem::http::StatusCode::OK,
        ),
        Err(e) => s.failure("dead-letters", e),
    }
}

/// Renders a letter's page.
fn show_letter(
    s: &Signed,
    l: StoredDeadLetter,
    raw: Option<String>,
    errors: Vec<String>,
    done: Option<&str>,
    status: poem::http::StatusCode,
) -> Response {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("json");
    let frame = s.frame("Dead letter", "dead-letters");
    let may_write = s.principal.require_write(&l.category).is_ok();
    super::page_with(
        status,
        LetterPage {
            frame: &frame,
            raw: raw.unwrap_or_else(|| pretty(&l.raw)),
            original: l.original.as_ref().map(pretty),
            letter: l,
            errors,
            done,
            may_write,
        },
    )
}

/// The letter form: save the fix (`save`), save it and replay (`replay`), or replay
/// the letter as it is (`replay` without a fix sent).
#[handler]
pub async fn fix_letter(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "dead-letters", &f).await);
    let id = or_page!(s.id("dead-letters", &id, "dead letter"));
    let l = match letters::get(&state, &s.principal, id).await {
        Ok(l) => l,
        Err(e) => return s.failure("dead-letters", e),
    };
    let back = |what: &str| done(&format!("/dead-letters/{id}"), what);
    let changed =
        f.has("raw") && serde_json::from_str::<Value>(f.get("raw")).ok().as_ref() != Some(&l.raw);
    if changed {
        let text = f.get("raw").to_string();
        let raw: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let why = vec![format!("the record is not JSON: {e}")];
                return show_letter(&s, l, Some(text), why, None, poem::http::StatusCode::OK);
            }
        };
        let seen = DateTime::parse_from_rfc3339(f.get("seen"))
            .ok()
            .map(|t| t.with_timezone(&Utc));
        match letters::edit(&state, &s.principal, id, &raw, seen)
            .await
            .map_err(super::refused)
        {
            Ok(_) => {}
            Err(Ok((status, why))) => return show_letter(&s, l, Some(text), why, None, status),
            Err(Err(e)) => return s.failure("dead-letters", e),
        }
        if !f.has("replay") {
            return back("fix saved (not replayed yet)");
        }
    } else if !f.has("replay") {
        return back("nothing changed");
    }
    let chosen = match letters::selected(&state, &s.principal, &[id]).await {
        Ok(l) => l,
        Err(e) => return s.failure("dead-letters", e),
    };
    match letters::replay(&state, &s.principal, chosen, None).await {
        Ok(r) if r.replayed == 1 => back("replayed: its record is on its way to storage"),
        Ok(r) => {
            let why: Vec<String> = r
                .errors
                .iter()
                .map(|e| match &e.field {
                    Some(f) => format!("{f}: {}", e.reason),
                    None => e.reason.clone(),
                })
                .collect();
            back(&format!("still refused: {}", why.join("; ")))
        }
        Err(e) => s.failure("dead-letters", e),
    }
}

#[derive(TemplateSimple)]
#[template(path = "replay.stpl")]
struct ReplayPage<'a> {
    frame: &'a Frame,
    total: usize,
    back: String,
}

/// Where a replay page's progress lines go.
const PROGRESS: &str = "<!-- progress -->";

/// Replays the selected letters (`id`, repeated) or every pending letter of
/// `category`: the page is sent as the replay goes, a line per chunk of letters.
#[handler]
pub async fn replay(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    let s = or_page!(super::sender(&state, req, "dead-letters", &f).await);
    let chosen = if let Some(c) = f.opt("category").filter(|_| f.has("all")) {
        letters::pending_of(&state, &s.principal, c).await
    } else {
        let ids: Vec<Uuid> = f
            .all("id")
            .into_iter()
            .filter_map(|i| Uuid::parse_str(i).ok())
            .collect();
        if ids.is_empty() {
            let e = ApiError::bad_request("select the letters to replay (or replay a category's)");
            return s.failure("dead-letters", e);
        }
        letters::selected(&state, &s.principal, &ids).await
    };
    let chosen = match chosen {
        Ok(c) => c,
        Err(e) => return s.failure("dead-letters", e),
    };
    let back = match f.opt("category") {
        Some(c) => format!("/dead-letters?category={}", urlencoded(c)),
        None => "/dead-letters".into(),
    };
    let frame = s.frame("Replay", "dead-letters");
    let html = match (ReplayPage {
        frame: &frame,
        total: chosen.len(),
        back,
    })
    .render_once()
    {
        Ok(h) => h,
        Err(e) => return s.failure("dead-letters", ApiError::internal(e.to_string())),
    };
    let (head, tail) = html.split_once(PROGRESS).unwrap_or((&html, ""));
    let (head, tail) = (head.to_string(), tail.to_string());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Progress>(16);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<String>(16);
    let state = state.0.clone();
    let principal = s.principal.clone();
    // The replay runs to its end even if the browser goes away: each chunk is
    // complete (published, acknowledged, marked) before the next.
    let work =
        tokio::spawn(async move { letters::replay(&state, &principal, chosen, Some(&tx)).await });
    tokio::spawn(async move {
        let _ = out_tx.send(head).await;
        while let Some(p) = rx.recv().await {
            let line = format!(
                "<li>{} of {} letters done: {} replayed, {} still refused</li>\n",
                p.done, p.total, p.replayed, p.failed
            );
            let _ = out_tx.send(line).await;
        }
        let end = match work.await {
            Ok(Ok(r)) => format!(
                "</ol><p class=\"done\" role=\"status\">Done: {} replayed, {} still refused.</p>",
                r.replayed, r.failed
            ),
            Ok(Err(e)) => format!(
                "</ol><p class=\"error\" role=\"alert\">The replay stopped: {}. Letters replayed before stay replayed; the rest are still pending.</p>",
                html_escape(&super::reasons(&e).join("; "))
            ),
            Err(e) => format!(
                "</ol><p class=\"error\" role=\"alert\">The replay failed: {}</p>",
                html_escape(&e.to_string())
            ),
        };
        let _ = out_tx.send(end).await;
        let _ = out_tx.send(tail).await;
    });
    let body = futures_util::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|s| {
            (
                Ok::<_, std::io::Error>(tokio_util::bytes::Bytes::from(s)),
                rx,
            )
        })
    });
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .body(poem::Body::from_bytes_stream(body))
}

/// `s` with HTML's special characters escaped (for the few lines written outside a
/// template).
fn html_escape(s: &str) -> String {
    let mut out = String::new();
    sailfish::runtime::escape::escape_to_string(s, &mut out);
    out
}

#[handler]
pub async fn confirm_delete_letter(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let uid = or_page!(s.id("dead-letters", &id, "dead letter"));
    let l = match letters::get(&state, &s.principal, uid).await {
        Ok(l) => l,
        Err(e) => return s.failure("dead-letters", e),
    };
    if let Err(d) = s.principal.require_write(&l.category) {
        return s.failure("dead-letters", d.into());
    }
    let frame = s.frame("Give up on a dead letter", "dead-letters");
    let mut c = Confirm::new(
        &frame,
        format!("Give up on this dead letter of {}?", l.category),
        format!("/dead-letters/{id}/delete"),
        "Delete the letter".into(),
    );
    c.alone = format!(
        "Its record ({} from {}) is deleted and never stored.",
        l.position, l.source
    );
    c.cancel = format!("/dead-letters/{id}");
    page(c)
}

#[handler]
pub async fn delete_letter(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "dead-letters", &f).await);
    let id = or_page!(s.id("dead-letters", &id, "dead letter"));
    match letters::delete(&state, &s.principal, id).await {
        Ok(()) => done("/dead-letters", "the letter was deleted"),
        Err(e) => s.failure("dead-letters", e),
    }
}
