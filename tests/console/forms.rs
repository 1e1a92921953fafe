//! What the console's forms promise: an edit made on a page that showed an older
//! state is refused, not applied; a dead letter's fix is checked before it is kept
//! and the original stays; a change of role or password gives new session ids; the
//! explorer's view lives in its URL and its export is the REST API's.

use serde_json::json;

use super::{Browser, header, user};
use crate::helpers::{api_stack, http, psql};

/// The value of the hidden field `name` of a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name}: {page}"))
        + marker.len();
    page[at..].split('"').next().unwrap().to_string()
}

/// `s` as a form value.
fn enc(s: &str) -> String {
    super::urlencode(s)
}

#[test]
fn stale_edits_are_refused_and_fixes_are_checked_before_they_are_kept() {
    let api = api_stack();
    let admin = Browser::login(api.port, "admin", &api.admin_password);
    let bearer = format!("Bearer {}", api.admin());
    let auth = [("Authorization", bearer.as_str())];

    // A schema edited on two pages: the second save was made against version 1 and
    // is refused; a type change is refused with the API's words.
    let (s, head, page) = admin.post(
        api.port,
        "/data/new",
        "rows=2&name=stale_test&f0_name=temp&f0_type=float&f1_name=&f1_type=int",
    );
    assert_eq!(s, 303, "{page}");
    assert_eq!(header(&head, "location"), Some("/data/stale_test"));
    let (_, _, first) = admin.get(api.port, "/data/stale_test/schema");
    let (_, _, second) = admin.get(api.port, "/data/stale_test/schema");
    assert_eq!(hidden(&first, "version"), "1");
    let (s, head, page) = admin.post(
        api.port,
        "/data/stale_test/schema",
        "version=1&rows=2&f0_existing=1&f0_name=temp&f0_type=float&f1_name=wind&f1_type=float",
    );
    assert_eq!(s, 303, "{page}");
    assert!(
        header(&head, "location").unwrap().contains("version%202"),
        "{head}"
    );
    let stale = format!(
        "version={}&rows=1&f0_existing=1&f0_name=temp&f0_type=float&f0_required=1",
        hidden(&second, "version")
    );
    let (s, _, page) = admin.post(api.port, "/data/stale_test/schema", &stale);
    assert_eq!(s, 409, "{page}");
    assert!(
        page.contains("changed since version 1 was opened"),
        "{page}"
    );
    let (_, _, c) = api.call("GET", "/api/v1/categories/stale_test", &auth, None);
    assert_eq!(c["version"], 2, "the stale save changed nothing: {c}");
    let (s, _, page) = admin.post(
        api.port,
        "/data/stale_test/schema",
        "version=2&rows=2&f0_existing=1&f0_name=temp&f0_type=text&f1_existing=1&f1_name=wind&f1_type=float",
    );
    assert_eq!(s, 409, "as the REST API answers it: {page}");
    assert!(
        page.contains("the new schema is incompatible with stored records"),
        "{page}"
    );
    assert!(
        page.contains("a field&#039;s type cannot change")
            || page.contains("a field's type cannot change"),
        "{page}"
    );
    // A field that cannot be read is named, and nothing is stored.
    let (s, _, page) = admin.post(
        api.port,
        "/data/stale_test/schema",
        "version=2&rows=1&f0_existing=1&f0_name=temp&f0_type=float&f0_min=cold",
    );
    assert_eq!(s, 200);
    assert!(
        page.contains("field `temp`: min `cold` is not a number"),
        "{page}"
    );
    // The versions page shows what changed between the two.
    let (_, _, page) = admin.get(api.port, "/data/stale_test/versions?a=1&b=2");
    assert!(page.contains("added <code>wind</code>"), "{page}");

    // A source edited twice from the same page.
    let (s, _, r) = api.call(
        "POST",
        "/api/v1/sources",
        &auth,
        Some(&json!({"name": "stale-feed", "category": "stale_test", "kind": "http_push"})),
    );
    assert_eq!(s, 201, "{r}");
    let (_, _, page) = admin.get(api.port, "/sources/stale-feed");
    let seen = enc(&hidden(&page, "seen"));
    let form = |transform: &str| {
        format!(
            "seen={seen}&name=stale-feed&category=stale_test&kind=http_push&enabled=1&config=%7B%7D&transform={}",
            enc(transform)
        )
    };
    let (s, _, page) = admin.post(
        api.port,
        "/sources/stale-feed",
        &form(r#"{"defaults": {"temp": 1}}"#),
    );
    assert_eq!(s, 303, "{page}");
    let (s, _, page) = admin.post(
        api.port,
        "/sources/stale-feed",
        &form(r#"{"defaults": {"temp": 2}}"#),
    );
    assert_eq!(s, 409, "{page}");
    assert!(page.contains("changed by someone else"), "{page}");
    let (_, _, v) = api.call("GET", "/api/v1/sources/stale-feed", &auth, None);
    assert_eq!(v["transform"]["defaults"]["temp"], 1, "{v}");
    // A transformation that is not JSON, or not one, is named.
    let (s, _, page) = admin.post(api.port, "/sources/stale-feed", &form("{oops"));
    assert_eq!(s, 200);
    assert!(page.contains("transformation: not JSON"), "{page}");

    // A dead letter: a fix that would fail again is refused with the reason and not
    // kept; a good one is kept beside the original; a stale one is refused.
    let letter = psql(
        &api.home,
        "INSERT INTO dead_letters (id, category, source, position, raw, reasons, schema_version)
         VALUES (gen_random_uuid(), 'stale_test', 'http_push', 'push index 3',
                 '{\"target\": \"t1\", \"temp\": \"warm\"}', '[]', 1) RETURNING id",
    );
    let letter = letter.lines().next().unwrap().trim().to_string();
    let (_, _, page) = admin.get(api.port, &format!("/dead-letters/{letter}"));
    let seen = enc(&hidden(&page, "seen"));
    let fix = |raw: &str, seen: &str| format!("seen={seen}&raw={}&save=1", enc(raw));
    let (s, _, page) = admin.post(
        api.port,
        &format!("/dead-letters/{letter}"),
        &fix(r#"{"target": "t1", "temp": "still warm"}"#, &seen),
    );
    assert_eq!(s, 200);
    assert!(page.contains("expected a number"), "{page}");
    let (s, _, page) = admin.post(
        api.port,
        &format!("/dead-letters/{letter}"),
        &fix("{oops", &seen),
    );
    assert_eq!(s, 200);
    assert!(page.contains("the record is not JSON"), "{page}");
    let stored = |q: &str| {
        psql(
            &api.home,
            &format!("SELECT {q} FROM dead_letters WHERE id = '{letter}'"),
        )
    };
    assert_eq!(stored("raw->>'temp'"), "warm", "a refused fix is not kept");
    let (s, head, page) = admin.post(
        api.port,
        &format!("/dead-letters/{letter}"),
        &fix(r#"{"target": "t1", "temp": 21.5}"#, &seen),
    );
    assert_eq!(s, 303, "{page}");
    assert!(
        header(&head, "location")
            .unwrap()
            .contains("done=fix%20saved"),
        "{head}"
    );
    assert_eq!(
        stored("raw->>'temp' || '|' || (original->>'temp')"),
        "21.5|warm"
    );
    let (s, _, page) = admin.post(
        api.port,
        &format!("/dead-letters/{letter}"),
        &fix(r#"{"target": "t1", "temp": 22.5}"#, &seen),
    );
    assert_eq!(s, 409, "{page}");
    assert!(page.contains("changed since it was opened"), "{page}");
    assert_eq!(stored("raw->>'temp'"), "21.5");
    // Replayed from the list: the page reports progress and the end.
    let (s, _, page) = admin.post(api.port, "/dead-letters/replay", &format!("id={letter}"));
    assert_eq!(s, 200, "{page}");
    assert!(
        page.contains("1 of 1 letters done: 1 replayed, 0 still refused"),
        "{page}"
    );
    assert!(
        page.contains("Done: 1 replayed, 0 still refused."),
        "{page}"
    );
    assert_eq!(stored("status"), "replayed");

    // A user edited on a page opened before another change.
    let (s, _, u) = api.call(
        "POST",
        "/api/v1/users",
        &auth,
        Some(&json!({"username": "stale-user", "password": "a-password-10", "role": "viewer"})),
    );
    assert_eq!(s, 201, "{u}");
    let id = u["id"].as_str().unwrap();
    let (_, _, page) = admin.get(api.port, &format!("/users/{id}"));
    let seen = enc(&hidden(&page, "seen"));
    let (s, _, _) = admin.post(
        api.port,
        &format!("/users/{id}"),
        &format!("seen={seen}&role=editor"),
    );
    assert_eq!(s, 303);
    let (s, _, page) = admin.post(
        api.port,
        &format!("/users/{id}"),
        &format!("seen={seen}&role=admin"),
    );
    assert_eq!(s, 409, "{page}");
    let (_, _, u) = api.call("GET", &format!("/api/v1/users/{id}"), &auth, None);
    assert_eq!(u["role"], "editor");
}

#[test]
fn a_change_of_role_or_password_gives_new_session_ids() {
    let api = api_stack();
    let admin = Browser::login(api.port, "admin", &api.admin_password);
    let signed_in = |b: &Browser| {
        let (s, head, _) = b.get(api.port, "/dashboard");
        s == 200 && header(&head, "location").is_none()
    };
    // An admin makes an editor a viewer: the editor's sessions end.
    let ed = user(api, "rotation-editor", "editor");
    let elsewhere = user(api, "rotation-editor", "editor");
    let (_, _, list) = admin.get(api.port, "/users");
    let at = list.find(">rotation-editor</a>").expect("the user");
    let id = list[..at]
        .rsplit("/users/")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (_, _, page) = admin.get(api.port, &format!("/users/{id}"));
    let seen = enc(&hidden(&page, "seen"));
    let (s, _, _) = admin.post(
        api.port,
        &format!("/users/{id}"),
        &format!("seen={seen}&role=viewer"),
    );
    assert_eq!(s, 303);
    assert!(
        !signed_in(&ed) && !signed_in(&elsewhere),
        "the demoted user's sessions ended"
    );
    assert!(signed_in(&admin));
    // A user changes their own password: a new session id for this browser, the
    // other sessions end.
    let me = user(api, "rotation-self", "viewer");
    let other = Browser::login(api.port, "rotation-self", "rotation-self-password-1");
    let (s, _, page) = me.post(
        api.port,
        "/account/password",
        "current_password=wrong-password&new_password=a-new-password-1&repeat_password=a-new-password-1",
    );
    assert_eq!(s, 200);
    assert!(page.contains("the current password is wrong"), "{page}");
    let (s, head, page) = me.post(
        api.port,
        "/account/password",
        "current_password=rotation-self-password-1&new_password=a-new-password-1&repeat_password=a-new-password-1",
    );
    assert_eq!(s, 303, "{page}");
    let fresh = super::session_of(&head);
    assert_ne!(fresh, me.session);
    assert!(!signed_in(&me), "the old id is over");
    assert!(!signed_in(&other), "the other session is over");
    let (s, _, page) = http(
        api.port,
        "GET",
        "/account?done=password",
        &[("Cookie", &format!("tmidb_session={fresh}"))],
        b"",
    );
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&page).contains("this one has a new id"));
    Browser::login(api.port, "rotation-self", "a-new-password-1");
}

#[test]
fn the_explorer_keeps_its_view_in_the_url_and_exports_what_the_api_exports() {
    let api = api_stack();
    let admin = Browser::login(api.port, "admin", &api.admin_password);
    let bearer = format!("Bearer {}", api.admin());
    let auth = [("Authorization", bearer.as_str())];
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/categories",
        &auth,
        Some(&json!({"name": "explorer_test", "fields": [{"name": "v", "type": "int"}]})),
    );
    assert_eq!(s, 201, "{v}");
    let records: Vec<_> = (0..250)
        .map(|i| json!({"target": if i % 2 == 0 { "a" } else { "b" }, "ts": format!("2026-11-01T{:02}:{:02}:00Z", i / 60, i % 60), "v": i}))
        .collect();
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/categories/explorer_test/records",
        &auth,
        Some(&json!(records)),
    );
    assert_eq!(s, 201, "{v}");
    // Newest first in pages of 100, by keyset links; the filters ride along.
    let selection = "target=a&filter=v%3Agte%3A10&order=desc";
    let mut path = format!("/data/explorer_test?{selection}");
    let mut seen = vec![];
    loop {
        let (s, _, page) = admin.get(api.port, &path);
        assert_eq!(s, 200, "{page}");
        let rows: Vec<i64> = page
            .split("<tbody id=\"rows\"")
            .nth(1)
            .unwrap()
            .split("</tbody>")
            .next()
            .unwrap()
            .split("<tr>")
            .skip(1)
            .map(|r| {
                let cells: Vec<&str> = r.split("<td>").collect();
                cells[3].split('<').next().unwrap().parse().unwrap()
            })
            .collect();
        seen.extend(rows);
        let Some(next) = page.split("href=\"").find(|h| h.contains("cursor=")) else {
            break;
        };
        path = next.split('"').next().unwrap().replace("&amp;", "&");
        assert!(path.contains("filter=v%3Agte%3A10"), "{path}");
    }
    let want: Vec<i64> = (10..250).rev().filter(|i| i % 2 == 0).collect();
    assert_eq!(seen, want);
    // A bad filter or time is named on the page, which still renders.
    let (s, _, page) = admin.get(
        api.port,
        "/data/explorer_test?filter=v%3Agt%3Alots&from=yesterday",
    );
    assert_eq!(s, 200);
    assert!(page.contains("`yesterday` is not a time"), "{page}");
    let (_, _, page) = admin.get(api.port, "/data/explorer_test?ff=v&fo=gt&fv=lots");
    assert!(page.contains("filter `v:gt:lots`"), "{page}");
    // The export of a selection is the REST API's export of the same parameters.
    for format in ["csv", "ndjson"] {
        let (s, head, console) = http(
            api.port,
            "GET",
            &format!("/data/explorer_test/export?format={format}&{selection}"),
            &[("Cookie", &format!("tmidb_session={}", admin.session))],
            b"",
        );
        assert_eq!(s, 200);
        assert!(header(&head, "content-disposition").is_some_and(|d| d.contains("attachment")));
        let (_, _, rest) = http(
            api.port,
            "GET",
            &format!("/api/v1/categories/explorer_test/export?format={format}&{selection}"),
            &auth,
            b"",
        );
        assert_eq!(console, rest, "{format}");
        assert!(!console.is_empty());
    }
    // The chart draws the buckets the API computes for its width.
    let (_, _, page) = admin.get(api.port, "/data/explorer_test?target=a&from=2026-11-01T00:00&to=2026-11-01T05:00&chart=v&agg=max&width=600");
    assert!(page.contains("max of v per 2m bucket"), "{page}");
    let dots = page.matches("<circle").count();
    assert_eq!(
        dots, 125,
        "one point per 2-minute bucket holding records of a: {page}"
    );
}
