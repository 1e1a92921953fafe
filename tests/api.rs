//! The api on real PostgreSQL (and SeaweedFS), one shared stack for the binary.

use serde_json::{Value, json};

use crate::helpers::api_stack;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn every_protected_route_needs_credentials() {
    let api = api_stack();
    let spec: Value = serde_json::from_str(include_str!("../openapi/tmidb.json")).unwrap();
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
    let (status, _, _) = api.call(
        "PUT",
        "/api/v1/users/me/password",
        &[("Cookie", &cookie), ("X-CSRF-Token", &vcsrf)],
        Some(&pw),
    );
    assert_eq!(status, 204);
    api.login("vera", "viewer-password-2");

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
    let o = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "tmidb",
            "-tAc",
            "SELECT encode(token_hash, 'hex') FROM api_tokens",
        ])
        .arg("-p")
        .arg(
            std::fs::read_to_string(api.home.join("tmidb.toml"))
                .unwrap()
                .split("base = ")
                .nth(1)
                .unwrap()
                .trim(),
        )
        .env(
            "PGPASSWORD",
            std::fs::read_to_string(api.home.join("secrets/postgresql.password"))
                .unwrap()
                .trim(),
        )
        .output()
        .unwrap();
    let stored = String::from_utf8_lossy(&o.stdout);
    assert!(
        !stored.contains(&secret) && stored.lines().any(|l| l.len() == 64),
        "{stored}"
    );
}
