//! The web console: server-rendered pages (sailfish templates in `templates/`) over
//! the same functions as the REST routes ([`crate::api::records`],
//! [`crate::api::categories`], [`crate::api::units`], …): no SQL of its own and no
//! call to the REST API. Every page works with plain HTML forms; a few small scripts
//! (`templates/assets/`) add live updates and upload progress. The session is the
//! REST API's (the same cookie, the same roles).
//!
//! One module per area: [`account`] (login, logout, tokens, sessions, password),
//! [`system`] (dashboard, units, logs), [`data`] (categories and their schemas),
//! [`explorer`] (a category's records), [`sources`], [`letters`] (dead letters),
//! [`alerts`], [`files`], [`users`];
//! [`frame`] holds what every page shares, [`svg`] the pictures, [`guard`] the
//! security headers and the cross-site checks every form passes.
//!
//! This module holds the prelude every handler uses: who is asking (`user`, `admin`,
//! `sender` for forms), a form or query string as [`Fields`], and the answers (a
//! page, an error page, a form shown again with its reasons, a redirect).

pub mod account;
pub mod alerts;
pub mod data;
pub mod explorer;
pub mod files;
pub mod frame;
pub mod guard;
pub mod letters;
pub mod sources;
pub mod svg;
pub mod system;
pub mod users;

use poem::http::StatusCode;
use poem::web::Redirect;
use poem::{EndpointExt, FromRequest, IntoResponse, Request, RequestBody, Response, Route};
use sailfish::TemplateSimple;

use super::AppState;
use crate::model::access::Principal;
use crate::web::error::ApiError;
use frame::{Frame, Who};

/// The value of a `Result<T, Response>`, or the handler answers with the response (a
/// refusal, a redirect to the login page).
macro_rules! or_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}
pub(crate) use or_page;

/// The console's routes (every path outside the REST API); anything else is the
/// console's 404 page.
pub fn routes() -> impl poem::Endpoint {
    let pages = Route::new()
        .at("/", poem::get(account::index))
        .at(
            "/login",
            poem::get(account::login_page).post(account::login),
        )
        .at("/logout", poem::post(account::logout))
        .at("/account", poem::get(account::account))
        .at(
            "/account/logout-everywhere",
            poem::post(account::logout_everywhere),
        )
        .at("/account/password", poem::post(account::change_password))
        .at("/account/tokens", poem::post(account::create_token))
        .at(
            "/account/tokens/:id/revoke",
            poem::post(account::revoke_token),
        )
        .at("/dashboard", poem::get(system::dashboard))
        .at("/dashboard/stream", poem::get(system::dashboard_stream))
        .at("/units", poem::get(system::units_page))
        .at("/units/:name", poem::get(system::unit_page))
        .at(
            "/units/:name/:action",
            poem::get(system::confirm).post(system::control),
        )
        .at("/reload", poem::post(system::reload))
        .at("/logs", poem::get(system::logs_page))
        .at(
            "/logs/channels/:channel/:switch",
            poem::post(system::switch_channel),
        )
        .at("/logs/stream", poem::get(system::logs_stream))
        .at("/data", poem::get(data::list))
        .at("/data/new", poem::get(data::new_page).post(data::create))
        .at("/data/:category", poem::get(explorer::explore))
        .at("/data/:category/stream", poem::get(explorer::stream))
        .at("/data/:category/export", poem::get(explorer::export))
        .at(
            "/data/:category/schema",
            poem::get(data::schema_page).post(data::change_schema),
        )
        .at("/data/:category/versions", poem::get(data::versions_page))
        .at(
            "/data/:category/delete",
            poem::get(data::confirm_delete).post(data::delete),
        )
        .at("/sources", poem::get(sources::sources_page))
        .at(
            "/sources/new",
            poem::get(sources::new_source).post(sources::create_source),
        )
        .at(
            "/sources/:name",
            poem::get(sources::source_page).post(sources::change_source),
        )
        .at(
            "/sources/:name/delete",
            poem::get(sources::confirm_delete_source).post(sources::delete_source),
        )
        .at("/dead-letters", poem::get(letters::letters_page))
        .at("/dead-letters/replay", poem::post(letters::replay))
        .at(
            "/dead-letters/:id",
            poem::get(letters::letter_page).post(letters::fix_letter),
        )
        .at(
            "/dead-letters/:id/delete",
            poem::get(letters::confirm_delete_letter).post(letters::delete_letter),
        )
        .at(
            "/alerts",
            poem::get(alerts::rules_page).post(alerts::alert_form),
        )
        .at(
            "/alerts/:key/delete",
            poem::get(alerts::confirm_delete_rule).post(alerts::delete_rule),
        )
        .at("/files", poem::get(files::list).post(files::upload))
        .at("/files/:id/download", poem::get(files::download))
        .at(
            "/files/:id/delete",
            poem::get(files::confirm_delete).post(files::delete),
        )
        .at("/users", poem::get(users::list).post(users::create))
        .at(
            "/users/:id",
            poem::get(users::edit_page).post(users::change),
        )
        .at(
            "/users/:id/delete",
            poem::get(users::confirm_delete).post(users::delete),
        )
        .with(guard::page_headers());
    let mut route = Route::new();
    for a in frame::ASSETS {
        route = route.at(a.path(), poem::get(asset(a)));
    }
    route
        .nest("/", pages)
        .catch_all_error(|e| async move {
            let status = e.status();
            let (title, message) = match status {
                StatusCode::NOT_FOUND => ("Not found", "There is no such page.".to_string()),
                StatusCode::METHOD_NOT_ALLOWED => ("Not allowed", e.to_string()),
                _ => ("Error", e.to_string()),
            };
            html(status, frame::error(&Frame::anonymous(title), &message))
        })
        .with(guard::security_headers())
        .with(poem::middleware::CookieJarManager::new())
}

/// An HTML response.
fn html(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// A page rendered from its template (200).
fn page(t: impl TemplateSimple) -> Response {
    page_with(StatusCode::OK, t)
}

/// A page rendered from its template, answered with `status`.
fn page_with(status: StatusCode, t: impl TemplateSimple) -> Response {
    match t.render_once() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!("a console page could not be rendered: {e}");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                frame::error(
                    &Frame::anonymous("Error"),
                    "the page could not be rendered; the api's log has why",
                ),
            )
        }
    }
}

/// A `303 See Other` to `to` that sets `cookie` (logging in or out).
fn see_other_setting(to: &str, cookie: &str) -> Response {
    let mut r = see_other(to);
    r.headers_mut().insert(
        poem::http::header::SET_COOKIE,
        cookie.parse().expect("a cookie is a header value"),
    );
    r
}

/// A `303 See Other` to `to` (after a form, or to the login page).
fn see_other(to: &str) -> Response {
    Redirect::see_other(to).into_response()
}

/// A signed-in user: who, and the session's CSRF token.
struct Signed {
    principal: Principal,
    csrf: String,
}

impl Signed {
    /// The frame of a page titled `title` in navigation `section`.
    fn frame(&self, title: impl Into<String>, section: &'static str) -> Frame {
        Frame {
            section,
            who: Some(Who {
                username: self.principal.username.clone(),
                role: self.principal.role,
            }),
            csrf: self.csrf.clone(),
            ..Frame::anonymous(title)
        }
    }

    /// The page for an error the domain answered (its status, its message).
    fn failure(&self, section: &'static str, e: ApiError) -> Response {
        failure(&self.frame(error_title(&e), section), e)
    }

    /// `raw` (a path segment) as an id, or the not-found page of `what`.
    // The error is the handler's whole answer, made at most once per request.
    #[allow(clippy::result_large_err)]
    fn id(&self, section: &'static str, raw: &str, what: &str) -> Result<uuid::Uuid, Response> {
        uuid::Uuid::parse_str(raw)
            .map_err(|_| self.failure(section, ApiError::not_found(format!("no such {what}"))))
    }
}

/// How a form answers an error of the domain: a form that can be corrected is shown
/// again with the reasons (200; 409 when it was made against a state that changed
/// since); anything else (not allowed, not found, a service away) is its own page.
fn refused(e: ApiError) -> Result<(StatusCode, Vec<String>), ApiError> {
    match e {
        ApiError::BadRequest(_) => Ok((StatusCode::OK, reasons(&e))),
        ApiError::Conflict(_) => Ok((StatusCode::CONFLICT, reasons(&e))),
        other => Err(other),
    }
}

/// A `303 See Other` to `path` saying what was `done` (shown by the page).
fn done(path: &str, message: &str) -> Response {
    let join = if path.contains('?') { '&' } else { '?' };
    see_other(&format!("{path}{join}done={}", urlencoded(message)))
}

/// A title for the page of `e`.
fn error_title(e: &ApiError) -> &'static str {
    match e {
        ApiError::NotFound(_) => "Not found",
        ApiError::Forbidden(_) => "Not allowed",
        ApiError::Conflict(_) => "Conflict",
        ApiError::Unavailable(..) => "Unavailable",
        ApiError::BadRequest(_) => "Not done",
        _ => "Error",
    }
}

/// The session of `req`, if its cookie names a live one.
async fn signed(state: &AppState, req: &Request) -> Result<Option<Signed>, ApiError> {
    let Some(cookie) = req.cookie().get(super::auth::SESSION_COOKIE) else {
        return Ok(None);
    };
    match super::session::lookup(state, cookie.value_str()).await {
        Ok((principal, csrf)) => Ok(Some(Signed { principal, csrf })),
        Err(ApiError::Unauthorized(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The page for an error the domain answered (its status, its message and the
/// per-item reasons).
fn failure(frame: &Frame, e: ApiError) -> Response {
    let status = {
        let b = e.body();
        let mut message = b.message.clone();
        for i in &b.errors {
            message.push_str(&format!("; {}", issue(i)));
        }
        (message, e.into_response().status())
    };
    html(status.1, frame::error(frame, &status.0))
}

/// One per-item reason in words: `field: reason`.
fn issue(i: &crate::web::error::Issue) -> String {
    match &i.field {
        Some(f) => format!("{f}: {}", i.reason),
        None => i.reason.clone(),
    }
}

/// An error's message and its per-item reasons, each in words.
fn reasons(e: &ApiError) -> Vec<String> {
    let b = e.body();
    std::iter::once(b.message.clone())
        .chain(b.errors.iter().map(issue))
        .collect()
}

/// The signed-in user of `req`; a stranger is sent to the login page.
async fn user(state: &AppState, req: &Request) -> Result<Signed, Response> {
    match signed(state, req).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(see_other("/login")),
        Err(e) => Err(failure(&Frame::anonymous("Unavailable"), e)),
    }
}

/// The signed-in admin of `req`; anyone else is refused (a stranger is sent to the
/// login page).
async fn admin(state: &AppState, req: &Request, section: &'static str) -> Result<Signed, Response> {
    let s = user(state, req).await?;
    if let Err(d) = s.principal.require_admin() {
        return Err(html(
            StatusCode::FORBIDDEN,
            frame::error(&s.frame("Not allowed", section), &d.0),
        ));
    }
    Ok(s)
}

/// The signed-in sender of a console form (`fields`): the form must come from this
/// console (same origin) and carry the session's CSRF token; a stranger is sent to
/// the login page. What the sender may do is the domain's to say.
async fn sender(
    state: &AppState,
    req: &Request,
    section: &'static str,
    fields: &Fields,
) -> Result<Signed, Response> {
    let s = user(state, req).await?;
    if let Err(why) = guard::form_allowed(req, &s.csrf, fields.get("csrf")) {
        return Err(html(
            StatusCode::FORBIDDEN,
            frame::error(&s.frame("Not allowed", section), why),
        ));
    }
    Ok(s)
}

/// A form or query string as sent: every name and value, in order (a name may
/// repeat: several filters, several selected letters).
#[derive(Debug, Default, Clone)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name` ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, if it is not empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name).trim()).filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `name` was sent (a checked checkbox, the button pressed).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The pairs as a query string (`a=1&b=2`), without `skip`.
    pub fn query(&self, skip: &[&str]) -> String {
        self.0
            .iter()
            .filter(|(k, v)| !skip.contains(&k.as_str()) && !v.is_empty())
            .map(|(k, v)| format!("{}={}", urlencoded(k), urlencoded(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// Fields made of `pairs`.
    pub fn of(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl<'a> FromRequest<'a> for Fields {
    /// A query string (GET) or a urlencoded form (POST); what cannot be read is no
    /// field at all (a form without its CSRF token is then refused as such).
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let pairs = if req.method() == poem::http::Method::GET {
            match poem::web::Query::<Vec<(String, String)>>::from_request(req, body).await {
                Ok(q) => q.0,
                Err(_) => vec![],
            }
        } else {
            match poem::web::Form::<Vec<(String, String)>>::from_request(req, body).await {
                Ok(f) => f.0,
                Err(_) => vec![],
            }
        };
        Ok(Fields(pairs))
    }
}

/// Every category's name, for the forms' lists.
pub(crate) async fn category_names(state: &AppState) -> Vec<String> {
    crate::api::categories::list(state)
        .await
        .map(|l| l.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

/// `s` as a query-string value.
pub fn urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Serves `a`, cached for a year (its name changes with its content).
fn asset(a: &'static frame::Asset) -> impl poem::Endpoint {
    poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type(a.content_type)
            .header(
                poem::http::header::CACHE_CONTROL,
                "public, max-age=31536000, immutable",
            )
            .body(a.body)
    })
}
