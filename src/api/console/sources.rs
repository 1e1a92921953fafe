//! Sources: what each is doing (its runner's status, last record, records stored and
//! rejected in the last hour), and its definition with the transformation rules (a
//! change made on a page opened before another change is refused).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;
use serde_json::Value;

use super::frame::Frame;
use super::system::Confirm;
use super::{Fields, category_names, done, or_page, page};
use crate::api::AppState;
use crate::api::sources::{self, Definition, Overview};
use crate::model::source::SourceKind;
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
