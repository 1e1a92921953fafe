//! The console in a real browser: tests/browser/console.py drives Debian's chromium
//! with Playwright (both installed by `make test-deps`; no browser download) through a
//! private stack of every default unit (it restarts one, and pushes records through
//! the data-manager), checking each page with the vendored axe-core. Screenshots of
//! the main pages are left in `target/console-screenshots/`.

use std::path::Path;
use std::process::Command;

use crate::helpers::{Home, secs};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_console_works_in_chromium_without_csp_violations_or_foreign_requests() {
    let home = Home::new();
    home.default_units(crate::helpers::API_UNITS, true);
    home.default_units(crate::helpers::PIPELINE_UNITS, true);
    let sup = home.start();
    for u in ["api", "seaweedfs", "data-manager", "data-consumer@1"] {
        sup.wait_state(u, "ready", secs(120));
    }
    let port = |key: &str| sup.cli_ok(&["config", "get", key]).trim().to_string();
    let password = std::fs::read_to_string(home.path().join("secrets/admin.password")).unwrap();
    let python = Path::new(MANIFEST).join("target/pytools/bin/python");
    let out = Command::new(&python)
        .arg(Path::new(MANIFEST).join("tests/browser/console.py"))
        .env(
            "TMIDB_URL",
            format!("http://127.0.0.1:{}", port("ports.api")),
        )
        .env(
            "TMIDB_INGEST",
            format!("http://127.0.0.1:{}", port("ports.ingest")),
        )
        .env("TMIDB_ADMIN_PASSWORD", password.trim())
        .env("TMIDB_CLI", crate::helpers::CLI)
        .env("TMIDB_HOME", home.path())
        .env(
            "TMIDB_SHOTS",
            Path::new(MANIFEST).join("target/console-screenshots"),
        )
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make test-deps`)", python.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser scenario failed:\n{text}");
    assert!(text.contains("ok: log out"), "{text}");
    let audited: usize = text
        .split("audited ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        audited >= 10,
        "axe-core should have audited every page: {text}"
    );
}
