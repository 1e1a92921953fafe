//! The default unit set on real PostgreSQL, NATS and SeaweedFS.

use std::process::Command;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::helpers::{Home, alive, http, secs};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/units");

#[test]
fn default_stack_ready_restarts_after_kill_and_dies_with_the_supervisor() {
    let h = Home::new();
    let mut sup = h.start_with(Some(std::path::Path::new(UNITS)), &[]);
    for u in ["postgresql", "nats", "seaweedfs", "api"] {
        sup.wait_state(u, "ready", secs(120));
    }
    for u in ["postgresql-init", "seaweedfs-init", "nats-init", "migrate"] {
        assert_eq!(sup.state(u), "exited", "first run initialises");
    }
    // The api is up on its port: health, readiness, the spec as committed, Swagger UI.
    let api: u16 = sup
        .cli_ok(&["config", "get", "ports.api"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(http(api, "GET", "/healthz", &[], b"").0, 200);
    let (status, _, body) = http(api, "GET", "/readyz", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("\"storage\":\"partitioned\""));
    let (_, _, spec) = http(api, "GET", "/api/openapi.json", &[], b"");
    let committed =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/tmidb.json")).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&spec).unwrap(),
        serde_json::from_slice::<serde_json::Value>(&committed).unwrap()
    );
    let (status, head, _) = http(api, "GET", "/api/docs", &[], b"");
    assert!(status == 200 && head.contains("text/html"), "{head}");
    // Ports come from the home's base, and scripts can read them back.
    let pg_port = sup
        .cli_ok(&["config", "get", "ports.postgresql"])
        .trim()
        .to_string();
    assert_eq!(pg_port, h.base.to_string());

    // PostgreSQL takes the generated password over TCP on its port.
    let password = std::fs::read_to_string(h.path().join("secrets/postgresql.password")).unwrap();
    let psql = || {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg_port,
                "-U",
                "postgres",
                "-tAc",
                "select 41 + 1",
            ])
            .env("PGPASSWORD", password.trim())
            .output()
            .unwrap()
    };
    let o = psql();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // kill -9 of each service's main pid: ready again with a new pid and restarts = 1.
    for u in ["postgresql", "nats", "seaweedfs"] {
        let old = sup.pid_of(u);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL).unwrap();
        sup.wait_until(&format!("{u} back with a new pid"), secs(120), |s| {
            s.unit(u).is_some_and(|x| {
                x["state"] == "ready" && x["pid"].as_i64().is_some_and(|p| p as i32 != old)
            })
        });
        let x = sup.unit(u).unwrap();
        assert_eq!(x["restarts"], 1, "{u}: {x}");
        assert_eq!(x["last_exit"]["value"], "SIGKILL");
    }
    let o = psql();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "42");

    // SIGKILL of the supervisor: nothing it started survives for more than 5 s.
    let procs = sup.descendants();
    assert!(procs.len() >= 3, "{procs:?}");
    sup.signal(Signal::SIGKILL);
    sup.wait_exit(secs(5));
    let start = Instant::now();
    while procs.iter().any(|p| alive(*p)) && start.elapsed() < secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let survivors: Vec<&i32> = procs.iter().filter(|p| alive(**p)).collect();
    assert!(
        survivors.is_empty(),
        "survivors 5 s after SIGKILL: {survivors:?}"
    );

    // A second start on the same home skips the init units and comes back.
    let sup = h.start_with(Some(std::path::Path::new(UNITS)), &[]);
    for u in ["postgresql", "nats", "seaweedfs", "api"] {
        sup.wait_state(u, "ready", secs(120));
    }
    assert_eq!(sup.state("postgresql-init"), "skipped");
    assert_eq!(sup.state("seaweedfs-init"), "skipped");

    // An orderly stop of each service ends with exit 0 (nats-server answers SIGTERM with
    // exit 1, hence its unit's stop_signal).
    for u in ["nats", "postgresql"] {
        sup.cli_ok(&["stop", u]);
        sup.wait_state(u, "inactive", secs(30));
        let x = sup.unit(u).unwrap();
        assert_eq!(x["last_exit"]["value"], 0, "{u}: {x}");
    }
}

#[test]
fn a_home_the_postgres_user_cannot_reach_is_named_before_initdb_runs() {
    let outer = tempfile::tempdir().unwrap();
    let locked = outer.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let home = locked.join("home");
    let o = Command::new(crate::helpers::SUPERVISOR)
        .arg("--home")
        .arg(&home)
        .args(["setup", "postgresql", "--user", "postgres"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("user postgres cannot reach")
            && err.contains(&format!("{} is mode 700", locked.display()))
            && err.contains("chmod o+x"),
        "{err}"
    );
    assert!(!home.join("data/postgresql/PG_VERSION").exists());
}
