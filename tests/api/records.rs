//! Categories and their records: schema versions, every field type, hostile names, queries, aggregation and export.

use serde_json::{Value, json};

use super::{bearer, psql};
use crate::helpers::{api_stack, http};

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
    // Every page of `query` by its cursors: the `n` of each record, in order.
    let pages = |query: &str| {
        let mut seen = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/categories/meter/records?{query}");
            if let Some(c) = &cursor {
                let c = c.replace('+', "%2B").replace(':', "%3A");
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, _, page) = api.call("GET", &path, &auth, None);
            assert_eq!(status, 200, "{page}");
            let records = page["records"].as_array().unwrap();
            seen.extend(records.iter().map(|r| r["n"].as_i64().unwrap()));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return seen,
            }
        }
    };
    // Keyset pages of 10 cover everything once, in time order; newest first, with
    // the same keyset pages (the cursor goes the other way).
    assert_eq!(pages("limit=10"), (0..25).collect::<Vec<i64>>());
    assert_eq!(
        pages("limit=7&order=desc"),
        (0..25).rev().collect::<Vec<i64>>()
    );
    // Export and aggregation take the same filters as a query.
    let (status, _, body) = http(
        api.port,
        "GET",
        "/api/v1/categories/meter/export?format=ndjson&target=odd&filter=kwh:gte:4&filter=n:lt:15&order=desc",
        &auth,
        b"",
    );
    assert_eq!(status, 200);
    let exported: Vec<i64> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(exported, [13, 11, 9]);
    let (status, _, b) = api.call(
        "GET",
        "/api/v1/categories/meter/aggregate?field=kwh&interval=1h&filter=n:gte:20",
        &auth,
        None,
    );
    assert_eq!(status, 200, "{b}");
    let counts: Vec<(String, i64)> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["target"].as_str().unwrap().to_string(),
                x["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("even".to_string(), 3), ("odd".to_string(), 2)],
        "a filter makes the buckets come from the records, not the rollups"
    );
    let (status, _, e) = api.call(
        "GET",
        "/api/v1/categories/meter/export?filter=n:gt:many",
        &auth,
        None,
    );
    assert_eq!(status, 400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("filter `n:gt:many`"),
        "{e}"
    );
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
    // Two minutes: merged from the 1-minute rollups, the same as from the records.
    let two = |raw: &str| {
        api.call(
            "GET",
            &format!("/api/v1/categories/agg/aggregate?field=v&interval=2m&from=2026-02-01T10:00:00Z&to=2026-02-01T11:00:00Z{raw}"),
            &auth,
            None,
        )
        .2
    };
    let (merged, computed) = (two(""), two("&raw=true"));
    assert_eq!(merged, computed);
    assert_eq!(
        (
            merged[0]["count"].as_i64(),
            merged[0]["sum"].as_f64(),
            merged[0]["max"].as_f64()
        ),
        (Some(4), Some(13.0), Some(6.0)),
        "a's 10:00-10:02 bucket: {merged}"
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
fn an_alert_rule_preview_replays_the_last_day_as_the_consumer_evaluates_it() {
    let api = api_stack();
    let a = bearer(&api.admin());
    let auth = [("Authorization", a.as_str())];
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/categories",
        &auth,
        Some(&json!({"name": "preview_test", "fields": [{"name": "temp", "type": "float"}, {"name": "site", "type": "text"}]})),
    );
    assert_eq!(s, 201, "{v}");
    let now = chrono::Utc::now();
    let at = |m: i64| (now - chrono::Duration::minutes(m)).to_rfc3339();
    // a: 20, 31 (fires), 35, 25 (resolves), 40 (fires); b: 50 (fires); c: two days ago.
    let records = json!([
        {"target": "a", "ts": at(50), "temp": 20.0}, {"target": "a", "ts": at(40), "temp": 31.0},
        {"target": "a", "ts": at(30), "temp": 35.0}, {"target": "a", "ts": at(20), "temp": 25.0},
        {"target": "a", "ts": at(10), "temp": 40.0}, {"target": "b", "ts": at(5), "temp": 50.0},
        {"target": "c", "ts": at(2 * 24 * 60), "temp": 99.0}
    ]);
    let (s, _, v) = api.call(
        "POST",
        "/api/v1/categories/preview_test/records",
        &auth,
        Some(&records),
    );
    assert_eq!(s, 201, "{v}");
    let rule = json!({"name": "hot", "category": "preview_test", "kind": "threshold",
                      "field": "temp", "op": "gt", "value": 30});
    let (s, _, p) = api.call("POST", "/api/v1/alert-rules/preview", &auth, Some(&rule));
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["records"], 6, "the day only: {p}");
    let seen: Vec<(String, String)> = p["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["target"].as_str().unwrap().into(),
                n["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("a", "firing"),
        ("a", "resolved"),
        ("a", "firing"),
        ("b", "firing"),
    ];
    assert_eq!(
        seen,
        want.map(|(t, s)| (t.to_string(), s.to_string())),
        "{p}"
    );
    assert_eq!(p["notifications"][0]["message"], "a temp = 31 > 30");
    // Nothing was stored: the rule does not exist.
    let (_, _, rules) = api.call(
        "GET",
        "/api/v1/alert-rules?category=preview_test",
        &auth,
        None,
    );
    assert_eq!(rules.as_array().unwrap().len(), 0);
    // A rule that could not be created cannot be previewed either.
    let bad = json!({"name": "x", "category": "preview_test", "kind": "threshold", "field": "site", "op": "gt", "value": 1});
    let (s, _, e) = api.call("POST", "/api/v1/alert-rules/preview", &auth, Some(&bad));
    assert_eq!(s, 400, "{e}");
    assert!(e.to_string().contains("is not numeric"), "{e}");
    // Absence: silent targets fire when their window runs out.
    let quiet =
        json!({"name": "quiet", "category": "preview_test", "kind": "absence", "window": "5m"});
    let (s, _, p) = api.call("POST", "/api/v1/alert-rules/preview", &auth, Some(&quiet));
    assert_eq!(s, 200, "{p}");
    assert!(
        p["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["target"] == "a" && n["state"] == "firing"),
        "{p}"
    );
}
