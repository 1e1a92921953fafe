//! Credentials, the one JSON error shape, sessions, login throttling and API tokens.

use serde_json::{Value, json};

use super::{bearer, psql};
use crate::helpers::api_stack;

#[test]
fn every_protected_route_needs_credentials() {
    let api = api_stack();
    let spec: Value = serde_json::from_str(include_str!("../../openapi/tmidb.json")).unwrap();
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("security").is_none() {
                continue;
            }
            let concrete = path
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{name}", "weather");
            let (status, _, body) =
                api.call(&method.to_uppercase(), &concrete, &[], Some(&json!({})));
            assert_eq!(status, 401, "{method} {path} without credentials: {body}");
            let (status, _, _) = api.call(
                &method.to_uppercase(),
                &concrete,
                &[("Authorization", "Bearer tmid_forged")],
                None,
            );
            assert_eq!(status, 401, "{method} {path} with a forged token");
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
    // The open ones stay open.
    assert_eq!(api.call("GET", "/healthz", &[], None).0, 200);
    assert_eq!(api.call("GET", "/readyz", &[], None).0, 200);
    assert_eq!(api.call("GET", "/api/openapi.json", &[], None).0, 200);
}

/// Every error, whoever produced it (a route, the router, a body or query parser, the
/// security scheme), is the documented JSON shape with `errors` present.
#[test]
fn every_error_is_the_json_error_shape() {
    let api = api_stack();
    let admin = bearer(&api.admin());
    let raw = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let (status, head, b) = crate::helpers::http(api.port, method, path, headers, body);
        let v: Value = serde_json::from_slice(&b).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: not JSON: {head} {}",
                String::from_utf8_lossy(&b)
            )
        });
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{method} {path}: {head}"
        );
        assert!(
            v["code"].is_string() && v["message"].is_string() && v["errors"].is_array(),
            "{method} {path}: {v}"
        );
        (status, head, v)
    };
    let (s, _, v) = raw("GET", "/api/v1/categories", &[], b"");
    assert_eq!(s, 401);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{v}"
    );
    let (s, _, v) = raw(
        "GET",
        "/api/v1/categories",
        &[("Authorization", "Bearer tmid_forged")],
        b"",
    );
    assert_eq!(
        (s, v["message"].as_str()),
        (401, Some("unknown, revoked or expired token"))
    );
    let (s, _, _) = raw(
        "GET",
        "/api/v1/categories",
        &[("Authorization", "Basic eDp5")],
        b"",
    );
    assert_eq!(s, 401);
    let (s, _, v) = raw("GET", "/api/v1/no-such-thing", &[], b"");
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")));
    let (s, head, _) = raw(
        "PATCH",
        "/api/v1/categories",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(s, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head, post"),
        "{head}"
    );
    let login = br#"{"username":"admin","password":"x"}"#;
    let (s, _, _) = raw("POST", "/api/v1/auth/login", &[], login);
    assert_eq!(s, 415, "no Content-Type");
    let json = ("Content-Type", "application/json");
    let (s, _, _) = raw("POST", "/api/v1/auth/login", &[json], b"{not json");
    assert_eq!(s, 400);
    let (s, _, v) = raw(
        "POST",
        "/api/v1/auth/login",
        &[json],
        br#"{"username":"ad\u0000min","password":"x"}"#,
    );
    assert_eq!(s, 400);
    assert!(
        v["message"].as_str().unwrap().contains("`/username`"),
        "{v}"
    );
    let (s, _, _) = raw(
        "POST",
        "/api/v1/categories",
        &[json, ("Authorization", &admin)],
        br#"{"name":"x","fields":[{"name":"a","type":"complex"}]}"#,
    );
    assert_eq!(s, 400, "an unknown field type");
    let (s, _, _) = raw(
        "GET",
        "/api/v1/categories/x/records?from=2026-01-01T00:00:00+01:00",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(s, 400, "an unencoded + in a time");
    let (s, _, _) = raw(
        "GET",
        "/api/v1/users/not-a-uuid",
        &[("Authorization", &admin)],
        b"",
    );
    assert!(s == 400 || s == 404, "{s}");
    let (s, _, v) = raw(
        "GET",
        "/api/v1/categories/nope",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!((s, v["errors"].clone()), (404, json!([])));
    let (s, _, _) = raw(
        "GET",
        "/api/v1/categories?x=%00",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(s, 400, "a NUL in the query");
    let (s, _, _) = raw(
        "POST",
        "/api/v1/dead-letters/replay?category=nope",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(s, 404, "replaying into a category that does not exist");
}

#[test]
fn login_sessions_cookies_csrf_and_roles() {
    let api = api_stack();
    let admin = api.admin();
    let (status, _, me) = api.call(
        "GET",
        "/api/v1/auth/me",
        &[("Authorization", &bearer(&admin))],
        None,
    );
    assert_eq!(
        (status, me["username"].as_str(), me["role"].as_str()),
        (200, Some("admin"), Some("admin"))
    );

    // A viewer cannot do admin things: 403, not 401.
    let body = json!({"username": "vera", "password": "viewer-password-1", "role": "viewer"});
    let (status, _, created) = api.call(
        "POST",
        "/api/v1/users",
        &[("Authorization", &bearer(&admin))],
        Some(&body),
    );
    assert_eq!(status, 201, "{created}");
    let (status, _, dup) = api.call(
        "POST",
        "/api/v1/users",
        &[("Authorization", &bearer(&admin))],
        Some(&body),
    );
    assert_eq!(status, 409, "{dup}");
    let (vtok, vcsrf, vcookie) = api.login("vera", "viewer-password-1");
    let (status, _, err) = api.call(
        "GET",
        "/api/v1/users",
        &[("Authorization", &bearer(&vtok))],
        None,
    );
    assert_eq!(status, 403, "{err}");
    assert!(err["message"].as_str().unwrap().contains("admin role"));

    // The cookie: HttpOnly, SameSite=Strict; reads work, writes need the CSRF header.
    assert!(
        vcookie.contains("HttpOnly") && vcookie.contains("SameSite=Strict"),
        "{vcookie}"
    );
    let cookie = vcookie.split(';').next().unwrap().to_string();
    assert_eq!(
        api.call("GET", "/api/v1/auth/me", &[("Cookie", &cookie)], None)
            .0,
        200
    );
    let pw = json!({"current_password": "viewer-password-1", "new_password": "viewer-password-2"});
    let (status, _, err) = api.call(
        "PUT",
        "/api/v1/users/me/password",
        &[("Cookie", &cookie)],
        Some(&pw),
    );
    assert_eq!(status, 403, "{err}");
    assert!(err["message"].as_str().unwrap().contains("X-CSRF-Token"));
    let (status, _, err) = api.call(
        "PUT",
        "/api/v1/users/me/password",
        &[("Cookie", &cookie), ("X-CSRF-Token", "wrong")],
        Some(&pw),
    );
    assert_eq!(status, 403, "{err}");
    let (other, _, _) = api.login("vera", "viewer-password-1");
    let (status, _, _) = api.call(
        "PUT",
        "/api/v1/users/me/password",
        &[("Cookie", &cookie), ("X-CSRF-Token", &vcsrf)],
        Some(&pw),
    );
    assert_eq!(status, 204);
    api.login("vera", "viewer-password-2");
    // The change ends the user's other sessions, not the one that made it.
    let me = |t: &str| {
        api.call(
            "GET",
            "/api/v1/auth/me",
            &[("Authorization", &bearer(t))],
            None,
        )
        .0
    };
    assert_eq!((me(&other), me(&vtok)), (401, 200));

    // Logout ends the session.
    let (status, head, _) = api.call(
        "POST",
        "/api/v1/auth/logout",
        &[("Authorization", &bearer(&vtok))],
        None,
    );
    assert_eq!(status, 204);
    assert!(head.to_ascii_lowercase().contains("max-age=0"));
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/auth/me",
            &[("Authorization", &bearer(&vtok))],
            None
        )
        .0,
        401
    );

    // Weak passwords and bad names are refused with the reason.
    let (status, _, err) = api.call(
        "POST",
        "/api/v1/users",
        &[("Authorization", &bearer(&admin))],
        Some(&json!({"username": "x", "password": "short", "role": "viewer"})),
    );
    assert_eq!(status, 400);
    assert!(
        err["message"].as_str().unwrap().contains("10 characters"),
        "{err}"
    );
    let (status, _, _) = api.call(
        "POST",
        "/api/v1/users",
        &[("Authorization", &bearer(&admin))],
        Some(&json!({"username": "Bad Name", "password": "long-enough-1", "role": "viewer"})),
    );
    assert_eq!(status, 400);
    // The last admin cannot be demoted.
    let (_, _, me) = api.call(
        "GET",
        "/api/v1/auth/me",
        &[("Authorization", &bearer(&admin))],
        None,
    );
    let path = format!("/api/v1/users/{}", me["id"].as_str().unwrap());
    let (status, _, _) = api.call(
        "PATCH",
        &path,
        &[("Authorization", &bearer(&admin))],
        Some(&json!({"role": "viewer"})),
    );
    assert_eq!(status, 409);
}

#[test]
fn login_throttling_trips_per_user() {
    let api = api_stack();
    let admin = api.admin();
    let body =
        json!({"username": "throttled", "password": "throttle-password-1", "role": "viewer"});
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/users",
            &[("Authorization", &bearer(&admin))],
            Some(&body)
        )
        .0,
        201
    );
    for _ in 0..5 {
        let (status, _, _) = api.call(
            "POST",
            "/api/v1/auth/login",
            &[],
            Some(&json!({"username": "throttled", "password": "nope"})),
        );
        assert_eq!(status, 401);
    }
    let (status, head, err) = api.call(
        "POST",
        "/api/v1/auth/login",
        &[],
        Some(&json!({"username": "throttled", "password": "throttle-password-1"})),
    );
    assert_eq!(status, 429, "{err}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    // Other users are not locked out by it.
    api.login("admin", &api.admin_password);
}

#[test]
fn api_tokens_scopes_expiry_and_revocation() {
    let api = api_stack();
    let admin = api.admin();
    let (status, _, t) = api.call(
        "POST",
        "/api/v1/tokens",
        &[("Authorization", &bearer(&admin))],
        Some(&json!({"name": "reader", "scopes": ["read:weather"]})),
    );
    assert_eq!(status, 201, "{t}");
    let secret = t["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tmid_"));
    // What a caller cannot hold is refused: an expiry outside 1..3650 days (0 made an
    // already-expired token, 100000000 a 500), a scope beyond the role.
    let admin_h = [("Authorization", bearer(&admin))];
    let admin_h: Vec<(&str, &str)> = admin_h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for days in [0, 3651, 100_000_000] {
        let body = json!({"name": "t", "scopes": ["read:weather"], "expires_in_days": days});
        let (status, _, e) = api.call("POST", "/api/v1/tokens", &admin_h, Some(&body));
        assert_eq!(status, 400, "{days} days: {e}");
    }
    let vb = json!({"username": "tokviewer", "password": "viewer-password-1", "role": "viewer"});
    assert_eq!(
        api.call("POST", "/api/v1/users", &admin_h, Some(&vb)).0,
        201
    );
    let (vt, _, _) = api.login("tokviewer", "viewer-password-1");
    let vh = [("Authorization", bearer(&vt))];
    let vh: Vec<(&str, &str)> = vh.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for scope in ["admin", "write:weather"] {
        let body = json!({"name": "t", "scopes": [scope]});
        let (status, _, e) = api.call("POST", "/api/v1/tokens", &vh, Some(&body));
        assert_eq!(status, 403, "a viewer asking for {scope}: {e}");
    }
    let body = json!({"name": "t", "scopes": ["read:weather"]});
    assert_eq!(api.call("POST", "/api/v1/tokens", &vh, Some(&body)).0, 201);
    // A page of 0 records is not a request for one.
    let (status, _, _) = api.call(
        "GET",
        "/api/v1/categories/weather/records?limit=0",
        &admin_h,
        None,
    );
    assert_eq!(status, 400);
    // Scoped down: an admin's read token cannot list users.
    let (status, _, _) = api.call(
        "GET",
        "/api/v1/users",
        &[("Authorization", &bearer(&secret))],
        None,
    );
    assert_eq!(status, 403);
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/auth/me",
            &[("Authorization", &bearer(&secret))],
            None
        )
        .0,
        200
    );
    // Listed without the secret, with last use recorded.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (_, _, list) = api.call(
        "GET",
        "/api/v1/tokens",
        &[("Authorization", &bearer(&admin))],
        None,
    );
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == t["id"])
        .unwrap()
        .clone();
    assert!(mine.get("token").is_none(), "{mine}");
    assert!(mine["last_used_at"].is_string(), "{mine}");
    // Bad scopes are refused; tokens cannot mint tokens.
    let (status, _, err) = api.call(
        "POST",
        "/api/v1/tokens",
        &[("Authorization", &bearer(&admin))],
        Some(&json!({"name": "x", "scopes": ["drop:all"]})),
    );
    assert_eq!(status, 400, "{err}");
    let (status, _, _) = api.call(
        "POST",
        "/api/v1/tokens",
        &[("Authorization", &bearer(&secret))],
        Some(&json!({"name": "x", "scopes": ["admin"]})),
    );
    assert_eq!(status, 403);
    // Revoked: 401 from then on.
    let path = format!("/api/v1/tokens/{}", t["id"].as_str().unwrap());
    assert_eq!(
        api.call("DELETE", &path, &[("Authorization", &bearer(&admin))], None)
            .0,
        204
    );
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/auth/me",
            &[("Authorization", &bearer(&secret))],
            None
        )
        .0,
        401
    );
    // The stored form is a hash, never the secret.
    let stored = psql(api, "SELECT encode(token_hash, 'hex') FROM api_tokens");
    assert!(
        !stored.contains(&secret) && stored.lines().any(|l| l.len() == 64),
        "{stored}"
    );
}
