//! The ingestion pipeline on real NATS JetStream and PostgreSQL.

use serde_json::{Value, json};

use crate::helpers::{Home, Sup, http, secs};

/// A stack with the pipeline (no SeaweedFS), an admin session, and the ports.
struct Pipeline {
    _home: Home,
    sup: Sup,
    api: u16,
    ingest: u16,
    admin: String,
}

impl Pipeline {
    /// `extra` is appended to tmidb.toml.
    fn start(extra: &str) -> Pipeline {
        let h = Home::new();
        let toml = std::fs::read_to_string(h.path().join("tmidb.toml")).unwrap();
        std::fs::write(h.path().join("tmidb.toml"), format!("{toml}{extra}")).unwrap();
        for u in [
            "postgresql-init",
            "postgresql",
            "migrate",
            "nats",
            "api",
            "data-manager",
            "data-consumer",
        ] {
            let text = std::fs::read_to_string(format!(
                "{}/units/{u}.unit.toml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            // No SeaweedFS here: drop the api's soft dependency on it.
            h.unit(u, &text.replace("wants = [\"seaweedfs\"]", ""));
        }
        let sup = h.start();
        for u in ["api", "data-manager", "data-consumer@1", "data-consumer@2"] {
            sup.wait_state(u, "ready", secs(120));
        }
        let port = |k: &str| {
            sup.cli_ok(&["config", "get", k])
                .trim()
                .parse::<u16>()
                .unwrap()
        };
        let (api, ingest) = (port("ports.api"), port("ports.ingest"));
        let pw = std::fs::read_to_string(h.path().join("secrets/admin.password")).unwrap();
        let mut p = Pipeline {
            _home: h,
            sup,
            api,
            ingest,
            admin: String::new(),
        };
        let (_, _, s) = p.call(
            api,
            "POST",
            "/api/v1/auth/login",
            "",
            &json!({"username": "admin", "password": pw.trim()}),
        );
        p.admin = s["token"].as_str().unwrap().to_string();
        p
    }

    /// A JSON request with a Bearer token: (status, head, body).
    fn call(
        &self,
        port: u16,
        method: &str,
        path: &str,
        token: &str,
        body: &Value,
    ) -> (u16, String, Value) {
        let auth = format!("Bearer {token}");
        let (status, head, raw) = http(
            port,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &serde_json::to_vec(body).unwrap(),
        );
        (
            status,
            head,
            serde_json::from_slice::<Value>(&raw).unwrap_or(Value::Null),
        )
    }
}

#[test]
fn pushed_records_flow_through_jetstream_into_postgresql_once() {
    let p = Pipeline::start("");
    let (sup, api, ingest, admin) = (&p.sup, p.api, p.ingest, p.admin.clone());
    let call = |port: u16, method: &str, path: &str, token: &str, body: &Value| {
        let (status, _, v) = p.call(port, method, path, token, body);
        (status, v)
    };
    let (status, _) = call(
        api,
        "POST",
        "/api/v1/categories",
        &admin,
        &json!({"name": "sensor", "fields": [{"name": "v", "type": "float", "required": true}]}),
    );
    assert_eq!(status, 201);
    let (_, t) = call(
        api,
        "POST",
        "/api/v1/tokens",
        &admin,
        &json!({"name": "pusher", "scopes": ["write:sensor"]}),
    );
    let token = t["token"].as_str().unwrap().to_string();

    // Push: valid records accepted (202), invalid ones reported by index.
    let batch: Vec<Value> = (0..50).map(|i| json!({"target": format!("d{}", i % 5), "ts": format!("2026-05-01T00:00:{:02}Z", i), "v": i})).collect();
    let mut with_bad = batch.clone();
    with_bad.push(json!({"target": "d1", "v": "x"}));
    let (status, r) = call(ingest, "POST", "/ingest/sensor", &token, &json!(with_bad));
    assert_eq!(status, 202, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(50), Some(1)),
        "{r}"
    );
    assert_eq!(r["errors"][0]["index"], 50);
    // The same batch again (a client retry) and a redelivery are stored once.
    assert_eq!(
        call(ingest, "POST", "/ingest/sensor", &token, &json!(batch)).0,
        202
    );
    let count = || {
        let (_, p) = call(
            api,
            "GET",
            "/api/v1/categories/sensor/records?limit=1000",
            &admin,
            &Value::Null,
        );
        p["records"].as_array().map(|a| a.len()).unwrap_or(0)
    };
    sup.wait_until("50 records stored", secs(30), |_| count() == 50);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(count(), 50, "no duplicates after the retry");
    // NDJSON and CSV bodies.
    let auth = format!("Bearer {token}");
    let nd = b"{\"target\":\"n1\",\"ts\":\"2026-05-02T00:00:00Z\",\"v\":1}\n{\"target\":\"n1\",\"ts\":\"2026-05-02T00:00:01Z\",\"v\":2}\n";
    let (status, _, _) = http(
        ingest,
        "POST",
        "/ingest/sensor",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-ndjson"),
        ],
        nd,
    );
    assert_eq!(status, 202);
    let csv = b"target,ts,v\nc1,2026-05-03T00:00:00Z,7.5\nc1,2026-05-03T00:00:01Z,oops\n";
    let (status, _, raw) = http(
        ingest,
        "POST",
        "/ingest/sensor",
        &[("Authorization", &auth), ("Content-Type", "text/csv")],
        csv,
    );
    let r: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        (
            status,
            r["accepted"].as_u64(),
            r["errors"][0]["field"].as_str()
        ),
        (202, Some(1), Some("v")),
        "{r}"
    );
    sup.wait_until("53 records stored", secs(30), |_| count() == 53);
    // Auth: no token 401, wrong category 403, unknown category 404.
    assert_eq!(
        call(ingest, "POST", "/ingest/sensor", "", &json!([])).0,
        401
    );
    let (_, t2) = call(
        api,
        "POST",
        "/api/v1/tokens",
        &admin,
        &json!({"name": "other", "scopes": ["write:other"]}),
    );
    assert_eq!(
        call(
            ingest,
            "POST",
            "/ingest/sensor",
            t2["token"].as_str().unwrap(),
            &json!(batch)
        )
        .0,
        403
    );
    assert_eq!(
        call(ingest, "POST", "/ingest/nope", &admin, &json!(batch)).0,
        404
    );
}

#[test]
fn a_saturated_pipeline_answers_429_and_loses_nothing_it_accepted() {
    let p = Pipeline::start("[ingest]\nmax_backlog_bytes = 40000\n");
    let (sup, api, ingest, admin) = (&p.sup, p.api, p.ingest, p.admin.clone());
    let json_call = |port: u16, method: &str, path: &str, token: &str, body: &Value| {
        p.call(port, method, path, token, body)
    };
    json_call(
        api,
        "POST",
        "/api/v1/categories",
        &admin,
        &json!({"name": "flood", "fields": [{"name": "v", "type": "int"}]}),
    );
    // Nobody writes: the backlog fills up.
    sup.cli_ok(&["stop", "data-consumer"]);
    let mut accepted = 0u64;
    let mut saw_429 = false;
    for b in 0..200 {
        let batch: Vec<Value> = (0..50).map(|i| json!({"target": "t", "ts": format!("2026-06-01T00:{:02}:{:02}Z", b % 60, i), "v": b * 100 + i})).collect();
        let (status, head, r) = json_call(ingest, "POST", "/ingest/flood", &admin, &json!(batch));
        match status {
            202 => accepted += r["accepted"].as_u64().unwrap(),
            429 => {
                assert!(
                    head.to_ascii_lowercase().contains("retry-after: 1"),
                    "{head}"
                );
                assert!(r["message"].as_str().unwrap().contains("saturated"), "{r}");
                saw_429 = true;
                break;
            }
            other => panic!("unexpected {other}: {r}"),
        }
    }
    assert!(saw_429, "the backlog limit never answered 429");
    assert!(accepted > 0);
    // The writers come back: exactly what was accepted is stored.
    sup.cli_ok(&["start", "data-consumer"]);
    let stored = || {
        let (_, _, r) = json_call(
            api,
            "GET",
            "/api/v1/categories/flood/aggregate?field=v&interval=1d",
            &admin,
            &Value::Null,
        );
        r.as_array()
            .map(|a| a.iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>())
            .unwrap_or(0)
    };
    sup.wait_until("every accepted record stored", secs(60), |_| {
        stored() == accepted
    });
    // And the pipeline takes new pushes again.
    let (status, _, _) = json_call(
        ingest,
        "POST",
        "/ingest/flood",
        &admin,
        &json!([{"target": "t", "v": 1}]),
    );
    assert_eq!(status, 202);
}
