//! What the stack benchmarks share: a temp home with a subset of the default units, the
//! supervisor (dying with the bench), an HTTP helper and an admin login.

#![allow(dead_code)]

#[path = "../../tests/helpers/client.rs"]
pub mod client;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running stack in a temp home.
pub struct Stack {
    dir: tempfile::TempDir,
    sup: Child,
    /// Admin session token.
    pub token: String,
}

impl Stack {
    /// Starts `units` (from `units/`, without the api's soft dependency on SeaweedFS) on
    /// ports from `base`; returns once `wait_port` accepts and the admin is logged in.
    pub fn start(prefix: &str, base: u16, units: &[&str], wait_port: u16) -> Stack {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let home = dir.path();
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(home.join("tmidb.toml"), format!("[ports]\nbase = {base}\n")).unwrap();
        std::fs::create_dir(home.join("units")).unwrap();
        for u in units {
            let text = std::fs::read_to_string(format!(
                "{}/units/{u}.unit.toml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            std::fs::write(
                home.join(format!("units/{u}.unit.toml")),
                text.replace("wants = [\"seaweedfs\"]", ""),
            )
            .unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tmidb-supervisor"));
        // SAFETY: prctl only, between fork and exec: the stack stops if the bench dies.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let sup = cmd
            .arg("--home")
            .arg(home)
            .arg("--units")
            .arg(home.join("units"))
            .env("TMIDB_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", wait_port)).is_err()
            || !home.join("secrets/admin.password").exists()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the stack never came up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        let pw = std::fs::read_to_string(home.join("secrets/admin.password")).unwrap();
        let login = format!("{{\"username\":\"admin\",\"password\":\"{}\"}}", pw.trim());
        let (_, body) = http(
            base + 11,
            "POST",
            "/api/v1/auth/login",
            "",
            login.as_bytes(),
        );
        let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        Stack { dir, sup, token }
    }

    /// The home.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Orderly stop.
    pub fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.sup.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.sup.wait();
    }
}

/// A request with a Bearer token and a JSON body: (status, body).
pub fn http(port: u16, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _, body) = client::http(port, method, path, &headers, body);
    (status, body)
}
