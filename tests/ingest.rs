//! The ingestion pipeline on real NATS JetStream and PostgreSQL.

use serde_json::{Value, json};

use crate::helpers::metrics::{scrape, value};
use crate::helpers::{Home, Sup, TinyServer, http, nats_publish, secs};

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
        // No SeaweedFS here: drop the api's soft dependency on it.
        h.default_units(
            &[
                "postgresql-init",
                "postgresql",
                "migrate",
                "nats-init",
                "nats",
                "api",
                "data-manager",
                "data-consumer",
            ],
            false,
        );
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
        crate::helpers::json(port, method, path, &[("Authorization", &auth)], Some(body))
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
    let metrics_before = scrape(ingest);
    let (status, r) = call(ingest, "POST", "/ingest/sensor", &token, &json!(with_bad));
    assert_eq!(status, 202, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(50), Some(1)),
        "{r}"
    );
    assert_eq!(r["errors"][0]["index"], 50);
    // The data-manager's metrics moved with the push: 50 accepted, 1 rejected, one 202.
    let metrics_after = scrape(ingest);
    let rise = |name: &str, labels: &[(&str, &str)]| {
        value(&metrics_after, name, labels) - value(&metrics_before, name, labels)
    };
    let by = [("category", "sensor"), ("source", "http_push")];
    assert_eq!(
        rise(
            "tmidb_ingest_records_total",
            &[by[0], by[1], ("outcome", "accepted")]
        ),
        50.0
    );
    assert_eq!(
        rise(
            "tmidb_ingest_records_total",
            &[by[0], by[1], ("outcome", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        rise(
            "tmidb_http_request_duration_seconds_count",
            &[("route", "pushRecords"), ("status", "202")]
        ),
        1.0
    );
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
    // Each data-consumer instance serves its own metrics (ports.data_consumer + N - 1):
    // together they stored 50 new rows, the retried batch counting nothing.
    let port = |k: &str| {
        sup.cli_ok(&["config", "get", k])
            .trim()
            .parse::<u16>()
            .unwrap()
    };
    let consumers: Vec<_> = [0, 1]
        .map(|i| scrape(port("ports.data_consumer") + i))
        .into();
    let total = |name: &str, labels: &[(&str, &str)]| -> f64 {
        consumers.iter().map(|m| value(m, name, labels)).sum()
    };
    assert_eq!(
        total("tmidb_stored_records_total", &[("category", "sensor")]),
        50.0
    );
    assert!(total("tmidb_batch_commit_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        total(
            "tmidb_consumer_pending_messages",
            &[("consumer", "tmidb-writer"), ("state", "unacknowledged")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &consumers[0],
            "tmidb_db_pool_connections",
            &[("state", "max")]
        ),
        4.0
    );
    // The api timed the record queries above by route.
    let api_metrics = scrape(api);
    assert!(
        value(
            &api_metrics,
            "tmidb_http_request_duration_seconds_count",
            &[("route", "queryRecords"), ("status", "200")]
        ) >= 2.0
    );
    // The supervisor: states, time to ready, log lines per unit.
    let s = scrape(port("ports.supervisor"));
    let ready = [("unit", "data-manager"), ("state", "ready")];
    assert_eq!(value(&s, "tmidb_unit_state", &ready), 1.0);
    let starting = [("unit", "data-manager"), ("state", "starting")];
    assert_eq!(value(&s, "tmidb_unit_state", &starting), 0.0);
    assert!(value(&s, "tmidb_unit_ready_seconds", &[("unit", "api")]) > 0.0);
    assert!(value(&s, "tmidb_log_lines_total", &[("unit", "data-manager")]) > 0.0);
    assert_eq!(
        value(&s, "tmidb_log_dropped_lines_total", &[("unit", "api")]),
        0.0
    );
    // NDJSON and CSV bodies.
    let auth = format!("Bearer {token}");
    let push = |content_type: &str, body: &[u8]| {
        let (status, _, raw) = http(
            ingest,
            "POST",
            "/ingest/sensor",
            &[("Authorization", &auth), ("Content-Type", content_type)],
            body,
        );
        (status, serde_json::from_slice::<Value>(&raw).unwrap())
    };
    let nd = b"{\"target\":\"n1\",\"ts\":\"2026-05-02T00:00:00Z\",\"v\":1}\n{\"target\":\"n1\",\"ts\":\"2026-05-02T00:00:01Z\",\"v\":2}\n";
    assert_eq!(push("application/x-ndjson", nd).0, 202);
    let csv = b"target,ts,v\nc1,2026-05-03T00:00:00Z,7.5\nc1,2026-05-03T00:00:01Z,oops\n";
    let (status, r) = push("text/csv", csv);
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
    // A line that is not JSON is a rejected record like any other: the rest is taken.
    let nd = b"{\"target\":\"n2\",\"ts\":\"2026-05-02T00:00:00Z\",\"v\":1}\n{oops\n";
    let (status, r) = push("application/x-ndjson", nd);
    assert_eq!(
        (
            status,
            r["accepted"].as_u64(),
            r["rejected"].as_u64(),
            r["errors"][0]["index"].as_u64()
        ),
        (202, Some(1), Some(1), Some(1)),
        "{r}"
    );
    assert!(
        r["errors"][0]["reason"]
            .as_str()
            .is_some_and(|m| m.starts_with("not JSON")),
        "{r}"
    );
    sup.wait_until("54 records stored", secs(30), |_| count() == 54);
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
    // Idle pulls stay open: the server's heartbeats on them arrive (a server that ignored
    // them would have each pull fail after two missed beats, and reopened every 2 s).
    std::thread::sleep(tmidb::pipeline::PULL_HEARTBEAT * 3);
    let reopened: Vec<String> = sup
        .records()
        .iter()
        .filter_map(|r| r["msg"].as_str())
        .filter(|m| m.contains("reopening"))
        .map(str::to_string)
        .collect();
    assert!(reopened.is_empty(), "pulls reopened: {reopened:?}");
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

#[test]
fn a_record_the_database_refuses_becomes_a_dead_letter_and_the_rest_of_its_batch_is_stored() {
    let p = Pipeline::start("[ingest]\nmax_pending_age = \"3s\"\n");
    let (sup, api, ingest, admin) = (&p.sup, p.api, p.ingest, p.admin.clone());
    let call = |port: u16, method: &str, path: &str, body: &Value| {
        let (status, _, v) = p.call(port, method, path, &admin, body);
        (status, v)
    };
    let (status, r) = call(
        api,
        "POST",
        "/api/v1/categories",
        &json!({"name": "poison", "fields": [{"name": "v", "type": "int"}, {"name": "note", "type": "text"}]}),
    );
    assert_eq!(status, 201, "{r}");
    let count = |target: &str| {
        let (_, r) = call(
            api,
            "GET",
            &format!("/api/v1/categories/poison/records?target={target}"),
            &Value::Null,
        );
        r["records"].as_array().map(Vec::len).unwrap_or(0)
    };
    // The last second RFC 3339 can write is stored (its month partition included); a
    // time past it is refused by validation, naming `ts`, and its neighbour stored.
    let (status, r) = call(
        ingest,
        "POST",
        "/ingest/poison",
        &json!([{"target": "edge", "ts": "9999-12-31T23:59:59Z", "v": 1},
                {"target": "edge", "ts": "9999-12-31T23:59:59-01:00", "v": 2},
                {"target": "edge", "ts": "2026-01-01T00:00:00Z", "v": 3}]),
    );
    assert_eq!(status, 202, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["errors"][0]["field"].as_str()),
        (Some(2), Some("ts")),
        "{r}"
    );
    sup.wait_until("both storable records stored", secs(30), |_| {
        count("edge") == 2
    });
    // A NUL is one record's problem: it is refused naming the field, kept as a dead
    // letter (with ␀ where the NUL was: the letter must be storable too), and the
    // other record is stored.
    let (status, head, raw) = http(
        ingest,
        "POST",
        "/ingest/poison",
        &[
            ("Authorization", &format!("Bearer {admin}")),
            ("Content-Type", "application/json"),
        ],
        br#"[{"target": "nul", "v": 1}, {"target": "nul", "note": "a\u0000b"}]"#,
    );
    let r: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(
        (status, r["accepted"].as_u64()),
        (202, Some(1)),
        "{head} {r}"
    );
    assert_eq!(r["errors"][0]["field"], "note", "{r}");
    sup.wait_until("the record without NUL stored", secs(30), |_| {
        count("nul") == 1
    });
    let (_, letters) = call(
        api,
        "GET",
        "/api/v1/dead-letters?category=poison",
        &Value::Null,
    );
    let nul = letters
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["raw"]["target"] == "nul")
        .cloned();
    assert_eq!(nul.unwrap()["raw"]["note"], "a\u{2400}b", "{letters}");

    // An operator's constraint refuses a record that passed validation: it becomes a
    // dead letter with the database's reason, the rest of its batch is stored, and the
    // stream goes on (no redelivery loop).
    crate::helpers::psql(
        &sup.home,
        "ALTER TABLE rec_poison ADD CONSTRAINT v_below_1000 CHECK (v < 1000)",
    );
    let (status, r) = call(
        ingest,
        "POST",
        "/ingest/poison",
        &json!([{"target": "b", "ts": "2026-02-01T00:00:00Z", "v": 1},
                {"target": "b", "ts": "2026-02-01T00:00:01Z", "v": 5000},
                {"target": "b", "ts": "2026-02-01T00:00:02Z", "v": 2}]),
    );
    assert_eq!((status, r["accepted"].as_u64()), (202, Some(3)), "{r}");
    sup.wait_until("the two acceptable records stored", secs(30), |_| {
        count("b") == 2
    });
    let letters = || {
        let (_, r) = call(
            api,
            "GET",
            "/api/v1/dead-letters?category=poison",
            &Value::Null,
        );
        r.as_array().cloned().unwrap_or_default()
    };
    sup.wait_until("the refused record kept as a dead letter", secs(30), |_| {
        letters().iter().any(|l| l["source"] == "store")
    });
    let l = letters()
        .into_iter()
        .find(|l| l["source"] == "store")
        .expect("a dead letter from the store");
    assert_eq!(
        (l["source"].as_str(), l["raw"]["v"].as_i64()),
        (Some("store"), Some(5000)),
        "{l}"
    );
    assert!(
        l["reasons"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("v_below_1000"),
        "{l}"
    );
    let (_, report) = call(api, "GET", "/api/v1/integrity", &Value::Null);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["stream"]["pending"], 0, "{report}");
    // Absent, not null: the spec does not declare it nullable (schemathesis found it).
    assert!(report["stream"].get("stalled_seq").is_none(), "{report}");

    // Writers stopped: a message waiting longer than max_pending_age is reported.
    sup.cli_ok(&["stop", "data-consumer"]);
    let (status, _) = call(
        ingest,
        "POST",
        "/ingest/poison",
        &json!([{"target": "late", "v": 7}]),
    );
    assert_eq!(status, 202);
    sup.wait_until("integrity reports the stalled message", secs(30), |_| {
        let (_, r) = call(api, "GET", "/api/v1/integrity", &Value::Null);
        r["ok"] == false && r["stream"]["stalled_seq"].is_u64()
    });
    sup.cli_ok(&["start", "data-consumer"]);
    // PostgreSQL killed mid-session: until it is back every answer is 200 or 503 with
    // Retry-After, never 401 (a client would log its user out) or 500.
    let pg = sup.pid_of("postgresql");
    assert!(pg > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pg),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let (status, head, body) = p.call(api, "GET", "/api/v1/categories", &admin, &Value::Null);
        seen.insert(status);
        assert!(
            status == 200 || status == 503,
            "{status} while PostgreSQL restarts: {head} {body}"
        );
        if status == 503 {
            assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
            assert_eq!(body["code"], "unavailable", "{body}");
        }
        if (status == 200 && seen.contains(&503)) || started.elapsed() > secs(30) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The pool's connections died with the server: the first answers were 503.
    assert!(seen.contains(&503), "{seen:?}");
    sup.wait_state("postgresql", "ready", secs(30));
    assert_eq!(
        p.call(api, "GET", "/api/v1/categories", &admin, &Value::Null)
            .0,
        200
    );
    sup.wait_until("stored and reconciled again", secs(30), |_| {
        let (_, r) = call(api, "GET", "/api/v1/integrity", &Value::Null);
        r["ok"] == true && count("late") == 1
    });
}

/// Records `GET …/records?target=T` (up to 1000).
fn records_of(p: &Pipeline, target: &str) -> Vec<Value> {
    let (_, _, r) = p.call(
        p.api,
        "GET",
        &format!("/api/v1/categories/meter/records?target={target}&limit=1000"),
        &p.admin,
        &Value::Null,
    );
    r["records"].as_array().cloned().unwrap_or_default()
}

fn pending_letters(p: &Pipeline) -> Vec<Value> {
    let (_, _, r) = p.call(
        p.api,
        "GET",
        "/api/v1/dead-letters?category=meter&limit=1000",
        &p.admin,
        &Value::Null,
    );
    r.as_array().cloned().unwrap_or_default()
}

#[test]
fn every_source_kind_lands_transformed_records_and_bad_ones_become_replayable_dead_letters() {
    let p = Pipeline::start("");
    let (sup, api, admin) = (&p.sup, p.api, p.admin.clone());
    let nats = sup
        .cli_ok(&["config", "get", "ports.nats"])
        .trim()
        .parse::<u16>()
        .unwrap();
    let post = |path: &str, body: Value| p.call(api, "POST", path, &admin, &body);
    let (s, _, r) = post(
        "/api/v1/categories",
        json!({"name": "meter", "fields": [{"name": "power", "type": "float", "required": true},
            {"name": "site", "type": "text"}, {"name": "status", "type": "text"}]}),
    );
    assert_eq!(s, 201, "{r}");
    let poll = TinyServer::start(0);
    *poll.body.lock().unwrap() =
        json!({"data": [{"id": "p1", "t": 1764147600, "w": 10}, {"id": "p2", "t": 1764147600, "w": 11}]})
            .to_string();
    let sources = [
        json!({"name": "meters-push", "category": "meter", "kind": "http_push",
               "transform": {"defaults": {"status": "ok"}}}),
        json!({"name": "meters-nats", "category": "meter", "kind": "nats",
               "transform": {"rename": {"pwr": "power"}}}),
        json!({"name": "meters-drop", "category": "meter", "kind": "file", "config": {"path": "drop"},
               "transform": {"timestamp": {"field": "time", "format": "%d/%m/%Y %H:%M:%S"}, "target_field": "meter_id"}}),
        json!({"name": "meters-exec", "category": "meter", "kind": "exec",
               "config": {"command": ["sh", "-c", "echo '{\"target\":\"x1\",\"ts\":\"2026-11-26T09:00:00Z\",\"mw\":0.002}'; echo garbage; exec sleep 600"]},
               "transform": {"rename": {"mw": "power"}, "scale": {"power": {"factor": 1000}}, "constants": {"site": "exec"}}}),
        json!({"name": "meters-poll", "category": "meter", "kind": "http_poll",
               "config": {"url": format!("http://127.0.0.1:{}/readings", poll.port), "interval": "1s",
                          "records": "/data", "fields": {"target": "/id", "time": "/t", "power": "/w"}},
               "transform": {"timestamp": {"field": "time", "format": "unix"}}}),
    ];
    for s in &sources {
        let (status, _, r) = post("/api/v1/sources", s.clone());
        assert_eq!(status, 201, "{r}");
    }
    // Bad definitions are refused with the offending key named.
    let (status, _, r) = post(
        "/api/v1/sources",
        json!({"name": "bad", "category": "meter", "kind": "http_poll", "config": {"url": "ftp://x"},
               "transform": {"timestamp": {"field": "t", "format": "%Q"}}}),
    );
    assert_eq!(status, 400, "{r}");
    let fields: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["config.url", "transform.timestamp.format"], "{r}");

    // http_push, with the source's defaults.
    let (status, _, r) = p.call(
        p.ingest,
        "POST",
        "/ingest/meter",
        &admin,
        &json!([{"target": "h1", "ts": "2026-11-26T08:00:00Z", "power": 1.5}, {"target": "h1", "power": "high"}]),
    );
    assert_eq!((status, r["accepted"].as_u64()), (202, Some(1)), "{r}");
    // nats, as an external publisher: credentials are required, and the publisher's
    // reach only the ingest subjects (not the validated data stream).
    let publisher =
        std::fs::read_to_string(p._home.path().join("secrets/nats.publisher.password")).unwrap();
    let as_publisher = Some(("publisher", publisher.trim()));
    let forged = br#"{"category":"meter","schema_version":1,"records":[]}"#;
    for (who, subject) in [
        (None, "tmidb.ingest.meter"),
        (Some(("publisher", "wrong")), "tmidb.ingest.meter"),
        (as_publisher, "tmidb.data.meter"),
    ] {
        let refused = nats_publish(nats, who, subject, &[forged]);
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("Violation")),
            "{who:?} on {subject}: {refused:?}"
        );
    }
    // An object, an array, and a message that is not JSON.
    nats_publish(
        nats,
        as_publisher,
        "tmidb.ingest.meter",
        &[
            br#"{"target":"n1","ts":"2026-11-26T08:00:00Z","pwr":3}"#,
            br#"[{"target":"n1","ts":"2026-11-26T08:01:00Z","pwr":4}]"#,
            b"not json at all",
        ],
    )
    .unwrap();
    // file: a CSV with one bad row, and a file that cannot be read.
    let drop = p._home.path().join("drop");
    sup.wait_until("the file source watches its directory", secs(30), |_| {
        drop.join("done").is_dir()
    });
    std::fs::write(
        drop.join("m7.csv"),
        "meter_id,time,power\nm7,26/11/2026 10:00:00,5.5\nm7,26/11/2026 10:01:00,bad\n",
    )
    .unwrap();
    std::fs::write(drop.join("broken.json"), "{not json").unwrap();

    sup.wait_until("records from every source", secs(60), |_| {
        ["h1", "n1", "m7", "x1", "p1", "p2"]
            .iter()
            .all(|t| !records_of(&p, t).is_empty())
    });
    assert_eq!(records_of(&p, "h1")[0]["status"], "ok", "push defaults");
    let n1 = records_of(&p, "n1");
    assert_eq!(
        (n1.len(), n1[1]["power"].as_f64()),
        (2, Some(4.0)),
        "{n1:?}"
    );
    let m7 = records_of(&p, "m7");
    assert_eq!(m7[0]["ts"], "2026-11-26T10:00:00+00:00", "{m7:?}");
    assert!(m7[0].get("meter_id").is_none(), "{m7:?}");
    let x1 = &records_of(&p, "x1")[0];
    assert_eq!(
        (x1["power"].as_f64(), &x1["site"]),
        (Some(2.0), &json!("exec")),
        "{x1}"
    );
    assert_eq!(records_of(&p, "p1")[0]["ts"], "2025-11-26T09:00:00+00:00");
    // The file went to done/ with a report; the unreadable one to failed/.
    let report: Value =
        serde_json::from_slice(&std::fs::read(drop.join("done/m7.csv.report.json")).unwrap())
            .unwrap();
    assert_eq!(
        (report["accepted"].as_u64(), report["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    sup.wait_until("the broken file failed", secs(30), |_| {
        drop.join("failed/broken.json.report.json").exists()
    });

    // Every bad record is a dead letter naming its source and reason.
    sup.wait_until("four dead letters", secs(30), |_| {
        pending_letters(&p).len() >= 4
    });
    let letters = pending_letters(&p);
    let by_source = |s: &str| {
        letters
            .iter()
            .find(|l| l["source"] == s)
            .unwrap_or_else(|| panic!("no dead letter from {s}: {letters:?}"))
            .clone()
    };
    assert_eq!(by_source("meters-push")["reasons"][0]["field"], "power");
    assert_eq!(by_source("meters-nats")["raw"], "not json at all");
    assert_eq!(by_source("meters-exec")["raw"], "garbage");
    let bad_row = by_source("meters-drop");
    assert_eq!(bad_row["position"], "m7.csv line 3", "{bad_row}");

    // Fix one and replay it: it goes through the source's transformation again.
    let id = bad_row["id"].as_str().unwrap();
    let mut fixed = bad_row["raw"].clone();
    fixed["power"] = json!(7.25);
    let (status, _, _) = p.call(
        api,
        "PUT",
        &format!("/api/v1/dead-letters/{id}"),
        &admin,
        &json!({"raw": fixed}),
    );
    assert_eq!(status, 200);
    let (_, _, r) = post(&format!("/api/v1/dead-letters/{id}/replay"), json!({}));
    assert_eq!(
        (r["replayed"].as_u64(), r["failed"].as_u64()),
        (Some(1), Some(0)),
        "{r}"
    );
    sup.wait_until("the fixed record stored", secs(30), |_| {
        records_of(&p, "m7").len() == 2
    });
    assert_eq!(records_of(&p, "m7")[1]["power"].as_f64(), Some(7.25));

    // Records with a field the schema lacks wait in the dead letters until it is added.
    p.call(
        p.ingest,
        "POST",
        "/ingest/meter",
        &admin,
        &json!([{"target": "v1", "ts": "2026-11-26T08:00:00Z", "power": 1, "voltage": 230}]),
    );
    sup.wait_until("the voltage letter", secs(30), |_| {
        pending_letters(&p)
            .iter()
            .any(|l| l["raw"]["target"] == "v1")
    });
    let (status, _, r) = p.call(
        api,
        "PUT",
        "/api/v1/categories/meter",
        &admin,
        &json!({"fields": [{"name": "power", "type": "float", "required": true}, {"name": "site", "type": "text"},
            {"name": "status", "type": "text"}, {"name": "voltage", "type": "int"}]}),
    );
    assert_eq!(status, 200, "{r}");
    let (_, _, r) = post("/api/v1/dead-letters/replay?category=meter", json!({}));
    assert_eq!(
        r["replayed"].as_u64(),
        Some(1),
        "only the voltage record is valid now: {r}"
    );
    assert!(r["failed"].as_u64().unwrap() >= 3, "{r}");
    // Each reason names its dead letter: exactly the ones still pending.
    let mut named: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    named.sort();
    named.dedup();
    let pending = pending_letters(&p);
    let mut still: Vec<&str> = pending.iter().map(|l| l["id"].as_str().unwrap()).collect();
    still.sort();
    assert_eq!(named, still, "{r}");
    sup.wait_until("the replayed record", secs(30), |_| {
        records_of(&p, "v1")
            .first()
            .is_some_and(|r| r["voltage"] == 230)
    });
    // The data-manager follows the change made through the api: a push with the new
    // field is taken (not dead-lettered) once the notification reached it.
    sup.wait_until("the data-manager sees the new version", secs(30), |_| {
        let (status, _, r) = p.call(
            p.ingest,
            "POST",
            "/ingest/meter",
            &admin,
            &json!([{"target": "v2", "ts": "2026-11-26T08:00:00Z", "power": 1, "voltage": 231}]),
        );
        status == 202 && r["rejected"] == 0 && r["schema_version"] == 2
    });
    sup.wait_until("the pushed v2 record", secs(30), |_| {
        records_of(&p, "v2")
            .first()
            .is_some_and(|r| r["voltage"] == 231)
    });

    // A poll that brings nothing new publishes nothing (what was taken is remembered):
    // one "poll ingested" before the document changes, one after, although it is
    // fetched every second.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let polls = || {
        sup.records()
            .iter()
            .filter(|r| r["msg"] == "poll ingested")
            .count()
    };
    assert_eq!(polls(), 1);
    *poll.body.lock().unwrap() =
        json!({"data": [{"id": "p1", "t": 1764147600, "w": 10}, {"id": "p1", "t": 1764147660, "w": 12}]})
            .to_string();
    sup.wait_until("the newer polled record", secs(30), |_| {
        records_of(&p, "p1").len() == 2
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(polls(), 2);
    let (_, _, integrity) = p.call(api, "GET", "/api/v1/integrity", &admin, &Value::Null);
    assert_eq!(integrity["ok"], true, "{integrity}");
    let meter = integrity["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["category"] == "meter")
        .unwrap();
    assert_eq!(meter["skipped_duplicates"], 0, "{integrity}");
    assert_eq!(integrity["stream"]["gaps"], 0, "{integrity}");

    // Sources can be changed and removed at run time: the exec source is restarted
    // with its new definition.
    let (status, _, _) = p.call(
        api,
        "DELETE",
        "/api/v1/sources/meters-exec",
        &admin,
        &Value::Null,
    );
    assert_eq!(status, 204);
    sup.wait_until("the exec source's program stopped", secs(30), |_| {
        crate::helpers::pids_with_cmdline("exec sleep 600").is_empty()
    });

    // Force-deleting the category ends all that was its own: its sources stop, its dead
    // letters go, and its stream messages read as no gaps. A category of the same name
    // created again starts from nothing.
    assert!(!pending_letters(&p).is_empty());
    let (status, _, r) = p.call(
        api,
        "DELETE",
        "/api/v1/categories/meter?force=true",
        &admin,
        &Value::Null,
    );
    assert_eq!(status, 204, "{r}");
    sup.wait_until("the file source stopped", secs(30), |_| {
        sup.records().iter().any(|r| {
            r["msg"] == "source stopped: changed, disabled or removed"
                && r["fields"]["source"] == "meters-drop"
        })
    });
    std::fs::write(
        drop.join("m8.csv"),
        "meter_id,time,power\nm8,26/11/2026 10:00:00,1\n",
    )
    .unwrap();
    let (_, _, integrity) = p.call(api, "GET", "/api/v1/integrity", &admin, &Value::Null);
    assert_eq!(integrity["ok"], true, "{integrity}");
    assert_eq!(integrity["stream"]["gaps"], 0, "{integrity}");
    let (s, _, r) = post(
        "/api/v1/categories",
        json!({"name": "meter", "fields": [{"name": "power", "type": "float", "required": true}]}),
    );
    assert_eq!(s, 201, "{r}");
    assert_eq!(pending_letters(&p), Vec::<Value>::new());
    let (status, _, r) = post(
        "/api/v1/sources",
        json!({"name": "meters-drop2", "category": "meter", "kind": "file", "config": {"path": "drop2"},
               "transform": {"timestamp": {"field": "time", "format": "%d/%m/%Y %H:%M:%S"}, "target_field": "meter_id"}}),
    );
    assert_eq!(status, 201, "{r}");
    let drop2 = p._home.path().join("drop2");
    sup.wait_until(
        "the new file source watches its directory",
        secs(30),
        |_| drop2.join("done").is_dir(),
    );
    std::fs::write(
        drop2.join("m9.csv"),
        "meter_id,time,power\nm9,26/11/2026 10:00:00,1\n",
    )
    .unwrap();
    sup.wait_until("the new source's file stored", secs(30), |_| {
        records_of(&p, "m9").len() == 1
    });
    assert!(
        drop.join("m8.csv").exists(),
        "the deleted source took a file"
    );
    assert_eq!(records_of(&p, "m8"), Vec::<Value>::new());
}

#[test]
fn rollups_match_sql_alerts_fire_and_resolve_to_a_webhook_and_sse_resumes_without_gaps() {
    let p = Pipeline::start("");
    let (sup, api, admin) = (&p.sup, p.api, p.admin.clone());
    let post = |path: &str, body: Value| p.call(api, "POST", path, &admin, &body);
    let push = |records: Value| {
        let (status, _, r) = p.call(p.ingest, "POST", "/ingest/meter", &admin, &records);
        assert_eq!(status, 202, "{r}");
    };
    let (s, _, r) = post(
        "/api/v1/categories",
        json!({"name": "meter", "fields": [{"name": "power", "type": "float"}, {"name": "n", "type": "int"}]}),
    );
    assert_eq!(s, 201, "{r}");
    let auth = format!("Bearer {admin}");

    // SSE: follow from now, see the first batch, disconnect.
    let follower = {
        let auth = auth.clone();
        std::thread::spawn(move || {
            crate::helpers::sse(
                api,
                "/api/v1/categories/meter/stream",
                &[("Authorization", &auth)],
                secs(60),
                |ev| ev.iter().any(|e| e.1 == "records"),
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    push(json!([{"target": "s1", "ts": "2026-11-26T07:00:00Z", "power": 1}]));
    let first = follower.join().unwrap();
    let seen = first
        .iter()
        .find(|e| e.1 == "records")
        .unwrap_or_else(|| panic!("no records event: {first:?}"));
    assert_eq!(seen.2["records"][0]["target"], "s1", "{first:?}");
    let last_id = seen.0.clone();
    // Meanwhile, more records; reconnecting with Last-Event-ID gets exactly those.
    push(json!([{"target": "s2", "ts": "2026-11-26T07:00:00Z", "power": 2}]));
    push(json!([{"target": "s3", "ts": "2026-11-26T07:00:00Z", "power": 3}]));
    let resumed = crate::helpers::sse(
        api,
        "/api/v1/categories/meter/stream",
        &[("Authorization", &auth), ("Last-Event-ID", &last_id)],
        secs(60),
        |ev| ev.iter().filter(|e| e.1 == "records").count() >= 2,
    );
    // (Two data-consumers: commit order, not push order.)
    let mut targets: Vec<&str> = resumed
        .iter()
        .filter(|e| e.1 == "records")
        .flat_map(|e| e.2["records"].as_array().unwrap().iter())
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    targets.sort();
    assert_eq!(targets, ["s2", "s3"], "{resumed:?}");
    let ids: Vec<u64> = resumed.iter().map(|e| e.0.parse().unwrap()).collect();
    assert_eq!(
        ids[0],
        last_id.parse::<u64>().unwrap() + 1,
        "no gap: {resumed:?}"
    );
    // Records stored through the api follow the same rules: kept once however often
    // sent, and shown on the stream exactly as they are stored.
    let direct = json!([{"target": "s4", "ts": "2026-11-26T07:00:00.123456789Z", "power": 4}]);
    for expected in [201, 201] {
        let (status, _, r) = post("/api/v1/categories/meter/records", direct.clone());
        assert_eq!((status, &r["accepted"]), (expected, &json!(1)), "{r}");
    }
    // A different record after them: the stream holds s4 once, then s5.
    let (status, _, r) = post(
        "/api/v1/categories/meter/records",
        json!([{"target": "s5", "ts": "2026-11-26T07:00:00Z", "power": 5}]),
    );
    assert_eq!(status, 201, "{r}");
    let after = ids.last().unwrap().to_string();
    let live = crate::helpers::sse(
        api,
        "/api/v1/categories/meter/stream",
        &[("Authorization", &auth), ("Last-Event-ID", &after)],
        secs(30),
        |ev| ev.iter().any(|e| e.2["records"][0]["target"] == "s5"),
    );
    let (_, _, stored) = p.call(
        api,
        "GET",
        "/api/v1/categories/meter/records?target=s4",
        &admin,
        &Value::Null,
    );
    assert_eq!(stored["records"].as_array().unwrap().len(), 1, "{stored}");
    let stored = &stored["records"][0];
    assert_eq!(stored["ts"], "2026-11-26T07:00:00.123456+00:00", "{stored}");
    let events: Vec<&Value> = live
        .iter()
        .filter(|e| e.1 == "records")
        .map(|e| &e.2["records"])
        .collect();
    assert_eq!(events.len(), 2, "the duplicate published nothing: {live:?}");
    assert_eq!(events[0], &json!([stored]), "{live:?}");

    // Rollups, maintained as records are stored, equal aggregating the records.
    let mut batch = vec![];
    for i in 0..600u32 {
        batch.push(json!({"target": format!("r{}", i % 3), "ts": format!("2026-11-26T{:02}:{:02}:{:02}Z", 10 + i / 300, (i / 5) % 60, i % 60),
                          "power": (i as f64) * 0.37 - 20.0, "n": i % 7}));
    }
    // In two pushes (and the first again: a retry adds nothing to the rollups).
    push(json!(batch[..250]));
    push(json!(batch[250..]));
    push(json!(batch[..250]));
    let count = || {
        let (_, _, r) = p.call(
            api,
            "GET",
            "/api/v1/categories/meter/aggregate?field=power&interval=1d&raw=true",
            &admin,
            &Value::Null,
        );
        r.as_array()
            .map(|a| a.iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>())
            .unwrap_or(0)
    };
    // s1..s5 and the batch.
    sup.wait_until("605 records", secs(30), |_| count() == 605);
    let compare = || {
        for (field, interval) in [("power", "1m"), ("power", "1h"), ("n", "1m"), ("n", "1h")] {
            let get = |raw: bool| {
                let (_, _, r) = p.call(
                api,
                "GET",
                &format!(
                    "/api/v1/categories/meter/aggregate?field={field}&interval={interval}&raw={raw}"
                ),
                &admin,
                &Value::Null,
            );
                r.as_array().cloned().unwrap()
            };
            let (rolled, direct) = (get(false), get(true));
            assert_eq!(rolled.len(), direct.len(), "{field} {interval}");
            assert!(rolled.len() > 3, "{rolled:?}");
            for (a, b) in rolled.iter().zip(&direct) {
                assert_eq!(
                    (&a["target"], &a["bucket"], &a["count"]),
                    (&b["target"], &b["bucket"], &b["count"])
                );
                for k in ["min", "max", "sum", "avg"] {
                    let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
                    assert!(
                        (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                        "{field} {interval} {k}: {x} vs {y}"
                    );
                }
            }
        }
    };
    compare();
    // Records with only one of the fields, into the same buckets: stored rows and deltas
    // then differ in fields and are merged field by field.
    push(json!((0..200u32).map(|i| if i % 2 == 0 {
        json!({"target": format!("r{}", i % 3), "ts": format!("2026-11-26T10:{:02}:{:02}Z", i % 60, (i * 7) % 60), "power": -1.5 * i as f64})
    } else {
        json!({"target": format!("r{}", i % 3), "ts": format!("2026-11-26T11:{:02}:{:02}Z", i % 60, (i * 7) % 60), "n": i * 3})
    }).collect::<Vec<_>>()));
    sup.wait_until("705 records with power", secs(30), |_| count() == 705);
    compare();

    // Alerts: a threshold fires and resolves, delivered to a webhook that fails at
    // first (retried); an absence rule fires for a silent target.
    let hook = TinyServer::start(1);
    let url = format!("http://127.0.0.1:{}/hook", hook.port);
    let (s, _, r) = post(
        "/api/v1/alert-rules",
        json!({"name": "hot", "category": "meter", "kind": "threshold",
        "field": "power", "op": "gt", "value": 100, "webhooks": [url]}),
    );
    assert_eq!(s, 201, "{r}");
    let (s, _, r) = post(
        "/api/v1/alert-rules",
        json!({"name": "bad", "category": "meter", "kind": "threshold", "field": "nope"}),
    );
    assert_eq!(s, 400, "{r}");
    let (s, _, r) = post(
        "/api/v1/alert-rules",
        json!({"name": "quiet", "category": "meter", "kind": "absence",
        "target": "silent", "window": "2s"}),
    );
    assert_eq!(s, 201, "{r}");
    push(json!([{"target": "a1", "ts": "2026-11-26T12:00:00Z", "power": 150}]));
    sup.wait_until("the firing webhook", secs(30), |_| {
        hook.posts.lock().unwrap().len() == 1
    });
    push(json!([{"target": "a1", "ts": "2026-11-26T12:01:00Z", "power": 50}]));
    sup.wait_until("the resolved webhook", secs(30), |_| {
        hook.posts.lock().unwrap().len() == 2
    });
    let posts = hook.posts.lock().unwrap().clone();
    assert_eq!(
        (&posts[0]["state"], &posts[0]["target"], &posts[0]["value"]),
        (&json!("firing"), &json!("a1"), &json!(150.0)),
        "{posts:?}"
    );
    assert_eq!(posts[1]["state"], "resolved", "{posts:?}");
    assert_eq!(
        hook.fail_first.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the failed delivery was retried"
    );
    let alerts = |rule: &str| {
        let (_, _, r) = p.call(
            api,
            "GET",
            "/api/v1/alerts?category=meter",
            &admin,
            &Value::Null,
        );
        r.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == rule)
            .map(|a| a["state"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    sup.wait_until("the absence alert", secs(30), |_| {
        alerts("quiet") == ["firing"]
    });
    push(json!([{"target": "silent", "power": 1}]));
    sup.wait_until("the absence resolved", secs(30), |_| {
        alerts("quiet") == ["resolved", "firing"]
    });
    assert_eq!(alerts("hot"), ["resolved", "firing"]);
    // Records stored through the api (not the pipeline) are evaluated too.
    let (s, _, r) = post(
        "/api/v1/categories/meter/records",
        json!([{"target": "direct", "power": 500}]),
    );
    assert_eq!(s, 201, "{r}");
    sup.wait_until("the direct insert's webhook", secs(30), |_| {
        hook.posts.lock().unwrap().len() == 3
    });
    let last = hook.posts.lock().unwrap()[2].clone();
    assert_eq!(
        (&last["state"], &last["target"]),
        (&json!("firing"), &json!("direct")),
        "{last}"
    );

    let (_, _, integrity) = p.call(api, "GET", "/api/v1/integrity", &admin, &Value::Null);
    assert_eq!(integrity["ok"], true, "{integrity}");
}

#[test]
fn chaos_200k_records_survive_killed_consumers_and_nats_stored_exactly_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let p = Pipeline::start("[ingest]\nack_wait = \"3s\"\n");
    let (sup, api, ingest, admin) = (&p.sup, p.api, p.ingest, p.admin.clone());
    let (s, _, r) = p.call(
        api,
        "POST",
        "/api/v1/categories",
        &admin,
        &json!({"name": "chaos", "fields": [{"name": "v", "type": "int", "required": true}]}),
    );
    assert_eq!(s, 201, "{r}");
    const BATCHES: usize = 100;
    const PER_BATCH: usize = 2000;
    let pushed = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let (pushed, admin) = (pushed.clone(), admin.clone());
        std::thread::spawn(move || {
            let auth = format!("Bearer {admin}");
            let mut retries = 0;
            for b in 0..BATCHES {
                let body: Vec<Value> = (0..PER_BATCH)
                    .map(|i| {
                        let n = b * PER_BATCH + i;
                        json!({"target": format!("t{}", n % 20), "ts": format!("2026-11-20T00:00:00.{:06}Z", n), "v": n})
                    })
                    .collect();
                let body = serde_json::to_vec(&body).unwrap();
                // A push refused or cut by the chaos is sent again: records keep their
                // content ids, so a repeat is stored once.
                loop {
                    let (status, _, raw) = http(
                        ingest,
                        "POST",
                        "/ingest/chaos",
                        &[
                            ("Authorization", &auth),
                            ("Content-Type", "application/json"),
                        ],
                        &body,
                    );
                    let r: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                    if status == 202 && r["accepted"] == PER_BATCH {
                        break;
                    }
                    assert!(matches!(status, 429 | 503), "{status}: {r}");
                    retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                pushed.store(b + 1, Ordering::SeqCst);
            }
            retries
        })
    };
    let kill = |unit: &str, at: usize| {
        sup.wait_until(&format!("{at} batches pushed"), secs(300), |_| {
            pushed.load(Ordering::SeqCst) >= at
        });
        let pid = sup.pid_of(unit);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        eprintln!("killed {unit} ({pid}) after {at} batches");
    };
    kill("data-consumer@1", 20);
    kill("nats", 40);
    kill("data-consumer@2", 60);
    let retries = pusher.join().unwrap();
    eprintln!("{retries} pushes were sent again");
    crate::helpers::assert_stored_exactly_once(sup, api, &admin, "chaos", 200_000);
    for u in ["data-consumer@1", "nats", "data-consumer@2"] {
        let x = sup.unit(u).unwrap();
        assert_eq!(x["restarts"], 1, "{u} was killed and restarted: {x}");
    }

    // A write held up by a lock for longer than ack_wait (3 s here) is not redelivered
    // to the other writer meanwhile: its writer reports progress.
    let port = sup
        .cli_ok(&["config", "get", "ports.data_consumer"])
        .trim()
        .parse::<u16>()
        .unwrap();
    let redelivered = || -> f64 {
        [port, port + 1]
            .iter()
            .map(|&p| value(&scrape(p), "tmidb_redelivered_messages_total", &[]))
            .sum()
    };
    let before = redelivered();
    let home = sup.home.clone();
    let lock = std::thread::spawn(move || {
        crate::helpers::psql(
            &home,
            "BEGIN; LOCK TABLE rec_chaos IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(10); COMMIT",
        )
    });
    let locked = "SELECT count(*) FROM pg_locks WHERE relation = 'rec_chaos'::regclass \
                  AND mode = 'AccessExclusiveLock' AND granted";
    sup.wait_until("the table locked", secs(30), |_| {
        crate::helpers::psql(&sup.home, locked) == "1"
    });
    let body: Value = (0..10)
        .map(|i| json!({"target": "slow", "ts": format!("2026-11-20T01:00:00.{i:06}Z"), "v": i}))
        .collect();
    let (status, _, r) = p.call(ingest, "POST", "/ingest/chaos", &admin, &body);
    assert_eq!(status, 202, "{r}");
    lock.join().unwrap();
    sup.wait_until("the held-up batch stored", secs(30), |_| {
        crate::helpers::psql(
            &sup.home,
            "SELECT count(*) FROM rec_chaos WHERE target = 'slow'",
        ) == "10"
    });
    assert_eq!(
        redelivered() - before,
        0.0,
        "a batch held up longer than ack_wait was redelivered"
    );
}

/// A message JetStream will never deliver again (left in the work-queue stream below the
/// writers' ack floor, as nats-server 2.9's restored consumer state can leave one after
/// a kill -9) is found by a data-consumer, stored once and removed from the stream.
/// The test makes one the way the server does: with NATS stopped, the consumer's state
/// file (`o.dat`) is given an ack floor past a message still in the stream.
#[test]
fn a_message_left_below_the_ack_floor_is_stored_by_a_data_consumer() {
    let p = Pipeline::start("");
    let (sup, api, ingest, admin) = (&p.sup, p.api, p.ingest, p.admin.clone());
    let (s, _, r) = p.call(
        api,
        "POST",
        "/api/v1/categories",
        &admin,
        &json!({"name": "orphan", "fields": [{"name": "v", "type": "int"}]}),
    );
    assert_eq!(s, 201, "{r}");
    let push = |from: i64| {
        let recs: Vec<Value> = (from..from + 3)
            .map(|v| json!({"target": "t", "ts": format!("2026-06-01T00:00:{v:02}Z"), "v": v}))
            .collect();
        let (s, _, r) = p.call(ingest, "POST", "/ingest/orphan", &admin, &json!(recs));
        assert_eq!(s, 202, "{r}");
    };
    let stored = || -> Vec<i64> {
        let path = "/api/v1/categories/orphan/records?order=asc";
        let (_, _, r) = p.call(api, "GET", path, &admin, &Value::Null);
        let all = r["records"].as_array().cloned().unwrap_or_default();
        all.iter().map(|x| x["v"].as_i64().unwrap()).collect()
    };
    let stream_messages = || {
        let cfg = tmidb::config::Config::load(&sup.home).unwrap();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let (_c, _js, mut stream) = tmidb::pipeline::connect(&cfg, "data-consumer")
                .await
                .unwrap();
            stream.info().await.unwrap().state.clone()
        })
    };
    push(0);
    sup.wait_until("the first records stored", secs(30), |_| {
        stored().len() == 3
    });
    sup.cli_ok(&["stop", "data-consumer"]);
    push(3);
    let state = stream_messages();
    assert_eq!(state.messages, 1, "the push waits in the stream: {state:?}");
    // The writers' consumer state, written by the server at its stop: magic, version,
    // then uvarints (ack floor consumer and stream sequences, delivered consumer and
    // stream sequences, pending count, redelivered count).
    sup.cli_ok(&["stop", "nats"]);
    let file = sup
        .home
        .join("data/nats/jetstream/$G/streams/TMIDB_DATA/obs")
        .join(tmidb::pipeline::CONSUMER)
        .join("o.dat");
    let old = std::fs::read(&file).unwrap();
    let mut at = 2;
    let mut uvarint = || {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = old[at];
            at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    };
    let (floor_c, floor_s, _, _) = (uvarint(), uvarint(), uvarint(), uvarint());
    assert_eq!(
        floor_s,
        state.last_sequence - 1,
        "the consumer is at the message before"
    );
    let mut new = old[..2].to_vec();
    for v in [
        floor_c + 1,
        state.last_sequence,
        floor_c + 1,
        state.last_sequence,
        0,
        0,
    ] {
        let mut v = v;
        while v >= 0x80 {
            new.push(v as u8 | 0x80);
            v >>= 7;
        }
        new.push(v as u8);
    }
    std::fs::write(&file, new).unwrap();
    for u in ["data-consumer", "data-manager", "api"] {
        sup.cli_ok(&["start", u]);
    }
    sup.wait_until("the message below the ack floor stored", secs(60), |_| {
        stored() == [0, 1, 2, 3, 4, 5]
    });
    // The warning follows the write (and the stream delete), and reaches the log through
    // the supervisor's capture: wait for it rather than read the log once.
    sup.wait_until("the rescue logged", secs(15), |s| {
        s.log_text().contains("below the writers' ack floor")
    });
    // Later records flow as usual, and the report is clean: nothing waits, no gap.
    push(6);
    sup.wait_until("later records stored", secs(30), |_| stored().len() == 9);
    assert_eq!(stream_messages().messages, 0, "the stream is empty");
    let (_, _, r) = p.call(api, "GET", "/api/v1/integrity", &admin, &Value::Null);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["stream"]["gaps"], 0, "{r}");
}
