//! The web console on the shared api stack: sessions and the supervisor's pages
//! ([`sessions`]), every page for every role and every form against forgery
//! ([`roles`]), and the forms' rules: stale edits refused, fixes checked, sessions
//! rotated ([`forms`]).

mod forms;
mod roles;
mod sessions;

use crate::helpers::http;

/// A header's value in a response head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The session token a login set, from its `Set-Cookie`.
pub fn session_of(head: &str) -> String {
    let c = header(head, "set-cookie").expect("a Set-Cookie");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    c.split(';')
        .next()
        .unwrap()
        .strip_prefix("tmidb_session=")
        .expect("the session cookie")
        .to_string()
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// A form POST: (status, head, body as text).
pub fn post(
    port: u16,
    path: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    form: &str,
) -> (u16, String, String) {
    let c = cookie.map(|t| format!("tmidb_session={t}"));
    let mut h = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(c) = &c {
        h.push(("Cookie", c.as_str()));
    }
    h.extend_from_slice(extra);
    let (s, head, body) = http(port, "POST", path, &h, form.as_bytes());
    (s, head, String::from_utf8_lossy(&body).into_owned())
}

/// A GET with the session cookie: (status, head, body as text).
pub fn get(port: u16, path: &str, cookie: Option<&str>) -> (u16, String, String) {
    let c = cookie.map(|t| format!("tmidb_session={t}"));
    let h: Vec<(&str, &str)> = c.iter().map(|c| ("Cookie", c.as_str())).collect();
    let (s, head, body) = http(port, "GET", path, &h, b"");
    (s, head, String::from_utf8_lossy(&body).into_owned())
}

pub fn form_login(user: &str, password: &str) -> String {
    format!(
        "username={}&password={}",
        urlencode(user),
        urlencode(password)
    )
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A signed-in browser: its session cookie and CSRF token.
pub struct Browser {
    /// The session token (the cookie's value).
    pub session: String,
    /// The session's CSRF token, as its forms carry it.
    pub csrf: String,
}

impl Browser {
    /// Logs `user` in through the console's form.
    pub fn login(port: u16, user: &str, password: &str) -> Browser {
        let origin = format!("http://127.0.0.1:{port}");
        let (s, head, page) = post(
            port,
            "/login",
            None,
            &[("Origin", origin.as_str())],
            &form_login(user, password),
        );
        assert_eq!(s, 303, "login {user}: {page}");
        let session = session_of(&head);
        let (_, _, account) = get(port, "/account", Some(&session));
        Browser {
            csrf: csrf_of(&account),
            session,
        }
    }

    /// A GET: (status, head, body).
    pub fn get(&self, port: u16, path: &str) -> (u16, String, String) {
        get(port, path, Some(&self.session))
    }

    /// A same-origin form POST carrying the session's token before `form`.
    pub fn post(&self, port: u16, path: &str, form: &str) -> (u16, String, String) {
        let origin = format!("http://127.0.0.1:{port}");
        let body = if form.is_empty() {
            format!("csrf={}", self.csrf)
        } else {
            format!("csrf={}&{form}", self.csrf)
        };
        post(
            port,
            path,
            Some(&self.session),
            &[("Origin", origin.as_str())],
            &body,
        )
    }
}

/// A user of `role` named `name` (created through the REST API if missing), signed
/// in through the console.
pub fn user(api: &crate::helpers::ApiStack, name: &str, role: &str) -> Browser {
    let admin = format!("Bearer {}", api.admin());
    let password = format!("{name}-password-1");
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/users",
        &[("Authorization", &admin)],
        Some(&serde_json::json!({"username": name, "password": password, "role": role})),
    );
    assert!(s == 201 || s == 409, "{s} {v}");
    Browser::login(api.port, name, &password)
}
