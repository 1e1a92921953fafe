//! Users (admins): the list, a new user, a user's role and password (a change ends
//! that user's sessions; an admin who changes their own account carries on under a
//! new session id), and deleting one after a confirmation. Never the last admin.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;

use super::frame::Frame;
use super::system::Confirm;
use super::{Fields, Signed, admin, or_page, page, see_other, see_other_setting, urlencoded};
use crate::api::users::{self as domain, Change, User};
use crate::api::{AppState, session};
use crate::model::access::Role;
use crate::web::names::{Name, Password};

#[derive(TemplateSimple)]
#[template(path = "users.stpl")]
struct Users<'a> {
    frame: &'a Frame,
    users: Vec<User>,
    username: String,
    role: String,
    errors: Vec<String>,
    done: Option<&'a str>,
}

async fn users_page(
    state: &AppState,
    s: &Signed,
    username: String,
    role: String,
    errors: Vec<String>,
    done: Option<&str>,
) -> Response {
    match domain::list(state, &s.principal).await {
        Ok(users) => page(Users {
            frame: &s.frame("Users", "users"),
            users,
            username,
            role,
            errors,
            done,
        }),
        Err(e) => s.failure("users", e),
    }
}

#[handler]
pub async fn list(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(admin(&state, req, "users").await);
    users_page(
        &state,
        &s,
        String::new(),
        "viewer".into(),
        vec![],
        q.opt("done"),
    )
    .await
}

/// The role named in a form.
fn role_of(f: &Fields) -> Result<Role, String> {
    match f.get("role") {
        "admin" => Ok(Role::Admin),
        "editor" => Ok(Role::Editor),
        "viewer" => Ok(Role::Viewer),
        other => Err(format!("role: `{other}` is not admin, editor or viewer")),
    }
}

#[handler]
pub async fn create(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    or_page!(admin(&state, req, "users").await);
    let s = or_page!(super::sender(&state, req, "users", &f).await);
    let username = f.get("username").trim().to_string();
    let mut errors = vec![];
    let name = Name::new(username.clone()).map_err(|e| errors.push(format!("user name: {e}")));
    let password = Password::new(f.get("password")).map_err(|e| errors.push(e));
    let role = role_of(&f).map_err(|e| errors.push(e));
    if let (Ok(name), Ok(password), Ok(role)) = (name, password, role) {
        match domain::create(&state, &s.principal, &name, &password, role).await {
            Ok(u) => {
                let what = format!("user {} created ({})", u.username, u.role.as_str());
                return super::done("/users", &what);
            }
            Err(e) => match super::refused(e) {
                Ok((_, why)) => errors = why,
                Err(e) => return s.failure("users", e),
            },
        }
    }
    let role = f.get("role").to_string();
    users_page(&state, &s, username, role, errors, None).await
}

#[derive(TemplateSimple)]
#[template(path = "user.stpl")]
struct UserPage<'a> {
    frame: &'a Frame,
    user: User,
    errors: Vec<String>,
}

async fn user_of(state: &AppState, s: &Signed, id: &str) -> Result<User, Response> {
    let id = s.id("users", id, "user")?;
    domain::fetch(state, id)
        .await
        .map_err(|e| s.failure("users", e))
}

#[handler]
pub async fn edit_page(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
) -> Response {
    let s = or_page!(admin(&state, req, "users").await);
    let user = or_page!(user_of(&state, &s, &id).await);
    page(UserPage {
        frame: &s.frame(format!("User {}", user.username), "users"),
        user,
        errors: vec![],
    })
}

#[handler]
pub async fn change(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    or_page!(admin(&state, req, "users").await);
    let s = or_page!(super::sender(&state, req, "users", &f).await);
    let user = or_page!(user_of(&state, &s, &id).await);
    let mut errors = vec![];
    let role = role_of(&f).map_err(|e| errors.push(e)).ok();
    let password = match f.opt("password") {
        None => None,
        Some(p) => Password::new(p).map_err(|e| errors.push(e)).ok(),
    };
    let expected = DateTime::parse_from_rfc3339(f.get("seen"))
        .ok()
        .map(|t| t.with_timezone(&Utc));
    let mut status = poem::http::StatusCode::OK;
    if errors.is_empty() {
        let change = Change {
            role,
            password: password.as_deref(),
            expected,
        };
        match domain::update(&state, &s.principal, user.id, change).await {
            Ok(u) => {
                let what = format!("user {} is {} now", u.username, u.role.as_str());
                let to = format!("/users?done={}", urlencoded(&what));
                // Their sessions ended: an admin who changed their own account
                // carries on under a new session id.
                if u.id != s.principal.user_id {
                    return see_other(&to);
                }
                return match session::issue(&state, u, None).await {
                    Ok(o) => see_other_setting(&to, &session::cookie(&o.token)),
                    Err(e) => s.failure("users", e),
                };
            }
            Err(e) => match super::refused(e) {
                Ok((st, why)) => (status, errors) = (st, why),
                Err(e) => return s.failure("users", e),
            },
        }
    }
    super::page_with(
        status,
        UserPage {
            frame: &s.frame(format!("User {}", user.username), "users"),
            user,
            errors,
        },
    )
}

#[handler]
pub async fn confirm_delete(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
) -> Response {
    let s = or_page!(admin(&state, req, "users").await);
    let user = or_page!(user_of(&state, &s, &id).await);
    let frame = s.frame(format!("Delete {}", user.username), "users");
    let mut c = Confirm::new(
        &frame,
        format!("Delete the user {}?", user.username),
        format!("/users/{id}/delete"),
        format!("Delete {}", user.username),
    );
    c.alone = "Their sessions and API tokens end; files they uploaded stay.".into();
    c.cancel = format!("/users/{id}");
    page(c)
}

#[handler]
pub async fn delete(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(id): Path<String>,
    f: Fields,
) -> Response {
    or_page!(admin(&state, req, "users").await);
    let s = or_page!(super::sender(&state, req, "users", &f).await);
    let user = or_page!(user_of(&state, &s, &id).await);
    match domain::delete(&state, &s.principal, user.id).await {
        Ok(u) => super::done("/users", &format!("user {} deleted", u.username)),
        Err(e) => s.failure("users", e),
    }
}
