//! The web console: server-rendered pages (sailfish templates in `templates/`) over
//! the same functions as the REST routes ([`crate::api::session`],
//! [`crate::api::units`], …): no SQL of its own and no call to the REST API. Every
//! page works with plain HTML forms; the session is the REST API's (the same cookie,
//! the same roles).
//!
//! [`guard`] holds what every console response and form passes: the security headers
//! (a strict Content-Security-Policy, no framing, `no-store` on pages) and the
//! cross-site checks (`Origin` / `Sec-Fetch-Site`, and the session's CSRF token in every
//! form of a signed-in user).

pub mod guard;
mod pages;

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Form, Redirect};
use poem::{EndpointExt, IntoResponse, Request, Response, Route, handler};
use serde::Deserialize;

use super::AppState;
use crate::model::access::Principal;
use crate::web::error::ApiError;
use pages::{Frame, Page, Who};

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

/// The console's routes: `/` (to the dashboard or the login), `/login`, `/logout`,
/// `/dashboard` and `/assets/…`; anything else is the console's 404 page.
pub fn routes() -> impl poem::Endpoint {
    let pages = Route::new()
        .at("/", poem::get(index))
        .at("/login", poem::get(login_page).post(login))
        .at("/logout", poem::post(logout))
        .at("/dashboard", poem::get(dashboard))
        .at("/dashboard/stream", poem::get(dashboard_stream))
        .at("/units", poem::get(units_page))
        .at("/units/:name/:action", poem::get(confirm).post(control))
        .at("/account", poem::get(account))
        .at("/account/logout-everywhere", poem::post(logout_everywhere))
        .at("/account/tokens", poem::post(create_token))
        .at("/account/tokens/:id/revoke", poem::post(revoke_token))
        .at("/logs", poem::get(logs_page))
        .at(
            "/logs/channels/:channel/:switch",
            poem::post(switch_channel),
        )
        .at("/logs/stream", poem::get(logs_stream))
        .with(guard::page_headers());
    let mut route = Route::new();
    for a in pages::ASSETS {
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
            html(status, pages::error(&Frame::anonymous(title), &message))
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
    fn frame(&self, title: &'static str) -> Frame {
        Frame {
            title,
            who: Some(Who {
                username: self.principal.username.clone(),
                role: self.principal.role.as_str(),
            }),
            csrf: self.csrf.clone(),
            ..Frame::anonymous(title)
        }
    }
}

/// The session of `req`, if its cookie names a live one.
async fn signed(state: &AppState, req: &Request) -> Result<Option<Signed>, ApiError> {
    let Some(cookie) = req.cookie().get(super::auth::SESSION_COOKIE) else {
        return Ok(None);
    };
    match crate::web::bearer::session(&state.pool, cookie.value_str()).await {
        Ok((principal, csrf)) => Ok(Some(Signed { principal, csrf })),
        Err(ApiError::Unauthorized(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The page for an error the domain answered (its status, its message).
fn failure(frame: &Frame, e: ApiError) -> Response {
    let message = e.body().message.clone();
    let status = e.into_response().status();
    html(status, pages::error(frame, &message))
}

#[handler]
async fn index(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    match signed(&state, req).await {
        Ok(Some(_)) => see_other("/dashboard"),
        Ok(None) => see_other("/login"),
        Err(e) => failure(&Frame::anonymous("Unavailable"), e),
    }
}

#[handler]
async fn login_page(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    if let Ok(Some(_)) = signed(&state, req).await {
        return see_other("/dashboard");
    }
    html(
        StatusCode::OK,
        Page::Login {
            error: None,
            username: "",
        }
        .render(&Frame::anonymous("Log in")),
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

#[handler]
async fn login(
    state: Data<&Arc<AppState>>,
    req: &Request,
    form: poem::Result<Form<LoginForm>>,
) -> Response {
    let frame = Frame::anonymous("Log in");
    if !guard::same_origin(req) {
        return html(
            StatusCode::FORBIDDEN,
            pages::error(&frame, guard::CROSS_SITE),
        );
    }
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            Page::Login {
                error: Some("send a user name and a password".into()),
                username: "",
            }
            .render(&frame),
        );
    };
    let addr = req
        .remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let previous = req
        .cookie()
        .get(super::auth::SESSION_COOKIE)
        .map(|c| c.value_str().to_string());
    match super::session::open(
        &state,
        &form.username,
        &form.password,
        &addr,
        previous.as_deref(),
    )
    .await
    {
        Ok(opened) => {
            tracing::info!(user = %opened.user.username, "console login");
            see_other_setting("/dashboard", &super::session::cookie(&opened.token))
        }
        // A refused login shows the form again with why (200, as a form with errors is
        // answered: the browser is not failing to load a page).
        Err(e) => {
            if !matches!(e, ApiError::TooManyRequests(..) | ApiError::Unauthorized(_)) {
                return failure(&frame, e);
            }
            html(
                StatusCode::OK,
                Page::Login {
                    error: Some(e.body().message.clone()),
                    username: &form.username,
                }
                .render(&frame),
            )
        }
    }
}

/// A form that only carries the CSRF token.
#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[handler]
async fn logout(
    state: Data<&Arc<AppState>>,
    req: &Request,
    form: poem::Result<Form<CsrfForm>>,
) -> Response {
    let frame = Frame::anonymous("Log out");
    or_page!(sender(&state, req, "Log out", false, &token_of(form)).await);
    if let Some(c) = req.cookie().get(super::auth::SESSION_COOKIE)
        && let Err(e) = super::session::close(&state, c.value_str()).await
    {
        return failure(&frame, e);
    }
    see_other_setting("/login", &super::session::cleared_cookie())
}

#[handler]
async fn dashboard(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    let s = or_page!(user(&state, req, "Dashboard").await);
    let frame = s.frame("Dashboard");
    // The units are the supervisor's, shown to whom the REST API shows them: admins.
    let page = if s.principal.require_admin().is_ok() {
        match super::units::list(&state).await {
            Ok(units) => Page::Dashboard {
                units: Some(units),
                note: "",
            },
            Err(e) => return failure(&frame, e),
        }
    } else {
        Page::Dashboard {
            units: None,
            note: "The supervisor's units are shown to admins.",
        }
    };
    html(StatusCode::OK, page.render(&frame))
}

/// The signed-in admin of `req`; anyone else is refused (a stranger is sent to the
/// login page).
async fn admin(state: &AppState, req: &Request, title: &'static str) -> Result<Signed, Response> {
    let s = user(state, req, title).await?;
    if let Err(d) = s.principal.require_admin() {
        return Err(html(
            StatusCode::FORBIDDEN,
            pages::error(&s.frame(title), &d.0),
        ));
    }
    Ok(s)
}

/// The signed-in sender of a console form whose CSRF token is `sent` (an admin, when
/// `admin_only`); a cross-site form or a wrong token is refused.
async fn sender(
    state: &AppState,
    req: &Request,
    title: &'static str,
    admin_only: bool,
    sent: &str,
) -> Result<Signed, Response> {
    let s = if admin_only {
        admin(state, req, title).await?
    } else {
        user(state, req, title).await?
    };
    if let Err(why) = guard::form_allowed(req, &s.csrf, sent) {
        return Err(html(
            StatusCode::FORBIDDEN,
            pages::error(&s.frame(title), why),
        ));
    }
    Ok(s)
}

/// The CSRF token a form carried (empty when the form could not be read).
fn token_of(form: poem::Result<Form<CsrfForm>>) -> String {
    form.map(|f| f.0.csrf).unwrap_or_default()
}

/// `?done=…` after an action.
#[derive(Debug, Deserialize)]
struct Done {
    done: Option<String>,
}

#[handler]
async fn units_page(
    state: Data<&Arc<AppState>>,
    req: &Request,
    done: poem::web::Query<Done>,
) -> Response {
    let s = or_page!(admin(&state, req, "Units").await);
    let frame = s.frame("Units");
    let (statuses, infos) = match (
        super::units::list(&state).await,
        super::units::infos(&state).await,
    ) {
        (Ok(s), Ok(i)) => (s, i),
        (Err(e), _) | (_, Err(e)) => return failure(&frame, e),
    };
    let units = statuses
        .into_iter()
        .map(|u| {
            let info = infos.iter().find(|i| i.name == u.name).cloned();
            (u, info)
        })
        .collect();
    html(
        StatusCode::OK,
        Page::Units {
            units,
            done: done.0.done,
        }
        .render(&frame),
    )
}

#[handler]
async fn confirm(
    state: Data<&Arc<AppState>>,
    req: &Request,
    poem::web::Path((name, action)): poem::web::Path<(String, String)>,
) -> Response {
    let s = or_page!(admin(&state, req, "Units").await);
    let frame = s.frame("Units");
    match super::units::UnitAction::parse(&action) {
        Some(super::units::UnitAction::Stop | super::units::UnitAction::Restart) => {}
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                pages::error(
                    &frame,
                    "units are stopped or restarted here; start them from the units page",
                ),
            );
        }
    }
    let infos = match super::units::infos(&state).await {
        Ok(i) => i,
        Err(e) => return failure(&frame, e),
    };
    match super::units::also_affected(&infos, &name) {
        Ok(also) => html(
            StatusCode::OK,
            Page::Confirm {
                unit: &name,
                action: &action,
                also,
            }
            .render(&frame),
        ),
        Err(why) => html(StatusCode::NOT_FOUND, pages::error(&frame, &why)),
    }
}

#[handler]
async fn control(
    state: Data<&Arc<AppState>>,
    req: &Request,
    poem::web::Path((name, action)): poem::web::Path<(String, String)>,
    form: poem::Result<Form<CsrfForm>>,
) -> Response {
    let s = or_page!(sender(&state, req, "Units", true, &token_of(form)).await);
    let frame = s.frame("Units");
    let Some(act) = super::units::UnitAction::parse(&action) else {
        return html(
            StatusCode::NOT_FOUND,
            pages::error(&frame, "no such action"),
        );
    };
    match super::units::control(&state, &name, act, &s.principal.username).await {
        Ok(_) => {
            let done = format!("{name}: {action} done");
            see_other(&format!("/units?done={}", urlencoded(&done)))
        }
        Err(e) => failure(&frame, e),
    }
}

/// `s` as a query-string value.
fn urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The signed-in user of `req`; a stranger is sent to the login page.
async fn user(state: &AppState, req: &Request, title: &'static str) -> Result<Signed, Response> {
    match signed(state, req).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(see_other("/login")),
        Err(e) => Err(failure(&Frame::anonymous(title), e)),
    }
}

/// The account page of `s`, with what the last form did.
async fn account_page(
    state: &AppState,
    s: &Signed,
    created: Option<super::tokens::Token>,
    error: Option<String>,
) -> Response {
    let frame = s.frame("Account");
    let p = &s.principal;
    let sessions = super::session::list(state, p.user_id, p.session_hash.as_deref()).await;
    let tokens = super::tokens::list(state, p, false).await;
    match (sessions, tokens) {
        (Ok(sessions), Ok(tokens)) => html(
            StatusCode::OK,
            Page::Account {
                sessions,
                tokens,
                created,
                error,
            }
            .render(&frame),
        ),
        (Err(e), _) | (_, Err(e)) => failure(&frame, e),
    }
}

#[handler]
async fn account(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    match user(&state, req, "Account").await {
        Ok(s) => account_page(&state, &s, None, None).await,
        Err(r) => r,
    }
}

/// The new-token form.
#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    expires_in_days: String,
}

#[handler]
async fn create_token(
    state: Data<&Arc<AppState>>,
    req: &Request,
    form: poem::Result<Form<TokenForm>>,
) -> Response {
    let s = or_page!(user(&state, req, "Account").await);
    let Ok(Form(f)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error(&s.frame("Account"), "the form could not be read"),
        );
    };
    if let Err(why) = guard::form_allowed(req, &s.csrf, &f.csrf) {
        return html(
            StatusCode::FORBIDDEN,
            pages::error(&s.frame("Account"), why),
        );
    }
    let days = match f.expires_in_days.trim() {
        "" => None,
        d => match d.parse::<u32>() {
            Ok(n) if (1..=3650).contains(&n) => Some(n),
            _ => {
                let why = format!("expires in days: `{d}` is not a whole number from 1 to 3650");
                return account_page(&state, &s, None, Some(why)).await;
            }
        },
    };
    let scopes: Vec<String> = f.scopes.split_whitespace().map(str::to_string).collect();
    match super::tokens::create(&state, &s.principal, f.name.trim(), &scopes, days).await {
        Ok(t) => account_page(&state, &s, Some(t), None).await,
        Err(e) => account_page(&state, &s, None, Some(e.body().message.clone())).await,
    }
}

#[handler]
async fn revoke_token(
    state: Data<&Arc<AppState>>,
    req: &Request,
    poem::web::Path(id): poem::web::Path<String>,
    form: poem::Result<Form<CsrfForm>>,
) -> Response {
    let s = or_page!(sender(&state, req, "Account", false, &token_of(form)).await);
    let frame = s.frame("Account");
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return html(StatusCode::NOT_FOUND, pages::error(&frame, "no such token"));
    };
    // Your own tokens only here, whatever your role (admins revoke others' through
    // the API).
    let own = super::tokens::list(&state, &s.principal, false).await;
    match own {
        Ok(list) if list.iter().any(|t| t.id == id) => {}
        Ok(_) => {
            return html(
                StatusCode::NOT_FOUND,
                pages::error(&frame, "no such token of yours"),
            );
        }
        Err(e) => return failure(&frame, e),
    }
    match super::tokens::revoke(&state, &s.principal, id).await {
        Ok(()) => see_other("/account"),
        Err(e) => failure(&frame, e),
    }
}

#[handler]
async fn logout_everywhere(
    state: Data<&Arc<AppState>>,
    req: &Request,
    form: poem::Result<Form<CsrfForm>>,
) -> Response {
    let s = or_page!(sender(&state, req, "Account", false, &token_of(form)).await);
    let frame = s.frame("Account");
    match super::session::close_all(&state, s.principal.user_id).await {
        Ok(n) => {
            tracing::info!(user = %s.principal.username, sessions = n, "logged out everywhere");
            see_other_setting("/login", &super::session::cleared_cookie())
        }
        Err(e) => failure(&frame, e),
    }
}

/// How often the dashboard's stream looks at the supervisor's units.
const UNITS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The units as the dashboard's script reads them: the REST API's `Unit` objects.
fn units_json(units: Vec<crate::control::protocol::UnitStatus>) -> String {
    use poem_openapi::types::ToJSON;
    let list: Vec<super::units::Unit> = units.into_iter().map(Into::into).collect();
    list.to_json_string()
}

/// The units as Server-Sent Events (`units`: the whole list), sent at once and then
/// whenever it changes (looked at every second).
#[handler]
async fn dashboard_stream(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    or_page!(admin(&state, req, "Dashboard").await);
    let state = state.0.clone();
    let events = futures_util::stream::unfold(
        (state, String::new(), true),
        |(state, last, first)| async move {
            let mut first = first;
            loop {
                if !first {
                    tokio::time::sleep(UNITS_EVERY).await;
                }
                first = false;
                let Ok(units) = super::units::list(&state).await else {
                    continue;
                };
                let now = units_json(units);
                if now != last {
                    let event = poem::web::sse::Event::message(now.clone()).event_type("units");
                    return Some((event, (state, now, false)));
                }
            }
        },
    );
    poem::web::sse::SSE::new(events)
        .keep_alive(std::time::Duration::from_secs(15))
        .into_response()
}

/// Lines the logs page shows before the live tail takes over.
const RECENT_LINES: usize = 200;

#[handler]
async fn logs_page(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    let s = or_page!(admin(&state, req, "Logs").await);
    let frame = s.frame("Logs");
    let (channels, records) = match (
        super::units::channels(&state).await,
        super::units::recent_logs(&state, RECENT_LINES).await,
    ) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return failure(&frame, e),
    };
    html(
        StatusCode::OK,
        Page::Logs { channels, records }.render(&frame),
    )
}

#[handler]
async fn switch_channel(
    state: Data<&Arc<AppState>>,
    req: &Request,
    poem::web::Path((channel, switch)): poem::web::Path<(String, String)>,
    form: poem::Result<Form<CsrfForm>>,
) -> Response {
    let s = or_page!(sender(&state, req, "Logs", true, &token_of(form)).await);
    let frame = s.frame("Logs");
    let enabled = match switch.as_str() {
        "on" => true,
        "off" => false,
        _ => {
            return html(
                StatusCode::NOT_FOUND,
                pages::error(&frame, "a channel is switched on or off"),
            );
        }
    };
    match super::units::set_channel(&state, &channel, enabled, &s.principal.username).await {
        Ok(()) => see_other("/logs"),
        Err(e) => failure(&frame, e),
    }
}

/// `?since=SEQ` (a page's last line) when there is no `Last-Event-ID`.
#[derive(Debug, Deserialize)]
struct Since {
    since: Option<u64>,
}

/// Every unit's log lines as Server-Sent Events (`log`: a record, id its sequence;
/// `gap`: lines this follower missed). A reconnecting EventSource sends
/// `Last-Event-ID` and resumes right after it.
#[handler]
async fn logs_stream(
    state: Data<&Arc<AppState>>,
    req: &Request,
    since: poem::web::Query<Since>,
) -> Response {
    or_page!(admin(&state, req, "Logs").await);
    let resume = req
        .header("last-event-id")
        .and_then(|v| v.parse::<u64>().ok())
        .or(since.0.since);
    let rx = match super::units::follow_logs(&state, resume).await {
        Ok(rx) => rx,
        Err(e) => return failure(&Frame::anonymous("Logs"), e),
    };
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        let event = match e {
            super::units::LogEvent::Record(r) => {
                poem::web::sse::Event::message(serde_json::to_string(&r).expect("json"))
                    .event_type("log")
                    .id(r.seq.to_string())
            }
            super::units::LogEvent::Gap { missed, reason } => poem::web::sse::Event::message(
                serde_json::json!({"missed": missed, "reason": reason}).to_string(),
            )
            .event_type("gap"),
        };
        Some((event, rx))
    });
    poem::web::sse::SSE::new(events)
        .keep_alive(std::time::Duration::from_secs(15))
        .into_response()
}

/// Serves `a`, cached for a year (its name changes with its content).
fn asset(a: &'static pages::Asset) -> impl poem::Endpoint {
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
