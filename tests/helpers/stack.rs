//! The api stack every api test of the binary shares.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Home, SUPERVISOR, Sup, alive, json};

/// The api stack shared by every api test of this binary: PostgreSQL, migrate,
/// SeaweedFS and the api from the default units, in one temp home.
pub struct ApiStack {
    /// The home.
    pub home: PathBuf,
    /// The api port.
    pub port: u16,
    /// The generated admin password.
    pub admin_password: String,
}

/// Starts the shared api stack once. The supervisor is spawned from a thread that parks
/// for the life of the test process with PR_SET_PDEATHSIG = SIGTERM, so the stack stops
/// in order when the test binary exits.
pub fn api_stack() -> &'static ApiStack {
    static STACK: std::sync::OnceLock<ApiStack> = std::sync::OnceLock::new();
    STACK.get_or_init(|| {
        // Shared homes outlive the test process; remove those whose owner has exited.
        for e in std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            let owner = std::fs::read_to_string(p.join("owner.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tmidb-shared-"))
                && owner.is_some_and(|o| !alive(o))
            {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
        let h = Home::with_prefix("tmidb-shared-");
        let toml = std::fs::read_to_string(h.path().join("tmidb.toml")).unwrap();
        std::fs::write(
            h.path().join("tmidb.toml"),
            format!("{toml}[api]\nmax_upload_bytes = 30000000\n"),
        )
        .unwrap();
        std::fs::write(h.path().join("owner.pid"), std::process::id().to_string()).unwrap();
        h.default_units(crate::helpers::API_UNITS, true);
        let home = h.dir.keep();
        let (tx, rx) = std::sync::mpsc::channel();
        let h2 = home.clone();
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let log = std::fs::File::create(h2.join("supervisor.log")).unwrap();
            let mut cmd = Command::new(SUPERVISOR);
            cmd.arg("--home")
                .arg(&h2)
                .arg("--units")
                .arg(h2.join("units"))
                .args(["--log-format", "json"]);
            cmd.stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null());
            // SAFETY: prctl only, between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                        .map_err(std::io::Error::from)
                });
            }
            let mut child = cmd.spawn().unwrap();
            tx.send(child.id()).unwrap();
            // Living (and reaping) for as long as the supervisor runs keeps its
            // PDEATHSIG armed until the test process exits.
            let _ = child.wait();
        });
        let pid = rx.recv().unwrap() as i32;
        let sup = Sup {
            pid,
            child: None,
            home: home.clone(),
            log: home.join("supervisor.log"),
        };
        sup.wait_until("api ready", Duration::from_secs(120), |s| {
            s.state("api") == "ready"
        });
        let port: u16 = sup
            .cli_ok(&["config", "get", "ports.api"])
            .trim()
            .parse()
            .unwrap();
        let admin_password = std::fs::read_to_string(home.join("secrets/admin.password"))
            .unwrap()
            .trim()
            .to_string();
        ApiStack {
            home,
            port,
            admin_password,
        }
    })
}

impl ApiStack {
    /// A request with optional JSON body and extra headers; returns (status, headers, JSON or null).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, String, Value) {
        json(self.port, method, path, headers, body)
    }

    /// Logs in; returns (token, csrf token, set-cookie value).
    pub fn login(&self, user: &str, password: &str) -> (String, String, String) {
        let (status, head, body) = self.call(
            "POST",
            "/api/v1/auth/login",
            &[],
            Some(&serde_json::json!({"username": user, "password": password})),
        );
        assert_eq!(status, 200, "login {user}: {body}");
        let cookie = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .or_else(|| l.strip_prefix("Set-Cookie: "))
            })
            .expect("Set-Cookie")
            .to_string();
        (
            body["token"].as_str().unwrap().to_string(),
            body["csrf_token"].as_str().unwrap().to_string(),
            cookie,
        )
    }

    /// An admin Bearer token (a session).
    pub fn admin(&self) -> String {
        static T: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        T.get_or_init(|| self.login("admin", &self.admin_password).0)
            .clone()
    }
}
