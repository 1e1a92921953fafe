//! Signing in and out, and the signed-in user's own account: API tokens (created
//! with scopes and an expiry, the secret shown once; revoked), live sessions ("log
//! out everywhere"), and the password (changing it ends the other sessions and gives
//! this one a new id).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;

use super::frame::Frame;
use super::{Fields, Signed, failure, guard, or_page, page, see_other, see_other_setting};
use crate::api::{AppState, session, tokens};
use crate::web::error::ApiError;
use crate::web::names::Password;

#[derive(TemplateSimple)]
#[template(path = "login.stpl")]
struct Login<'a> {
    frame: &'a Frame,
    error: Option<String>,
    username: &'a str,
}

#[handler]
pub async fn index(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    match super::signed(&state, req).await {
        Ok(Some(_)) => see_other("/dashboard"),
        Ok(None) => see_other("/login"),
        Err(e) => failure(&Frame::anonymous("Unavailable"), e),
    }
}

#[handler]
pub async fn login_page(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    if let Ok(Some(_)) = super::signed(&state, req).await {
        return see_other("/dashboard");
    }
    page(Login {
        frame: &Frame::anonymous("Log in"),
        error: None,
        username: "",
    })
}

/// The client's address (what login throttling counts per).
fn address(req: &Request) -> String {
    req.remote_addr()
        .as_socket_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// The session token the request presents, if any.
fn presented(req: &Request) -> Option<String> {
    req.cookie()
        .get(crate::api::auth::SESSION_COOKIE)
        .map(|c| c.value_str().to_string())
}

#[handler]
pub async fn login(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    let frame = Frame::anonymous("Log in");
    if !guard::same_origin(req) {
        return super::html(
            StatusCode::FORBIDDEN,
            super::frame::error(&frame, guard::CROSS_SITE),
        );
    }
    let username = f.get("username");
    let opened = session::open(
        &state,
        username,
        f.get("password"),
        &address(req),
        presented(req).as_deref(),
    )
    .await;
    match opened {
        Ok(opened) => {
            tracing::info!(user = %opened.user.username, "console login");
            see_other_setting("/dashboard", &session::cookie(&opened.token))
        }
        // A refused login shows the form again with why (200, as a form with errors is
        // answered: the browser is not failing to load a page).
        Err(e @ (ApiError::TooManyRequests(..) | ApiError::Unauthorized(_))) => page(Login {
            frame: &frame,
            error: Some(e.body().message.clone()),
            username,
        }),
        Err(e) => failure(&frame, e),
    }
}

#[handler]
pub async fn logout(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    or_page!(super::sender(&state, req, "", &f).await);
    if let Some(token) = presented(req)
        && let Err(e) = session::close(&state, &token).await
    {
        return failure(&Frame::anonymous("Log out"), e);
    }
    see_other_setting("/login", &session::cleared_cookie())
}

#[derive(TemplateSimple)]
#[template(path = "account.stpl")]
struct Account<'a> {
    frame: &'a Frame,
    sessions: Vec<session::SessionInfo>,
    tokens: Vec<tokens::Token>,
    created: Option<tokens::Token>,
    error: Option<String>,
    done: Option<&'a str>,
}

/// What the last form of the account page did.
#[derive(Default)]
struct Outcome<'a> {
    created: Option<tokens::Token>,
    error: Option<String>,
    done: Option<&'a str>,
}

/// The account page of `s`, with what the last form did.
async fn account_page(state: &AppState, s: &Signed, outcome: Outcome<'_>) -> Response {
    let p = &s.principal;
    let sessions = session::list(state, p.user_id, p.session_hash.as_deref()).await;
    let tokens = tokens::list(state, p, false).await;
    match (sessions, tokens) {
        (Ok(sessions), Ok(tokens)) => page(Account {
            frame: &s.frame("Account", "account"),
            sessions,
            tokens,
            created: outcome.created,
            error: outcome.error,
            done: outcome.done,
        }),
        (Err(e), _) | (_, Err(e)) => s.failure("account", e),
    }
}

#[handler]
pub async fn account(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let done = (q.get("done") == "password")
        .then_some("Password changed: your other sessions have ended, and this one has a new id.");
    let outcome = Outcome {
        done,
        ..Outcome::default()
    };
    account_page(&state, &s, outcome).await
}

#[handler]
pub async fn create_token(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    let s = or_page!(super::sender(&state, req, "account", &f).await);
    let refused = |why: String| Outcome {
        error: Some(why),
        ..Outcome::default()
    };
    let days = match f.opt("expires_in_days") {
        None => None,
        Some(d) => match d.parse::<u32>() {
            Ok(n) if (1..=3650).contains(&n) => Some(n),
            _ => {
                let why = format!("expires in days: `{d}` is not a whole number from 1 to 3650");
                return account_page(&state, &s, refused(why)).await;
            }
        },
    };
    let scopes: Vec<String> = f
        .get("scopes")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    match tokens::create(&state, &s.principal, f.get("name").trim(), &scopes, days).await {
        Ok(t) => {
            let outcome = Outcome {
                created: Some(t),
                ..Outcome::default()
            };
            account_page(&state, &s, outcome).await
        }
        Err(e) => account_page(&state, &s, refused(super::reasons(&e).join("; "))).await,
    }
}

#[handler]
pub async fn revoke_token(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "account", &f).await);
    let id = or_page!(s.id("account", &id, "token"));
    // Your own tokens only here, whatever your role (admins revoke others' through
    // the API).
    match tokens::list(&state, &s.principal, false).await {
        Ok(list) if list.iter().any(|t| t.id == id) => {}
        Ok(_) => return s.failure("account", ApiError::not_found("no such token of yours")),
        Err(e) => return s.failure("account", e),
    }
    match tokens::revoke(&state, &s.principal, id).await {
        Ok(()) => see_other("/account"),
        Err(e) => s.failure("account", e),
    }
}

#[handler]
pub async fn logout_everywhere(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    let s = or_page!(super::sender(&state, req, "account", &f).await);
    match session::close_all(&state, s.principal.user_id).await {
        Ok(n) => {
            tracing::info!(user = %s.principal.username, sessions = n, "logged out everywhere");
            see_other_setting("/login", &session::cleared_cookie())
        }
        Err(e) => s.failure("account", e),
    }
}

/// The password form: the other sessions end, and this one gets a new id.
#[handler]
pub async fn change_password(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    let s = or_page!(super::sender(&state, req, "account", &f).await);
    let refused = |why: String| Outcome {
        error: Some(why),
        ..Outcome::default()
    };
    let new = match Password::new(f.get("new_password")) {
        Ok(p) => p,
        Err(why) => return account_page(&state, &s, refused(why)).await,
    };
    if f.get("new_password") != f.get("repeat_password") {
        let why = "the new password and its repetition differ".to_string();
        return account_page(&state, &s, refused(why)).await;
    }
    let changed = crate::api::users::change_own_password(
        &state,
        &s.principal,
        f.get("current_password"),
        &new,
    )
    .await;
    if let Err(e) = changed {
        return account_page(&state, &s, refused(super::reasons(&e).join("; "))).await;
    }
    let user = match crate::api::users::fetch(&state, s.principal.user_id).await {
        Ok(u) => u,
        Err(e) => return s.failure("account", e),
    };
    match session::issue(&state, user, presented(req).as_deref()).await {
        Ok(opened) => see_other_setting("/account?done=password", &session::cookie(&opened.token)),
        Err(e) => s.failure("account", e),
    }
}
