//! Sessions, headers, escaping at login, and the supervisor's pages (units, logs,
//! account) on the shared api stack.

use serde_json::json;

use super::{csrf_of, form_login, get, header, post, session_of};
use crate::helpers::api_stack;

#[test]
fn console_pages_sessions_headers_and_cross_site_checks() {
    let api = api_stack();
    let port = api.port;

    // A stranger is sent to the login page; every console answer carries the headers.
    let (s, head, _) = get(port, "/", None);
    assert_eq!(
        (s, header(&head, "location")),
        (303, Some("/login")),
        "{head}"
    );
    let (s, head, page) = get(port, "/login", None);
    assert_eq!(s, 200);
    let csp = header(&head, "content-security-policy").expect("a CSP");
    for part in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert!(
        page.contains("<form method=\"post\" action=\"/login\""),
        "{page}"
    );
    // The stylesheet is served under its hashed name, cached for a year.
    let css = page
        .split("href=\"")
        .find_map(|p| p.split('"').next().filter(|h| h.ends_with(".css")))
        .expect("a stylesheet link")
        .to_string();
    let (s, head, _) = get(port, &css, None);
    assert_eq!(s, 200, "{css}");
    assert!(header(&head, "cache-control").is_some_and(|c| c.contains("immutable")));
    assert!(header(&head, "content-type").is_some_and(|c| c.starts_with("text/css")));
    let (s, head, page) = get(port, "/no-such-page", None);
    assert_eq!(s, 404);
    assert!(header(&head, "content-type").is_some_and(|c| c.starts_with("text/html")));
    assert!(header(&head, "content-security-policy").is_some());
    assert!(page.contains("no such page"), "{page}");

    // A wrong password: the form again with why, and the name tried comes back escaped.
    let hostile = "<script>alert(\"x\")</script>";
    let (s, _, page) = post(
        port,
        "/login",
        None,
        &[],
        &form_login(hostile, "wrong-password"),
    );
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("wrong user name or password"), "{page}");
    assert!(!page.contains("<script>alert"), "unescaped: {page}");
    assert!(
        page.contains("&lt;script&gt;alert(&quot;x&quot;)"),
        "{page}"
    );
    // A login form from another site is refused, and sets no cookie.
    let good = form_login("admin", &api.admin_password);
    for foreign in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (s, head, _) = post(port, "/login", None, &[foreign], &good);
        assert_eq!(s, 403, "{foreign:?}");
        assert!(header(&head, "set-cookie").is_none());
    }

    // Logging in sets a session cookie; logging in again with it rotates the id and
    // ends the first session.
    let origin = format!("http://127.0.0.1:{port}");
    let same = [("Origin", origin.as_str())];
    let (s, head, _) = post(port, "/login", None, &same, &good);
    assert_eq!(
        (s, header(&head, "location")),
        (303, Some("/dashboard")),
        "{head}"
    );
    let first = session_of(&head);
    let (s, head, _) = post(port, "/login", Some(&first), &same, &good);
    assert_eq!(s, 303);
    let session = session_of(&head);
    assert_ne!(first, session, "the session id changes at login");
    assert_eq!(
        header(&get(port, "/dashboard", Some(&first)).1, "location"),
        Some("/login"),
        "the session presented at login is over"
    );

    // The admin's dashboard lists every unit, live from the supervisor.
    let (s, head, page) = get(port, "/dashboard", Some(&session));
    assert_eq!(s, 200, "{page}");
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    for unit in ["postgresql", "migrate", "api", "seaweedfs"] {
        assert!(
            page.contains(&format!(
                "<th scope=\"row\"><a href=\"/units/{unit}\">{unit}</a></th>"
            )),
            "{unit}: {page}"
        );
    }
    assert!(page.contains("state-ready"), "{page}");
    let csrf = csrf_of(&page);

    // A viewer signs in too, and sees no units (the REST API shows them to admins).
    let admin = format!("Bearer {}", api.admin());
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/users",
        &[("Authorization", &admin)],
        Some(&json!({"username": "console-viewer", "password": "viewer-password-1", "role": "viewer"})),
    );
    assert!(s == 201 || s == 409, "{s} {v}");
    let (s, head, _) = post(
        port,
        "/login",
        None,
        &same,
        &form_login("console-viewer", "viewer-password-1"),
    );
    assert_eq!(s, 303);
    let viewer = session_of(&head);
    let (s, _, page) = get(port, "/dashboard", Some(&viewer));
    assert_eq!(s, 200);
    assert!(page.contains("console-viewer (viewer)"), "{page}");
    assert!(!page.contains("<table class=\"units\""), "{page}");

    let viewer_csrf = csrf_of(&page);

    // Units: actions for admins; a stop or restart first says what else it takes along
    // (what requires the unit, by the supervisor's rule).
    let (s, _, page) = get(port, "/units", Some(&session));
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("href=\"/units/postgresql/start\""), "{page}");
    assert!(
        page.contains("href=\"/units/postgresql/restart\""),
        "{page}"
    );
    let (s, _, page) = get(port, "/units/postgresql/restart", Some(&session));
    assert_eq!(s, 200, "{page}");
    for also in ["migrate", "api"] {
        assert!(
            page.contains(&format!("<li><code>{also}</code></li>")),
            "{also}: {page}"
        );
    }
    assert!(!page.contains("<li><code>nats</code></li>"), "{page}");
    assert_eq!(get(port, "/units/nope/restart", Some(&session)).0, 404);
    // Starting a running unit changes nothing, and goes through the supervisor.
    let (s, _, _) = post(
        port,
        "/units/postgresql/start",
        Some(&session),
        &same,
        "csrf=forged",
    );
    assert_eq!(s, 403);
    let (s, head, _) = post(
        port,
        "/units/postgresql/start",
        Some(&session),
        &same,
        &format!("csrf={csrf}"),
    );
    assert_eq!(s, 303, "{head}");
    let back = header(&head, "location").unwrap().to_string();
    assert!(back.starts_with("/units?done="), "{back}");
    assert!(
        get(port, &back, Some(&session))
            .2
            .contains("postgresql: start done")
    );
    // Logs: the channel switches and the last lines; a forged switch is refused.
    let (s, _, page) = get(port, "/logs", Some(&session));
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("Switch postgresql off"), "{page}");
    assert!(page.contains("<ol id=\"log-lines\""), "{page}");
    assert!(page.contains("<script src=\"/assets/logs-"), "{page}");
    let (s, _, _) = post(
        port,
        "/logs/channels/postgresql/off",
        Some(&session),
        &same,
        "csrf=forged",
    );
    assert_eq!(s, 403);
    assert_eq!(get(port, "/logs", Some(&viewer)).0, 403);
    assert_eq!(get(port, "/logs/stream", Some(&viewer)).0, 403);
    // A viewer sees no units page, and a forged stop is refused.
    assert_eq!(get(port, "/units", Some(&viewer)).0, 403);
    let (s, _, _) = post(
        port,
        "/units/postgresql/stop",
        Some(&viewer),
        &same,
        &format!("csrf={viewer_csrf}"),
    );
    assert_eq!(s, 403);
    let (_, _, page) = get(port, "/dashboard", Some(&session));
    let row = page
        .split("<tr data-unit=\"postgresql\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect("postgresql's row");
    assert!(row.contains("state-ready"), "postgresql still ready: {row}");

    // Tokens: created on the account page (the secret shown this once, and it works
    // on the REST API), then revoked there.
    let (s, _, page) = post(
        port,
        "/account/tokens",
        Some(&session),
        &same,
        &format!("csrf={csrf}&name=console-token&scopes=read%3A*&expires_in_days=30"),
    );
    assert_eq!(s, 200, "{page}");
    let marker = "<code class=\"secret\">";
    let at = page.find(marker).expect("the secret") + marker.len();
    let secret = page[at..].split('<').next().unwrap().to_string();
    assert!(secret.starts_with("tmid_"), "{secret}");
    let me = |t: &str| {
        api.call(
            "GET",
            "/api/v1/auth/me",
            &[("Authorization", &format!("Bearer {t}"))],
            None,
        )
        .0
    };
    assert_eq!(me(&secret), 200);
    let (_, _, page) = get(port, "/account", Some(&session));
    assert!(!page.contains(&secret), "the secret is shown once");
    let button = page
        .find("Revoke console-token</button>")
        .expect("its revoke form");
    let marker = "action=\"/account/tokens/";
    let id_at = page[..button].rfind(marker).expect("its form") + marker.len();
    let id = page[id_at..].split('/').next().unwrap().to_string();
    let (s, _, _) = post(
        port,
        &format!("/account/tokens/{id}/revoke"),
        Some(&session),
        &same,
        &format!("csrf={csrf}"),
    );
    assert_eq!(s, 303);
    assert_eq!(me(&secret), 401, "revoked");
    // A viewer cannot mint a token above their role; the form says why.
    let (s, _, page) = post(
        port,
        "/account/tokens",
        Some(&viewer),
        &same,
        &format!("csrf={viewer_csrf}&name=too-much&scopes=write%3A*"),
    );
    assert_eq!(s, 200);
    assert!(
        page.contains("a viewer cannot hold the scope `write:*`"),
        "{page}"
    );
    let (_, _, page) = post(
        port,
        "/account/tokens",
        Some(&viewer),
        &same,
        &format!("csrf={viewer_csrf}&name=x&scopes=read%3A*&expires_in_days=soon"),
    );
    assert!(page.contains("`soon` is not a whole number"), "{page}");

    // The viewer's account lists their sessions; "log out everywhere" ends them all.
    let (_, head, _) = post(
        port,
        "/login",
        None,
        &same,
        &form_login("console-viewer", "viewer-password-1"),
    );
    let other = session_of(&head);
    let (s, _, page) = get(port, "/account", Some(&viewer));
    assert_eq!(s, 200, "{page}");
    assert!(
        page.matches("<tr><td>").count() >= 2,
        "two sessions at least: {page}"
    );
    assert_eq!(page.matches("this session").count(), 1, "{page}");
    let (s, _, _) = post(
        port,
        "/account/logout-everywhere",
        Some(&viewer),
        &same,
        "csrf=forged",
    );
    assert_eq!(s, 403);
    let (s, head, _) = post(
        port,
        "/account/logout-everywhere",
        Some(&viewer),
        &same,
        &format!("csrf={viewer_csrf}"),
    );
    assert_eq!((s, header(&head, "location")), (303, Some("/login")));
    for gone in [&viewer, &other] {
        assert_eq!(
            header(&get(port, "/dashboard", Some(gone)).1, "location"),
            Some("/login")
        );
    }

    // Log out: refused without the session's token or from another site; then done,
    // and the session is refused from then on.
    let (s, _, page) = post(port, "/logout", Some(&session), &same, "csrf=forged");
    assert_eq!(s, 403, "{page}");
    assert!(page.contains("security token"), "{page}");
    let with_token = format!("csrf={csrf}");
    let (s, _, _) = post(
        port,
        "/logout",
        Some(&session),
        &[("Origin", "http://evil.example")],
        &with_token,
    );
    assert_eq!(s, 403);
    let (s, head, _) = post(port, "/logout", Some(&session), &same, &with_token);
    assert_eq!((s, header(&head, "location")), (303, Some("/login")));
    assert!(header(&head, "set-cookie").is_some_and(|c| c.contains("Max-Age=0")));
    assert_eq!(
        header(&get(port, "/dashboard", Some(&session)).1, "location"),
        Some("/login")
    );
    // The REST API answers as before beside the console.
    let (s, head, _) = get(port, "/api/v1/no-such-thing", None);
    assert_eq!(s, 404);
    assert!(
        header(&head, "content-type").is_some_and(|c| c.contains("json")),
        "{head}"
    );
}
