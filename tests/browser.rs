//! The console in a real browser: tests/browser/console.py drives Debian's chromium
//! with Playwright (both installed by `make test-deps`; no browser download) through a
//! private stack of the default units, since it restarts one. Screenshots of the main
//! pages are left in `target/console-screenshots/`.

use std::path::Path;
use std::process::Command;

use crate::helpers::{Home, secs};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_console_works_in_chromium_without_csp_violations_or_foreign_requests() {
    let home = Home::new();
    home.default_units(crate::helpers::API_UNITS, true);
    let sup = home.start();
    for u in ["api", "seaweedfs"] {
        sup.wait_state(u, "ready", secs(120));
    }
    let port = sup
        .cli_ok(&["config", "get", "ports.api"])
        .trim()
        .to_string();
    let password = std::fs::read_to_string(home.path().join("secrets/admin.password")).unwrap();
    let python = Path::new(MANIFEST).join("target/pytools/bin/python");
    let out = Command::new(&python)
        .arg(Path::new(MANIFEST).join("tests/browser/console.py"))
        .env("TMIDB_URL", format!("http://127.0.0.1:{port}"))
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
}
