//! Every console page for every role, with hostile values in every place a user can
//! write one; and every form against a missing token, a foreign origin and a role
//! that may not send it.

use serde_json::{Value, json};

use super::{Browser, header, post, user};
use crate::helpers::{ApiStack, api_stack, http, multipart, psql};

/// Text a user wrote that must never reach a page unescaped.
const HOSTILE: &[&str] = &[
    "<script>alert(\"d\")</script>",
    "\"><svg onload=alert(1)>",
    "<img src=x onerror=alert(2)>",
    "</textarea><script>alert(3)</script>",
    "<b>f</b>.txt",
    "<i>rule</i>",
];

/// One of everything, with hostile text wherever a user can write some, in a
/// category of its own.
struct World {
    category: String,
    source: String,
    letter: String,
    file: String,
    rule: String,
    user: String,
}

impl World {
    fn new(api: &ApiStack, category: &str) -> World {
        let admin = format!("Bearer {}", api.admin());
        let auth = [("Authorization", admin.as_str())];
        let (s, _, c) = api.call(
            "POST",
            "/api/v1/categories",
            &auth,
            Some(
                &json!({"name": category, "description": HOSTILE[0], "fields": [
                {"name": "temp", "type": "float", "unit": HOSTILE[1]},
                {"name": "note", "type": "text"}]}),
            ),
        );
        assert!(s == 201 || s == 409, "{c}");
        let (s, _, r) = api.call(
            "POST",
            &format!("/api/v1/categories/{category}/records"),
            &auth,
            Some(
                &json!([{"target": HOSTILE[2], "temp": 21.5, "note": HOSTILE[3]},
                         {"target": "plain", "temp": 20.0}]),
            ),
        );
        assert!(s == 201, "{r}");
        let source = format!("{category}-feed");
        let (s, _, r) = api.call(
            "POST",
            "/api/v1/sources",
            &auth,
            Some(
                &json!({"name": source, "category": category, "kind": "http_push",
                         "transform": {"constants": {"note": HOSTILE[0]}}}),
            ),
        );
        assert!(s == 201 || s == 409, "{r}");
        let (s, _, r) = api.call(
            "POST",
            "/api/v1/alert-rules",
            &auth,
            Some(
                &json!({"name": format!("{}{category}", HOSTILE[5]), "category": category,
                         "kind": "threshold", "field": "temp", "op": "gt", "value": 30}),
            ),
        );
        assert_eq!(s, 201, "{r}");
        let rule = r["id"].as_str().unwrap().to_string();
        // A dead letter as the data-consumer stores one (there is none in this stack).
        let raw = json!({"target": HOSTILE[2], "temp": HOSTILE[3]}).to_string();
        let letter = psql(
            &api.home,
            &format!(
                "INSERT INTO dead_letters (id, category, source, position, raw, reasons, schema_version)
                 VALUES (gen_random_uuid(), '{category}', '{source}', 'push index 0', '{}'::jsonb,
                 '[{{\"field\": \"temp\", \"reason\": \"expected a number\"}}]', 1) RETURNING id",
                raw.replace('\'', "''")
            ),
        );
        let (ct, body) = multipart(&[
            ("category", None, category.as_bytes()),
            ("target", None, HOSTILE[2].as_bytes()),
            ("file", Some((HOSTILE[4], "text/plain")), b"hello"),
        ]);
        let (s, _, f) = http(
            api.port,
            "POST",
            "/api/v1/files",
            &[
                ("Authorization", admin.as_str()),
                ("Content-Type", ct.as_str()),
            ],
            &body,
        );
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&f));
        let file: Value = serde_json::from_slice(&f).unwrap();
        let name = format!("{category}-user");
        let (s, _, u) = api.call(
            "POST",
            "/api/v1/users",
            &auth,
            Some(&json!({"username": name, "password": "a-password-10", "role": "viewer"})),
        );
        assert_eq!(s, 201, "{u}");
        World {
            category: category.to_string(),
            source,
            letter: letter.lines().next().unwrap().trim().to_string(),
            file: file["id"].as_str().unwrap().to_string(),
            rule,
            user: u["id"].as_str().unwrap().to_string(),
        }
    }
}

/// Who may open a page or send a form.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Anyone,
    Editors,
    Admins,
}

#[test]
fn every_page_renders_for_each_role_escaped_and_with_its_headers() {
    let api = api_stack();
    let w = World::new(api, "console_pages");
    let (c, src, l, f, r, u) = (&w.category, &w.source, &w.letter, &w.file, &w.rule, &w.user);
    let pages: Vec<(String, Who)> = vec![
        ("/dashboard".into(), Who::Anyone),
        ("/data".into(), Who::Anyone),
        ("/data/new".into(), Who::Editors),
        (format!("/data/{c}"), Who::Anyone),
        (
            format!("/data/{c}?from=now-1d&filter=temp:gt:1&order=asc&chart=temp&agg=max"),
            Who::Anyone,
        ),
        (format!("/data/{c}/schema"), Who::Editors),
        (format!("/data/{c}/versions"), Who::Anyone),
        (format!("/data/{c}/delete"), Who::Editors),
        ("/sources".into(), Who::Anyone),
        ("/sources/new".into(), Who::Editors),
        (format!("/sources/{src}"), Who::Anyone),
        (format!("/sources/{src}/delete"), Who::Editors),
        (format!("/dead-letters?category={c}"), Who::Anyone),
        (format!("/dead-letters/{l}"), Who::Anyone),
        (format!("/dead-letters/{l}/delete"), Who::Editors),
        (format!("/alerts?category={c}"), Who::Anyone),
        (format!("/alerts/{r}/delete"), Who::Editors),
        (format!("/files?category={c}"), Who::Anyone),
        (format!("/files/{f}/delete"), Who::Editors),
        ("/units".into(), Who::Admins),
        ("/units/postgresql".into(), Who::Admins),
        ("/units/postgresql/restart".into(), Who::Admins),
        ("/logs".into(), Who::Admins),
        ("/users".into(), Who::Admins),
        (format!("/users/{u}"), Who::Admins),
        (format!("/users/{u}/delete"), Who::Admins),
        ("/account".into(), Who::Anyone),
    ];
    let admin = Browser::login(api.port, "admin", &api.admin_password);
    let editor = user(api, "pages-editor", "editor");
    let viewer = user(api, "pages-viewer", "viewer");
    for (role, b) in [("admin", &admin), ("editor", &editor), ("viewer", &viewer)] {
        for (path, who) in &pages {
            let allowed = match who {
                Who::Anyone => true,
                Who::Editors => role != "viewer",
                Who::Admins => role == "admin",
            };
            let (s, head, page) = b.get(api.port, path);
            let want = if allowed { 200 } else { 403 };
            assert_eq!(s, want, "{role} {path}: {page}");
            for h in [
                "content-security-policy",
                "x-frame-options",
                "x-content-type-options",
            ] {
                assert!(header(&head, h).is_some(), "{role} {path}: no {h}");
            }
            assert_eq!(
                header(&head, "cache-control"),
                Some("no-store"),
                "{role} {path}"
            );
            assert!(
                header(&head, "content-type").is_some_and(|t| t.starts_with("text/html")),
                "{role} {path}"
            );
            for bad in HOSTILE {
                assert!(
                    !page.contains(bad),
                    "{role} {path} shows {bad} unescaped: {page}"
                );
            }
            // Viewers get no form that changes data: only logging out, and their
            // own account.
            if role == "viewer" && allowed {
                for action in page.split("method=\"post\" action=\"").skip(1) {
                    let action = action.split('"').next().unwrap();
                    assert!(
                        action == "/logout" || action.starts_with("/account/"),
                        "viewer {path} offers a form to {action}: {page}"
                    );
                }
            }
        }
    }
    // The hostile values are on the pages, escaped where they were written.
    let (_, _, page) = admin.get(api.port, &format!("/data/{c}"));
    assert!(
        page.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;script&gt;alert(&quot;d&quot;)&lt;/script&gt;"),
        "{page}"
    );
    let (_, _, page) = admin.get(api.port, &format!("/dead-letters/{l}"));
    assert!(page.contains("&lt;/textarea&gt;&lt;script&gt;"), "{page}");
    let (_, _, page) = admin.get(api.port, &format!("/files?category={c}"));
    assert!(page.contains("&lt;b&gt;f&lt;/b&gt;.txt"), "{page}");
    // The explorer's values keep their schema version: a field added later reads
    // "not in v1" on the records stored before it.
    let bearer = format!("Bearer {}", api.admin());
    let (s, _, v) = api.call(
        "PUT",
        &format!("/api/v1/categories/{c}"),
        &[("Authorization", &bearer)],
        Some(
            &json!({"fields": [{"name": "temp", "type": "float"}, {"name": "note", "type": "text"},
                                 {"name": "wind", "type": "float"}]}),
        ),
    );
    assert_eq!(s, 200, "{v}");
    let (_, _, page) = admin.get(api.port, &format!("/data/{c}"));
    assert!(page.contains(">not in v1</td>"), "{page}");
    // The assets are served under their hashed names, cached for a year.
    let js = page
        .split("<script src=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .expect("the explorer's script")
        .to_string();
    let (s, head, _) = http(api.port, "GET", &js, &[], b"");
    assert_eq!(s, 200);
    assert!(header(&head, "cache-control").is_some_and(|c| c.contains("immutable")));
}

#[test]
fn every_form_refuses_a_missing_token_a_foreign_origin_and_a_role_that_may_not_send_it() {
    let api = api_stack();
    let w = World::new(api, "console_forms");
    let (c, src, l, f, r, u) = (&w.category, &w.source, &w.letter, &w.file, &w.rule, &w.user);
    let admin = Browser::login(api.port, "admin", &api.admin_password);
    let viewer = user(api, "forms-viewer", "viewer");
    let forms: Vec<(String, String, Who)> = vec![
        (
            "/account/tokens".into(),
            "name=t&scopes=read%3A*".into(),
            Who::Anyone,
        ),
        (
            "/account/password".into(),
            "current_password=x&new_password=y".into(),
            Who::Anyone,
        ),
        (
            "/account/logout-everywhere".into(),
            String::new(),
            Who::Anyone,
        ),
        ("/units/migrate/start".into(), String::new(), Who::Admins),
        ("/reload".into(), String::new(), Who::Admins),
        ("/logs/channels/api/off".into(), String::new(), Who::Admins),
        (
            "/data/new".into(),
            "rows=1&name=forged&f0_name=x&f0_type=int".into(),
            Who::Editors,
        ),
        (
            format!("/data/{c}/schema"),
            "rows=1&f0_name=only&f0_type=int".into(),
            Who::Editors,
        ),
        (
            format!("/data/{c}/delete"),
            "force=true".into(),
            Who::Editors,
        ),
        (
            "/sources/new".into(),
            format!("name=forged&category={c}&kind=http_push&enabled=1"),
            Who::Editors,
        ),
        (
            format!("/sources/{src}"),
            format!("name={src}&category={c}&kind=http_push"),
            Who::Editors,
        ),
        (
            format!("/sources/{src}/delete"),
            String::new(),
            Who::Editors,
        ),
        (
            "/dead-letters/replay".into(),
            format!("id={l}"),
            Who::Editors,
        ),
        (
            format!("/dead-letters/{l}"),
            "raw=%7B%7D&save=1".into(),
            Who::Editors,
        ),
        (
            format!("/dead-letters/{l}/delete"),
            String::new(),
            Who::Editors,
        ),
        (
            "/alerts".into(),
            format!("name=forged&category={c}&kind=absence&create=1"),
            Who::Editors,
        ),
        (format!("/alerts/{r}/delete"), String::new(), Who::Editors),
        (format!("/files/{f}/delete"), String::new(), Who::Editors),
        (
            "/users".into(),
            "username=forged&password=forged-password&role=admin".into(),
            Who::Admins,
        ),
        (format!("/users/{u}"), "role=admin".into(), Who::Admins),
        (format!("/users/{u}/delete"), String::new(), Who::Admins),
        ("/logout".into(), String::new(), Who::Anyone),
    ];
    let origin = format!("http://127.0.0.1:{}", api.port);
    for (path, body, who) in &forms {
        // No token, or the token of another session.
        for token in ["", "csrf=forged&", &format!("csrf={}&", viewer.csrf)] {
            let (s, _, page) = post(
                api.port,
                path,
                Some(&admin.session),
                &[("Origin", origin.as_str())],
                &format!("{token}{body}"),
            );
            assert_eq!(s, 403, "{path} with `{token}`: {page}");
            assert!(page.contains("security token"), "{path}: {page}");
        }
        // The right token, from another site (by Origin, or by Sec-Fetch-Site).
        for foreign in [
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ] {
            let (s, _, page) = post(
                api.port,
                path,
                Some(&admin.session),
                &[foreign],
                &format!("csrf={}&{body}", admin.csrf),
            );
            assert_eq!(s, 403, "{path} from {foreign:?}: {page}");
            assert!(page.contains("another site"), "{path}: {page}");
        }
        // A viewer's own, well-formed form, where viewers may not act.
        if *who != Who::Anyone {
            let (s, _, page) = viewer.post(api.port, path, body);
            assert_eq!(s, 403, "viewer {path}: {page}");
        }
    }
    // An upload without the token, and a viewer's, store nothing.
    let form = |csrf: &str| {
        multipart(&[
            ("csrf", None, csrf.as_bytes()),
            ("category", None, c.as_bytes()),
            ("file", Some(("forged.txt", "text/plain")), b"forged"),
        ])
    };
    for (who, b, csrf) in [
        ("admin", &admin, "forged"),
        ("viewer", &viewer, viewer.csrf.as_str()),
    ] {
        let (ct, body) = form(csrf);
        let cookie = format!("tmidb_session={}", b.session);
        let (s, _, page) = http(
            api.port,
            "POST",
            "/files",
            &[
                ("Content-Type", ct.as_str()),
                ("Cookie", cookie.as_str()),
                ("Origin", origin.as_str()),
            ],
            &body,
        );
        assert_eq!(s, 403, "{who}: {}", String::from_utf8_lossy(&page));
    }
    // Nothing the forms name has changed.
    let bearer = format!("Bearer {}", api.admin());
    let auth = [("Authorization", bearer.as_str())];
    for path in [
        format!("/api/v1/categories/{c}"),
        format!("/api/v1/sources/{src}"),
        format!("/api/v1/dead-letters/{l}"),
        format!("/api/v1/files/{f}/info"),
        format!("/api/v1/users/{u}"),
    ] {
        let (s, _, v) = api.call("GET", &path, &auth, None);
        assert_eq!(s, 200, "{path}: {v}");
    }
    assert_eq!(
        api.call("GET", &format!("/api/v1/users/{u}"), &auth, None)
            .2["role"],
        "viewer"
    );
    let (_, _, rules) = api.call(
        "GET",
        &format!("/api/v1/alert-rules?category={c}"),
        &auth,
        None,
    );
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");
    assert_eq!(
        api.call("GET", "/api/v1/categories/forged", &auth, None).0,
        404
    );
    assert_eq!(
        api.call("GET", "/api/v1/sources/forged", &auth, None).0,
        404
    );
    assert!(
        !api.call("GET", "/api/v1/users", &auth, None)
            .2
            .to_string()
            .contains("\"forged\""),
        "no forged user"
    );
    assert!(
        admin
            .get(api.port, "/dashboard")
            .2
            .contains("admin (admin)"),
        "still signed in"
    );
}
