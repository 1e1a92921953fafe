//! The api on real PostgreSQL (and SeaweedFS), one shared stack for the binary.

use serde_json::{Value, json};

use crate::helpers::{api_stack, multipart};

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

/// psql against the shared stack's database; returns trimmed stdout.
fn psql(api: &crate::helpers::ApiStack, sql: &str) -> String {
    crate::helpers::psql(&api.home, sql)
}

#[test]
fn category_life_cycle_with_a_schema_version_bump() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    let def = json!({"name": "weather", "description": "stations", "fields": [
        {"name": "temp", "type": "float", "required": true, "unit": "°C"},
        {"name": "humidity", "type": "float", "min": 0, "max": 100},
        {"name": "station", "type": "text", "max_length": 20}
    ]});
    let (status, _, c) = api.call("POST", "/api/v1/categories", &auth, Some(&def));
    assert_eq!(status, 201, "{c}");
    assert_eq!(
        (c["version"].as_i64(), c["fields"].as_array().unwrap().len()),
        (Some(1), 3)
    );
    assert_eq!(
        api.call("POST", "/api/v1/categories", &auth, Some(&def)).0,
        409
    );
    // Storage: a partitioned table (no TimescaleDB here) with partitions ahead.
    assert_eq!(
        psql(api, "SELECT value FROM settings WHERE key = 'storage'"),
        "partitioned"
    );
    let parts: i64 = psql(
        api,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'rec_weather'::regclass",
    )
    .parse()
    .unwrap();
    assert!(parts >= 4, "default + 3 months: {parts}");
    // Records in v1.
    let (status, _, r) = api.call("POST", "/api/v1/categories/weather/records", &auth, Some(&json!([{"target": "st1", "ts": "2026-01-01T00:00:00Z", "temp": 1.5, "station": "north"}])));
    assert_eq!(status, 201, "{r}");
    // v2: add a field, drop one from the schema, tighten another.
    let v2 = json!({"fields": [
        {"name": "temp", "type": "float", "required": true, "min": -90, "max": 60},
        {"name": "humidity", "type": "float", "min": 0, "max": 100},
        {"name": "wind", "type": "int"}
    ]});
    let (status, _, c2) = api.call("PUT", "/api/v1/categories/weather", &auth, Some(&v2));
    assert_eq!((status, c2["version"].as_i64()), (200, Some(2)), "{c2}");
    let (_, _, old) = api.call("GET", "/api/v1/categories/weather?version=1", &auth, None);
    assert_eq!(
        (old["version"].as_i64(), old["current_version"].as_i64()),
        (Some(1), Some(2))
    );
    // A timestamp field kept unchanged is no type change (the check once compared
    // `timestamptz` with PostgreSQL's `timestamp with time zone`).
    let when = json!({"name": "events", "fields": [{"name": "at", "type": "timestamp"}]});
    assert_eq!(
        api.call("POST", "/api/v1/categories", &auth, Some(&when)).0,
        201
    );
    let more =
        json!({"fields": [{"name": "at", "type": "timestamp"}, {"name": "n", "type": "int"}]});
    let (status, _, c) = api.call("PUT", "/api/v1/categories/events", &auth, Some(&more));
    assert_eq!((status, c["version"].as_i64()), (200, Some(2)), "{c}");
    assert_eq!(
        api.call("GET", "/api/v1/categories/weather?version=9", &auth, None)
            .0,
        404
    );
    // A type change is refused, naming the field, also for a field dropped earlier.
    let bad =
        json!({"fields": [{"name": "temp", "type": "text"}, {"name": "station", "type": "int"}]});
    let (status, _, err) = api.call("PUT", "/api/v1/categories/weather", &auth, Some(&bad));
    assert_eq!(status, 409, "{err}");
    let fields: Vec<&str> = err["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["temp", "station"]);
    // Old records keep their version; new ones get v2.
    api.call(
        "POST",
        "/api/v1/categories/weather/records",
        &auth,
        Some(&json!([{"target": "st1", "ts": "2026-01-02T00:00:00Z", "temp": 2.0, "wind": 5}])),
    );
    let (_, _, page) = api.call(
        "GET",
        "/api/v1/categories/weather/records?target=st1",
        &auth,
        None,
    );
    let versions: Vec<i64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["schema_version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    // Delete: refused with records, done with force.
    let (status, _, err) = api.call("DELETE", "/api/v1/categories/weather", &auth, None);
    assert_eq!(status, 409, "{err}");
    assert!(err["message"].as_str().unwrap().contains("2 records"));
    assert_eq!(
        api.call(
            "DELETE",
            "/api/v1/categories/weather?force=true",
            &auth,
            None
        )
        .0,
        204
    );
    assert_eq!(
        api.call("GET", "/api/v1/categories/weather", &auth, None).0,
        404
    );
    assert_eq!(
        psql(
            api,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'rec_weather%'"
        ),
        "0"
    );
    // A viewer may read schemas but not change them.
    let body = json!({"username": "cathy", "password": "viewer-password-9", "role": "viewer"});
    api.call("POST", "/api/v1/users", &auth, Some(&body));
    let v = bearer(&api.login("cathy", "viewer-password-9").0);
    assert_eq!(
        api.call("GET", "/api/v1/categories", &[("Authorization", &v)], None)
            .0,
        200
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/categories",
            &[("Authorization", &v)],
            Some(&json!({"name": "x", "fields": [{"name": "a", "type": "int"}]}))
        )
        .0,
        403
    );
}

#[test]
fn records_round_trip_every_type_and_invalid_ones_are_explained() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    let def = json!({"name": "kinds", "fields": [
        {"name": "i", "type": "int"}, {"name": "f", "type": "float"}, {"name": "b", "type": "bool"},
        {"name": "t", "type": "text", "enum": ["on", "off"]}, {"name": "at", "type": "timestamp"}, {"name": "j", "type": "json"}
    ]});
    assert_eq!(
        api.call("POST", "/api/v1/categories", &auth, Some(&def)).0,
        201
    );
    let rec = json!({"target": "dev-1", "ts": "2025-06-15T12:00:00Z", "i": 9007199254740993_i64, "f": 2.5, "b": true, "t": "on", "at": "2025-06-15T14:00:00+02:00", "j": {"k": [1, "x", null]}});
    let batch =
        json!([rec, {"target": "dev-1", "i": "seven"}, {"ts": "yesterday", "t": "maybe", "zz": 1}]);
    let (status, _, r) = api.call(
        "POST",
        "/api/v1/categories/kinds/records",
        &auth,
        Some(&batch),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(1), Some(2))
    );
    let errs = r["errors"].as_array().unwrap();
    let has = |idx: u64, field: &str| {
        errs.iter()
            .any(|e| e["index"] == idx && e["field"] == field)
    };
    assert!(
        has(1, "i") && has(2, "target") && has(2, "ts") && has(2, "t") && has(2, "zz"),
        "{r}"
    );
    assert!(
        errs.iter()
            .any(|e| e["reason"].as_str().unwrap().contains("not one of on, off"))
    );
    // Every value comes back as it went in (timestamps normalised to UTC).
    let (_, _, page) = api.call("GET", "/api/v1/categories/kinds/records", &auth, None);
    let got = &page["records"][0];
    assert_eq!(got["i"], 9007199254740993_i64);
    assert_eq!(
        (got["f"].as_f64(), got["b"].as_bool(), got["t"].as_str()),
        (Some(2.5), Some(true), Some("on"))
    );
    assert_eq!(got["j"], json!({"k": [1, "x", null]}));
    assert_eq!(
        got["at"].as_str().unwrap().replace(' ', "T").get(..19),
        Some("2025-06-15T12:00:00")
    );
    // All invalid: 400 with the reasons. Not an array: 400.
    let (status, _, err) = api.call(
        "POST",
        "/api/v1/categories/kinds/records",
        &auth,
        Some(&json!([{"target": 5}])),
    );
    assert_eq!(status, 400);
    assert_eq!(err["errors"][0]["field"], "target");
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/categories/kinds/records",
            &auth,
            Some(&json!({"target": "x"}))
        )
        .0,
        400
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/categories/nope/records",
            &auth,
            Some(&json!([]))
        )
        .0,
        404
    );
    // A June 2025 record got its own partition; the default partition stays empty.
    assert_eq!(psql(api, "SELECT count(*) FROM rec_kinds_p202506"), "1");
    assert_eq!(psql(api, "SELECT count(*) FROM rec_kinds_default"), "0");
}

#[test]
fn sql_metacharacters_in_names_are_rejected_and_never_executed() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    let evil = [
        "x\"; DROP TABLE users; --",
        "a b",
        "Robert'); DROP TABLE categories;--",
        "rec_x; select pg_sleep(5)",
    ];
    for name in evil {
        let (status, _, err) = api.call(
            "POST",
            "/api/v1/categories",
            &auth,
            Some(&json!({"name": name, "fields": [{"name": "a", "type": "int"}]})),
        );
        assert_eq!(status, 400, "{name}: {err}");
        let (status, _, _) = api.call(
            "POST",
            "/api/v1/categories",
            &auth,
            Some(&json!({"name": "safe", "fields": [{"name": name, "type": "int"}]})),
        );
        assert_eq!(status, 400, "field {name}");
        let path = format!(
            "/api/v1/categories/{}/records",
            name.replace(' ', "%20")
                .replace('"', "%22")
                .replace(';', "%3B")
                .replace('\'', "%27")
        );
        let (status, _, _) = api.call("GET", &path, &auth, None);
        assert!(status == 404 || status == 400, "{name}: {status}");
    }
    // Filter values are bind parameters; filter fields must be declared.
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/categories",
            &auth,
            Some(&json!({"name": "meta", "fields": [{"name": "v", "type": "text"}]}))
        )
        .0,
        201
    );
    api.call(
        "POST",
        "/api/v1/categories/meta/records",
        &auth,
        Some(&json!([{"target": "t", "v": "it's \"quoted\"; DROP TABLE users"}])),
    );
    let (status, _, page) = api.call("GET", "/api/v1/categories/meta/records?filter=v:eq:it%27s%20%22quoted%22%3B%20DROP%20TABLE%20users", &auth, None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    let (status, _, _) = api.call(
        "GET",
        "/api/v1/categories/meta/records?filter=v%3Bdrop:eq:1",
        &auth,
        None,
    );
    assert_eq!(status, 400);
    assert!(
        psql(api, "SELECT count(*) FROM users")
            .parse::<i64>()
            .unwrap()
            >= 1,
        "users survived"
    );
}

#[test]
fn queries_filter_paginate_and_give_the_latest_per_target() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    api.call("POST", "/api/v1/categories", &auth, Some(&json!({"name": "meter", "fields": [{"name": "kwh", "type": "float"}, {"name": "n", "type": "int"}]})));
    let recs: Vec<Value> = (0..25)
        .map(|i| json!({"target": if i % 2 == 0 { "even" } else { "odd" }, "ts": format!("2026-03-01T00:{i:02}:00Z"), "kwh": i as f64 / 2.0, "n": i}))
        .collect();
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/categories/meter/records",
            &auth,
            Some(&json!(recs))
        )
        .0,
        201
    );
    // Keyset pages of 10 cover everything once, in time order.
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "/api/v1/categories/meter/records?limit=10&cursor={}",
                c.replace('+', "%2B").replace(':', "%3A")
            ),
            None => "/api/v1/categories/meter/records?limit=10".to_string(),
        };
        let (status, _, page) = api.call("GET", &path, &auth, None);
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["n"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).collect::<Vec<i64>>());
    // Target, time range and typed filters.
    let (_, _, page) = api.call("GET", "/api/v1/categories/meter/records?target=odd&from=2026-03-01T00:05:00Z&to=2026-03-01T00:15:00Z&filter=kwh:gte:4", &auth, None);
    let ns: Vec<i64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [9, 11, 13]);
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/categories/meter/records?filter=kwh:gte:lots",
            &auth,
            None
        )
        .0,
        400
    );
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/categories/meter/records?filter=kwh:like:1",
            &auth,
            None
        )
        .0,
        400
    );
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/categories/meter/records?cursor=garbage",
            &auth,
            None
        )
        .0,
        400
    );
    // Latest per target.
    let (_, _, latest) = api.call(
        "GET",
        "/api/v1/categories/meter/records/latest",
        &auth,
        None,
    );
    let l: Vec<(String, i64)> = latest
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(l, [("even".to_string(), 24), ("odd".to_string(), 23)]);
    // A read-only token for another category cannot read this one.
    let (_, _, t) = api.call(
        "POST",
        "/api/v1/tokens",
        &auth,
        Some(&json!({"name": "other", "scopes": ["read:weather"]})),
    );
    let tok = bearer(t["token"].as_str().unwrap());
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/categories/meter/records",
            &[("Authorization", &tok)],
            None
        )
        .0,
        403
    );
    let (_, _, t) = api.call(
        "POST",
        "/api/v1/tokens",
        &auth,
        Some(&json!({"name": "meter-ro", "scopes": ["read:meter"]})),
    );
    let tok = bearer(t["token"].as_str().unwrap());
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/categories/meter/records",
            &[("Authorization", &tok)],
            None
        )
        .0,
        200
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/categories/meter/records",
            &[("Authorization", &tok)],
            Some(&json!([]))
        )
        .0,
        403
    );
}

#[test]
fn aggregation_matches_hand_computed_values_and_export_streams() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    api.call("POST", "/api/v1/categories", &auth, Some(&json!({"name": "agg", "fields": [{"name": "v", "type": "float"}, {"name": "note", "type": "text"}]})));
    // Minute 10:00: 1, 2, 6 (target a) and 10 (b); minute 10:01: 4 (a); 10:03: none.
    let recs = json!([
        {"target": "a", "ts": "2026-02-01T10:00:05Z", "v": 1.0, "note": "x,y"},
        {"target": "a", "ts": "2026-02-01T10:00:30Z", "v": 2.0},
        {"target": "a", "ts": "2026-02-01T10:00:59Z", "v": 6.0, "note": "say \"hi\""},
        {"target": "b", "ts": "2026-02-01T10:00:10Z", "v": 10.0},
        {"target": "a", "ts": "2026-02-01T10:01:00Z", "v": 4.0},
        {"target": "a", "ts": "2026-02-01T10:02:00Z", "note": "no value"}
    ]);
    assert_eq!(
        api.call("POST", "/api/v1/categories/agg/records", &auth, Some(&recs))
            .0,
        201
    );
    let (status, _, b) = api.call(
        "GET",
        "/api/v1/categories/agg/aggregate?field=v&interval=1m",
        &auth,
        None,
    );
    assert_eq!(status, 200, "{b}");
    let rows: Vec<(String, String, i64, f64, f64, f64, f64)> = b
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["count"].as_i64().unwrap() > 0)
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["bucket"].as_str().unwrap()[11..16].to_string(),
                r["count"].as_i64().unwrap(),
                r["min"].as_f64().unwrap(),
                r["max"].as_f64().unwrap(),
                r["avg"].as_f64().unwrap(),
                r["sum"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a".to_string(), "10:00".to_string(), 3, 1.0, 6.0, 3.0, 9.0),
            ("a".to_string(), "10:01".to_string(), 1, 4.0, 4.0, 4.0, 4.0),
            (
                "b".to_string(),
                "10:00".to_string(),
                1,
                10.0,
                10.0,
                10.0,
                10.0
            ),
        ]
    );
    // Hourly, one target, a time window.
    let (_, _, h) = api.call(
        "GET",
        "/api/v1/categories/agg/aggregate?field=v&interval=1h&target=a&from=2026-02-01T10:00:30Z",
        &auth,
        None,
    );
    assert_eq!(
        (h[0]["count"].as_i64(), h[0]["sum"].as_f64()),
        (Some(3), Some(12.0)),
        "{h}"
    );
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/categories/agg/aggregate?field=note&interval=1m",
            &auth,
            None
        )
        .0,
        400
    );
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/categories/agg/aggregate?field=v&interval=soon",
            &auth,
            None
        )
        .0,
        400
    );
    // NDJSON: one record per line, in time order.
    let (status, head, body) = crate::helpers::http(
        api.port,
        "GET",
        "/api/v1/categories/agg/export",
        &[("Authorization", &a)],
        b"",
    );
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("application/x-ndjson"),
        "{head}"
    );
    let lines: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["note"], "x,y");
    // CSV: header, quoting.
    let (status, head, body) = crate::helpers::http(
        api.port,
        "GET",
        "/api/v1/categories/agg/export?format=csv&target=a",
        &[("Authorization", &a)],
        b"",
    );
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("text/csv"));
    let text = String::from_utf8(body).unwrap();
    let csv: Vec<&str> = text.lines().collect();
    assert_eq!(csv[0], "target,ts,schema_version,v,note");
    assert_eq!(csv.len(), 6, "{text}");
    assert!(csv[1].ends_with(",1,1,\"x,y\""), "{}", csv[1]);
    assert!(csv[3].ends_with(",\"say \"\"hi\"\"\""), "{}", csv[3]);
    assert!(text.ends_with("\r\n"), "RFC 4180 line ends: {text:?}");
    let notes: Vec<String> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap()[4].to_string())
        .collect();
    assert_eq!(notes, ["x,y", "", "say \"hi\"", "", "no value"]);
}

#[test]
fn system_routes_drive_the_supervisor_for_admins_only() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    let (status, _, units) = api.call("GET", "/api/v1/system/units", &auth, None);
    assert_eq!(status, 200, "{units}");
    let state = |u: &Value, n: &str| {
        u.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .map(|x| x["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&units, "postgresql").as_deref(), Some("ready"));
    assert_eq!(state(&units, "api").as_deref(), Some("ready"));
    // Re-running the migrate oneshot goes through the control socket and waits for it.
    let (status, _, done) = api.call("POST", "/api/v1/system/units/migrate/start", &auth, None);
    assert_eq!(status, 200, "{done}");
    assert_eq!(state(&done, "migrate").as_deref(), Some("exited"));
    assert_eq!(
        api.call("POST", "/api/v1/system/units/nope/restart", &auth, None)
            .0,
        404
    );
    assert_eq!(
        api.call("POST", "/api/v1/system/units/migrate/explode", &auth, None)
            .0,
        400
    );
    // Editors and viewers may not.
    let body = json!({"username": "eddie", "password": "editor-password-1", "role": "editor"});
    api.call("POST", "/api/v1/users", &auth, Some(&body));
    let e = bearer(&api.login("eddie", "editor-password-1").0);
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/system/units",
            &[("Authorization", &e)],
            None
        )
        .0,
        403
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/system/units/migrate/start",
            &[("Authorization", &e)],
            None
        )
        .0,
        403
    );
}

#[test]
fn files_round_trip_20mb_with_ranges_and_503_without_seaweedfs() {
    use sha2::Digest;
    let api = api_stack();
    let a = bearer(&api.admin());
    // 20 MB of varied bytes.
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sha = hex::encode(sha2::Sha256::digest(&data));
    let (ct, body) = multipart(&[
        ("file", Some(("big data.bin", "application/x-test")), &data),
        ("target", None, b"dev-9"),
    ]);
    let (status, _, raw) = crate::helpers::http(
        api.port,
        "POST",
        "/api/v1/files",
        &[("Authorization", &a), ("Content-Type", &ct)],
        &body,
    );
    let info: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(status, 201, "{info} {}", String::from_utf8_lossy(&raw));
    assert_eq!(
        (info["size"].as_u64(), info["sha256"].as_str()),
        (Some(data.len() as u64), Some(sha.as_str()))
    );
    assert_eq!(info["target"], "dev-9");
    let id = info["id"].as_str().unwrap().to_string();
    // Download: same bytes, content type, disposition.
    let (status, head, got) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a)],
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(hex::encode(sha2::Sha256::digest(&got)), sha);
    let h = head.to_ascii_lowercase();
    assert!(
        h.contains("content-type: application/x-test")
            && h.contains("accept-ranges: bytes")
            && h.contains("filename=\"big data.bin\""),
        "{head}"
    );
    // Ranges.
    let (status, head, part) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a), ("Range", "bytes=1000-1999")],
        b"",
    );
    assert_eq!(status, 206);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-range: bytes 1000-1999/{}", data.len())),
        "{head}"
    );
    assert_eq!(part, data[1000..2000]);
    let (status, _, tail) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a), ("Range", "bytes=-10")],
        b"",
    );
    assert_eq!((status, tail.as_slice()), (206, &data[data.len() - 10..]));
    let (status, head, _) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a), ("Range", "bytes=999999999-")],
        b"",
    );
    assert_eq!(status, 416, "{head}");
    // Listed; metadata; a file of a category needs that category's access.
    let (_, _, list) = api.call(
        "GET",
        "/api/v1/files?target=dev-9",
        &[("Authorization", &a)],
        None,
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == id.as_str())
    );
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/files/{id}/info"),
            &[("Authorization", &a)],
            None
        )
        .2["sha256"],
        sha.as_str()
    );
    assert_eq!(
        api.call("POST", "/api/v1/files", &[("Authorization", &a)], None)
            .0,
        415,
        "not multipart"
    );
    // Above api.max_upload_bytes (30 MB here): 413 from the Content-Length, nothing stored.
    let before = api
        .call("GET", "/api/v1/files", &[("Authorization", &a)], None)
        .2
        .as_array()
        .unwrap()
        .len();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api.port)).unwrap();
    use std::io::{Read, Write};
    write!(s, "POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Type: {ct}\r\nContent-Length: 40000000\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_upload_bytes"));
    assert_eq!(
        api.call("GET", "/api/v1/files", &[("Authorization", &a)], None)
            .2
            .as_array()
            .unwrap()
            .len(),
        before
    );
    // SeaweedFS down: file routes 503 with a clear message; the rest of the API works.
    let sup = crate::helpers::Sup::attach(&api.home);
    sup.cli_ok(&["stop", "seaweedfs"]);
    let (status, _, err) = api.call("GET", "/api/v1/files", &[("Authorization", &a)], None);
    assert_eq!(status, 200, "listing is metadata only: {err}");
    let (status, _, _) = crate::helpers::http(
        api.port,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &a)],
        b"",
    );
    assert_eq!(status, 503);
    let (ct, body) = multipart(&[("file", Some(("small.txt", "text/plain")), b"hello")]);
    let (status, _, raw) = crate::helpers::http(
        api.port,
        "POST",
        "/api/v1/files",
        &[("Authorization", &a), ("Content-Type", &ct)],
        &body,
    );
    let err: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(status, 503, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("SeaweedFS"),
        "{err}"
    );
    assert_eq!(
        api.call("GET", "/api/v1/categories", &[("Authorization", &a)], None)
            .0,
        200
    );
    let (status, _, ready) = api.call("GET", "/readyz", &[], None);
    assert_eq!(
        (
            status,
            ready["postgresql"].as_bool(),
            ready["seaweedfs"].as_bool()
        ),
        (503, Some(true), Some(false)),
        "{ready}"
    );
    sup.cli_ok(&["start", "seaweedfs"]);
    // Back: download works again; delete removes bytes and metadata.
    // SeaweedFS reports ready when its S3 port answers; reads may fail (503) for a
    // moment longer while the volume server registers again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let got = loop {
        let (status, _, got) = crate::helpers::http(
            api.port,
            "GET",
            &format!("/api/v1/files/{id}"),
            &[("Authorization", &a)],
            b"",
        );
        if status == 200 || std::time::Instant::now() > deadline {
            assert_eq!(status, 200);
            break got;
        }
        assert_eq!(status, 503, "only 503 while SeaweedFS settles");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(hex::encode(sha2::Sha256::digest(&got)), sha);
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/api/v1/files/{id}"),
            &[("Authorization", &a)],
            None
        )
        .0,
        204
    );
    assert_eq!(
        api.call(
            "GET",
            &format!("/api/v1/files/{id}/info"),
            &[("Authorization", &a)],
            None
        )
        .0,
        404
    );
}
