//! The contract, checked by tools nobody here wrote, against a private stack of every
//! default unit (schemathesis creates and deletes at will, so it must not share the
//! api tests' stack):
//!
//! - Python clients generated (unedited) by openapi-python-client from the committed
//!   documents drive a scenario with error paths (401, 403, 404, 409, 413, 429) and a
//!   push through the data-manager (tests/client/scenario.py);
//! - schemathesis (pinned, installed by `make test-deps` into target/pytools) runs
//!   every check, stateful phase included, over both live documents:
//!   tests/contract/*.schemathesis.toml say what is configured and why.
//!
//! `TMIDB_SCHEMATHESIS_EXAMPLES` (default 25) and `TMIDB_SCHEMATHESIS_SEED` (default
//! fixed, so a failure reproduces) widen or vary the search.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Home, Sup, http, multipart, secs};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
/// The largest upload the stack takes, small so the client's 413 costs nothing.
const MAX_UPLOAD: u64 = 1 << 20;

struct Stack {
    home: Home,
    sup: Sup,
    api: u16,
    ingest: u16,
    admin_password: String,
}

impl Stack {
    fn start() -> Stack {
        let home = Home::new();
        let toml = std::fs::read_to_string(home.path().join("tmidb.toml")).unwrap();
        std::fs::write(
            home.path().join("tmidb.toml"),
            format!("{toml}[api]\nmax_upload_bytes = {MAX_UPLOAD}\n"),
        )
        .unwrap();
        for e in std::fs::read_dir(Path::new(MANIFEST).join("units")).unwrap() {
            let p = e.unwrap().path();
            // The unit files only (units/node/ is the node profile).
            if p.is_file() {
                std::fs::copy(&p, home.units().join(p.file_name().unwrap())).unwrap();
            }
        }
        let sup = home.start();
        for u in ["api", "data-manager", "data-consumer@1", "seaweedfs"] {
            sup.wait_state(u, "ready", secs(180));
        }
        let port = |k: &str| {
            sup.cli_ok(&["config", "get", k])
                .trim()
                .parse::<u16>()
                .unwrap()
        };
        let admin_password = std::fs::read_to_string(home.path().join("secrets/admin.password"))
            .unwrap()
            .trim()
            .to_string();
        Stack {
            api: port("ports.api"),
            ingest: port("ports.ingest"),
            home,
            sup,
            admin_password,
        }
    }

    /// A JSON request to the api with `token`: (status, body).
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let (status, _, v) = crate::helpers::json(
            self.api,
            method,
            path,
            &[("Authorization", &auth)],
            body.as_ref(),
        );
        (status, v)
    }

    fn login(&self) -> (String, String) {
        let pw = &self.admin_password;
        let (status, _, raw) = http(
            self.api,
            "POST",
            "/api/v1/auth/login",
            &[("Content-Type", "application/json")],
            json!({"username": "admin", "password": pw})
                .to_string()
                .as_bytes(),
        );
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(status, 200, "{v}");
        (
            v["token"].as_str().unwrap().to_string(),
            v["user"]["id"].as_str().unwrap().to_string(),
        )
    }
}

/// The tool under `target/pytools/bin` (where `make test-deps` puts it), else on PATH.
fn tool(name: &str) -> PathBuf {
    let pinned = Path::new(MANIFEST).join("target/pytools/bin").join(name);
    if pinned.exists() {
        pinned
    } else {
        PathBuf::from(name)
    }
}

/// Generates a client package `package` from `spec` into `dir`; it must generate
/// without a warning but those that contain one of `tolerated` (each a limit of the
/// generator, not a fault of the document).
fn generate(spec: &str, dir: &Path, package: &str, tolerated: &[&str]) {
    let out = Command::new(tool("openapi-python-client"))
        .args(["generate", "--path"])
        .arg(Path::new(MANIFEST).join(spec))
        .args(["--meta", "none", "--output-path"])
        .arg(dir.join(package))
        .output()
        .expect("openapi-python-client (`make test-deps` installs it)");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // Each warning is a `WARNING parsing …` block whose next line says why.
    let warnings: Vec<&str> = log
        .split("WARNING parsing")
        .skip(1)
        .filter_map(|w| {
            w.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.ends_with('.'))
        })
        .collect();
    assert!(
        !log.contains("Unable to process")
            && warnings
                .iter()
                .all(|w| tolerated.iter().any(|t| w.contains(t)))
            && (warnings.is_empty() != log.contains("Warning(s)")),
        "{spec} must generate cleanly:\n{log}"
    );
}

#[test]
fn generated_clients_and_schemathesis_find_the_contract_true() {
    let s = Stack::start();
    // 1. The generated clients first: schemathesis' failed logins would throttle
    //    this address's logins for minutes.
    let gen_dir = tempfile::tempdir().unwrap();
    // It has no model for a download of any media type (`*/*`: a file comes back with
    // the type it was stored with); its client returns the raw bytes there.
    generate(
        "openapi/tmidb.json",
        gen_dir.path(),
        "tmidb_client",
        &["(Unsupported content_type */*)"],
    );
    // openapi-python-client generates JSON bodies (and forms, octet streams) only;
    // the push's NDJSON and CSV bodies are left out of its client, rightly documented.
    generate(
        "openapi/ingest.json",
        gen_dir.path(),
        "tmidb_ingest_client",
        &[
            "Unsupported content type application/x-ndjson",
            "Unsupported content type text/csv",
        ],
    );
    let run = Command::new(tool("python3"))
        .arg(Path::new(MANIFEST).join("tests/client/scenario.py"))
        .arg(gen_dir.path())
        .arg(format!("http://127.0.0.1:{}", s.api))
        .arg(format!("http://127.0.0.1:{}", s.ingest))
        .arg(&s.admin_password)
        .arg(MAX_UPLOAD.to_string())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success() && text.contains("OK"), "{text}");

    // 2. Objects for schemathesis to find, so its cases reach past 404.
    let (token, admin_id) = s.login();
    let fixture = "st_fixture";
    let (st, v) = s.call(
        "POST",
        "/api/v1/categories",
        &token,
        Some(json!({"name": fixture, "fields": [
            {"name": "v", "type": "float"},
            {"name": "n", "type": "int"},
            {"name": "note", "type": "text"},
        ]})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.call(
        "POST",
        "/api/v1/sources",
        &token,
        Some(json!({"name": "st-source", "category": fixture, "kind": "http_push"})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.call(
        "POST",
        &format!("/api/v1/categories/{fixture}/records"),
        &token,
        Some(json!([{"target": "t1", "ts": "2026-01-01T00:00:00Z", "v": 1.5, "n": 2}])),
    );
    assert!(st == 201 || st == 200, "{st} {v}");
    let auth = format!("Bearer {token}");
    let (st, _, raw) = http(
        s.ingest,
        "POST",
        &format!("/ingest/{fixture}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        br#"[{"target": "t1", "v": "not a number"}]"#,
    );
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&raw));
    let mut dead_letter = String::new();
    s.sup
        .wait_until("the dead letter is stored", secs(60), |_| {
            let (_, v) = s.call(
                "GET",
                &format!("/api/v1/dead-letters?category={fixture}"),
                &token,
                None,
            );
            match v[0]["id"].as_str() {
                Some(id) => {
                    dead_letter = id.to_string();
                    true
                }
                None => false,
            }
        });
    let (ct, body) = multipart(&[("file", Some(("hello.txt", "text/plain")), b"hello")]);
    let (st, _, raw) = http(
        s.api,
        "POST",
        "/api/v1/files",
        &[("Authorization", &auth), ("Content-Type", &ct)],
        &body,
    );
    let file: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(st, 201, "{file}");

    // 3. schemathesis over both documents.
    let reports = s.home.path().join("schemathesis");
    let env = [
        ("TMIDB_TOKEN", token.as_str()),
        ("TMIDB_CATEGORY", fixture),
        ("TMIDB_SOURCE", "st-source"),
        ("TMIDB_DEAD_LETTER", dead_letter.as_str()),
        ("TMIDB_FILE", file["id"].as_str().unwrap()),
        ("TMIDB_ADMIN_ID", admin_id.as_str()),
    ];
    let api_url = format!("http://127.0.0.1:{}/api/openapi.json", s.api);
    let ingest_url = format!("http://127.0.0.1:{}/openapi.json", s.ingest);
    schemathesis("api", &api_url, &env, &reports);
    schemathesis("ingest", &ingest_url, &env, &reports);
}

/// Runs schemathesis with `tests/contract/NAME.schemathesis.toml` over `url`; prints
/// its summary (the cases it ran) and fails with its report on any failure.
fn schemathesis(name: &str, url: &str, env: &[(&str, &str)], reports: &Path) {
    let examples = std::env::var("TMIDB_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let seed = std::env::var("TMIDB_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261202".into());
    let config = Path::new(MANIFEST).join(format!("tests/contract/{name}.schemathesis.toml"));
    let out = Command::new(tool("schemathesis"))
        .arg("--config-file")
        .arg(&config)
        .args(["run", url, "--checks", "all", "--no-color"])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--generation-database", "none", "--report", "junit"])
        .arg("--report-dir")
        .arg(reports.join(name))
        .envs(env.iter().copied())
        .output()
        .expect("schemathesis (`make test-deps` installs it into target/pytools)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Selected:") || l.contains(" in "))
        .filter(|l| l.contains("generated") || l.contains("Selected:") || l.starts_with('='))
        .collect();
    eprintln!("schemathesis {name}:\n{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis {name} found failures:\n{text}"
    );
}
