//! Ingestion: the sources (what each is doing, its definition and transformation),
//! the dead letters (why each was refused, the payload as received beside the fix,
//! a fix checked against the current schema before it is kept, replay of one,
//! selected or all with progress) and the alert rules (a backtest of a rule over the
//! last day before it is created, and the notifications sent).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;
use serde_json::Value;
use uuid::Uuid;

use super::frame::Frame;
use super::system::Confirm;
use super::{Fields, Signed, done, or_page, page, urlencoded};
use crate::api::alerts::{self, Preview};
use crate::api::dead_letters::{self as letters, Progress};
use crate::api::sources::{self, Definition, Overview};
use crate::api::{AppState, categories};
use crate::db::dead_letters::{Filter, StoredDeadLetter};
use crate::model::alert::{AlertKind, AlertRule, Notification, Op};
use crate::model::source::SourceKind;
use crate::web::error::ApiError;
use crate::web::names::{CategoryName, Name};

#[derive(TemplateSimple)]
#[template(path = "sources.stpl")]
struct Sources<'a> {
    frame: &'a Frame,
    sources: Vec<Overview>,
    done: Option<&'a str>,
}

#[handler]
pub async fn sources_page(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    match sources::overview(&state).await {
        Ok(list) => page(Sources {
            frame: &s.frame("Sources", "sources"),
            sources: list,
            done: q.opt("done"),
        }),
        Err(e) => s.failure("sources", e),
    }
}

/// The source form, as typed.
#[derive(Debug, Clone, Default)]
pub struct SourceForm {
    name: String,
    category: String,
    kind: String,
    config: String,
    transform: String,
    enabled: bool,
    /// The definition's `updated_at` when the form was opened (RFC 3339).
    seen: String,
}

impl SourceForm {
    fn of(s: &crate::model::source::Source) -> SourceForm {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("json");
        SourceForm {
            name: s.name.clone(),
            category: s.category.clone(),
            kind: s.kind.as_str().into(),
            config: pretty(&s.config),
            transform: pretty(&serde_json::to_value(&s.transform).expect("json")),
            enabled: s.enabled,
            seen: s.updated_at.to_rfc3339(),
        }
    }

    fn read(f: &Fields) -> SourceForm {
        SourceForm {
            name: f.get("name").trim().into(),
            category: f.get("category").trim().into(),
            kind: f.get("kind").into(),
            config: f.get("config").into(),
            transform: f.get("transform").into(),
            enabled: f.has("enabled"),
            seen: f.get("seen").into(),
        }
    }

    /// The definition it states, or every reason it does not.
    fn definition(&self) -> Result<Definition, Vec<String>> {
        let mut errors = vec![];
        let name = Name::new(self.name.clone()).map_err(|e| errors.push(format!("name: {e}")));
        let category = CategoryName::new(self.category.clone())
            .map_err(|e| errors.push(format!("category: {e}")));
        let kind: Result<SourceKind, _> = serde_json::from_value(Value::String(self.kind.clone()))
            .map_err(|_| errors.push(format!("kind: `{}` is not a source kind", self.kind)));
        let json = |label: &str, text: &str, errors: &mut Vec<String>| -> Option<Value> {
            if text.trim().is_empty() {
                return Some(Value::Object(Default::default()));
            }
            serde_json::from_str(text)
                .map_err(|e| errors.push(format!("{label}: not JSON: {e}")))
                .ok()
        };
        let config = json("settings", &self.config, &mut errors);
        let transform = json("transformation", &self.transform, &mut errors).and_then(|v| {
            serde_json::from_value(v)
                .map_err(|e| errors.push(format!("transformation: {e}")))
                .ok()
        });
        match (name, category, kind, config, transform) {
            (Ok(name), Ok(category), Ok(kind), Some(config), Some(transform)) => Ok(Definition {
                name: name.into_string(),
                category: category.into_string(),
                kind,
                config,
                transform,
                enabled: self.enabled,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(TemplateSimple)]
#[template(path = "source.stpl")]
struct SourcePage<'a> {
    frame: &'a Frame,
    /// None: a new source.
    key: Option<&'a str>,
    form: SourceForm,
    categories: Vec<String>,
    overview: Option<Overview>,
    errors: Vec<String>,
}

/// Every category's name, for the forms' lists.
async fn category_names(state: &AppState) -> Vec<String> {
    categories::list(state)
        .await
        .map(|l| l.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

#[handler]
pub async fn new_source(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    if let Err(d) = s.principal.require_editor() {
        return s.failure("sources", d.into());
    }
    let form = SourceForm {
        kind: "http_push".into(),
        category: q.get("category").into(),
        enabled: true,
        config: "{}".into(),
        transform: "{}".into(),
        ..SourceForm::default()
    };
    page(SourcePage {
        frame: &s.frame("New source", "sources"),
        key: None,
        form,
        categories: category_names(&state).await,
        overview: None,
        errors: vec![],
    })
}

#[handler]
pub async fn create_source(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    save_source(&state, req, None, &f).await
}

#[handler]
pub async fn source_page(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(name): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let src = match sources::get(&state, &name).await {
        Ok(src) => src,
        Err(e) => return s.failure("sources", e),
    };
    let overview = sources::overview(&state)
        .await
        .ok()
        .and_then(|l| l.into_iter().find(|o| o.name == src.name));
    page(SourcePage {
        frame: &s.frame(format!("Source {}", src.name), "sources"),
        key: Some(&name),
        form: SourceForm::of(&src),
        categories: category_names(&state).await,
        overview,
        errors: vec![],
    })
}

#[handler]
pub async fn change_source(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(name): Path<String>,
    f: Fields,
) -> Response {
    save_source(&state, req, Some(&name), &f).await
}

/// The source form: a new source (`key` None) or a new definition of one, made
/// against the definition the form was opened with.
async fn save_source(state: &AppState, req: &Request, key: Option<&str>, f: &Fields) -> Response {
    let s = or_page!(super::sender(state, req, "sources", f).await);
    let form = SourceForm::read(f);
    let seen = DateTime::parse_from_rfc3339(&form.seen)
        .ok()
        .map(|t| t.with_timezone(&Utc));
    let mut status = poem::http::StatusCode::OK;
    let errors = match form.definition() {
        Ok(d) => {
            let saved = match key {
                None => sources::create(state, &s.principal, d).await,
                Some(k) => sources::update(state, &s.principal, k, d, seen).await,
            };
            match saved.map_err(super::refused) {
                Ok(src) => {
                    let what = if key.is_some() { "changed" } else { "defined" };
                    return done("/sources", &format!("source {} {what}", src.name));
                }
                Err(Ok((st, why))) => {
                    status = st;
                    why
                }
                Err(Err(e)) => return s.failure("sources", e),
            }
        }
        Err(errors) => errors,
    };
    let title = key.map_or_else(|| "New source".to_string(), |k| format!("Source {k}"));
    super::page_with(
        status,
        SourcePage {
            frame: &s.frame(title, "sources"),
            key,
            form,
            categories: category_names(state).await,
            overview: None,
            errors,
        },
    )
}

#[handler]
pub async fn confirm_delete_source(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(name): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    if let Err(d) = s.principal.require_editor() {
        return s.failure("sources", d.into());
    }
    if let Err(e) = sources::get(&state, &name).await {
        return s.failure("sources", e);
    }
    let frame = s.frame(format!("Delete {name}"), "sources");
    let mut c = Confirm::new(
        &frame,
        format!("Delete the source {name}?"),
        format!("/sources/{name}/delete"),
        format!("Delete {name}"),
    );
    c.alone = "Its runner stops; the records it brought stay stored.".into();
    c.cancel = format!("/sources/{name}");
    page(c)
}

#[handler]
pub async fn delete_source(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(name): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "sources", &f).await);
    match sources::delete(&state, &s.principal, &name).await {
        Ok(src) => done("/sources", &format!("source {} deleted", src.name)),
        Err(e) => s.failure("sources", e),
    }
}

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

/// The rule form, as typed.
#[derive(Debug, Clone, Default)]
pub struct RuleForm {
    name: String,
    category: String,
    kind: String,
    field: String,
    op: String,
    value: String,
    target: String,
    window: String,
    webhooks: String,
}

impl RuleForm {
    fn read(f: &Fields) -> RuleForm {
        let g = |k: &str| f.get(k).trim().to_string();
        RuleForm {
            name: g("name"),
            category: g("category"),
            kind: g("kind"),
            field: g("field"),
            op: g("op"),
            value: g("value"),
            target: g("target"),
            window: g("window"),
            webhooks: f.get("webhooks").to_string(),
        }
    }

    /// The rule it states, or why not (the rest is checked against the schema).
    fn rule(&self) -> Result<AlertRule, Vec<String>> {
        let mut errors = vec![];
        let kind = match self.kind.as_str() {
            "absence" => AlertKind::Absence,
            _ => AlertKind::Threshold,
        };
        let value = if self.value.is_empty() {
            None
        } else {
            match self.value.parse::<f64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push(format!("value: `{}` is not a number", self.value));
                    None
                }
            }
        };
        if !crate::model::schema::valid_identifier(&self.category) {
            errors.push("category: choose a category".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        Ok(AlertRule {
            id: Uuid::nil(),
            name: self.name.clone(),
            category: self.category.clone(),
            kind,
            field: opt(&self.field).filter(|_| kind == AlertKind::Threshold),
            op: Op::parse(&self.op).filter(|_| kind == AlertKind::Threshold),
            value: value.filter(|_| kind == AlertKind::Threshold),
            target: opt(&self.target),
            window: opt(&self.window).unwrap_or_else(|| "60s".into()),
            webhooks: self
                .webhooks
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            enabled: true,
        })
    }
}

#[derive(TemplateSimple)]
#[template(path = "alerts.stpl")]
struct Alerts<'a> {
    frame: &'a Frame,
    category: &'a str,
    categories: Vec<String>,
    rules: Vec<AlertRule>,
    notifications: Vec<Notification>,
    form: RuleForm,
    preview: Option<Preview>,
    errors: Vec<String>,
    done: Option<&'a str>,
}

/// Notifications the alerts page shows.
const NOTIFICATIONS: i64 = 200;

/// The alerts page of `category` (None: every category the user reads).
async fn alerts_page(
    state: &AppState,
    s: &Signed,
    category: Option<&str>,
    form: RuleForm,
    preview: Option<Preview>,
    errors: Vec<String>,
    done: Option<&str>,
) -> Response {
    let categories: Vec<String> = category_names(state)
        .await
        .into_iter()
        .filter(|c| s.principal.require_read(c).is_ok())
        .collect();
    let rules = match alerts::rules(state, category).await {
        Ok(r) => r
            .into_iter()
            .filter(|r| s.principal.require_read(&r.category).is_ok())
            .collect(),
        Err(e) => return s.failure("alerts", e),
    };
    let notifications = match category {
        Some(c) => alerts::notifications(state, &s.principal, Some(c), NOTIFICATIONS).await,
        None if s.principal.require_admin().is_ok() => {
            alerts::notifications(state, &s.principal, None, NOTIFICATIONS).await
        }
        None => Ok(vec![]),
    };
    let notifications = match notifications {
        Ok(n) => n,
        Err(e) => return s.failure("alerts", e),
    };
    page(Alerts {
        frame: &s.frame("Alerts", "alerts"),
        category: category.unwrap_or(""),
        categories,
        rules,
        notifications,
        form,
        preview,
        errors,
        done,
    })
}

#[handler]
pub async fn rules_page(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let form = RuleForm {
        category: q.get("category").into(),
        kind: "threshold".into(),
        op: "gt".into(),
        window: "60s".into(),
        ..RuleForm::default()
    };
    alerts_page(
        &state,
        &s,
        q.opt("category"),
        form,
        None,
        vec![],
        q.opt("done"),
    )
    .await
}

/// The rule form: `preview` backtests it over the last day; `create` defines it.
#[handler]
pub async fn alert_form(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    let s = or_page!(super::sender(&state, req, "alerts", &f).await);
    let form = RuleForm::read(&f);
    let shown = Some(form.category.clone()).filter(|c| !c.is_empty());
    let rule = match form.rule() {
        Ok(r) => r,
        Err(errors) => {
            return alerts_page(&state, &s, shown.as_deref(), form, None, errors, None).await;
        }
    };
    if f.has("create") {
        return match alerts::create(&state, &s.principal, rule).await {
            Ok(r) => {
                let to = format!("/alerts?category={}", urlencoded(&r.category));
                done(&to, &format!("alert rule {} defined", r.name))
            }
            Err(e) => match super::refused(e) {
                Ok((_, errors)) => {
                    alerts_page(&state, &s, shown.as_deref(), form, None, errors, None).await
                }
                Err(e) => s.failure("alerts", e),
            },
        };
    }
    match alerts::preview(&state, &s.principal, &rule).await {
        Ok(p) => alerts_page(&state, &s, shown.as_deref(), form, Some(p), vec![], None).await,
        Err(e) => match super::refused(e) {
            Ok((_, errors)) => {
                alerts_page(&state, &s, shown.as_deref(), form, None, errors, None).await
            }
            Err(e) => s.failure("alerts", e),
        },
    }
}

#[handler]
pub async fn confirm_delete_rule(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(key): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    if let Err(d) = s.principal.require_editor() {
        return s.failure("alerts", d.into());
    }
    let frame = s.frame("Delete an alert rule", "alerts");
    let mut c = Confirm::new(
        &frame,
        format!("Delete the alert rule {key}?"),
        format!("/alerts/{}/delete", urlencoded(&key)),
        "Delete the rule".into(),
    );
    c.alone = "It stops firing; the notifications it sent stay in the history.".into();
    c.cancel = "/alerts".into();
    page(c)
}

#[handler]
pub async fn delete_rule(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(key): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "alerts", &f).await);
    match alerts::delete(&state, &s.principal, &key).await {
        Ok(()) => done("/alerts", "the rule was deleted"),
        Err(e) => s.failure("alerts", e),
    }
}
