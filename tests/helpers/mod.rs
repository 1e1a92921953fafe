//! Fixtures: a temp home on a free port block, a running supervisor with its JSON log in
//! a file, CLI calls, polling with deadlines, and clean-up of every process on drop.
//! Beside them: [`client`] (the one HTTP client, shared with the benchmarks),
//! [`golden`] (committed files the code must reproduce), [`stack`] (the api stack the
//! api tests share) and [`outside`] (what a test plays of the outside world: a web
//! server, a NATS publisher, psql).

pub mod client;
pub mod cluster;
pub mod golden;
pub mod metrics;
pub mod outside;
pub mod ports;
pub mod stack;

pub use client::{http, json, multipart, sse, try_http};
pub use outside::{TinyServer, nats_publish, psql};
pub use ports::free_port_block;
pub use stack::{ApiStack, api_stack};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_tmidb-supervisor");
pub const CLI: &str = env!("CARGO_BIN_EXE_tmidb-cli");

/// The default units an api stack with file storage runs (PostgreSQL, NATS,
/// SeaweedFS and the api, with their init and migrate oneshots).
pub const API_UNITS: &[&str] = &[
    "postgresql-init",
    "postgresql",
    "migrate",
    "nats-init",
    "nats",
    "api",
    "seaweedfs-init",
    "seaweedfs",
];

/// The default units of the ingestion pipeline beside an api stack: the data-manager
/// and the data-consumers.
pub const PIPELINE_UNITS: &[&str] = &["data-manager", "data-consumer"];

/// A temp home with its own units directory and port block.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub base: u16,
}

impl Home {
    pub fn new() -> Home {
        Home::with_prefix("tmidb-it-")
    }

    pub fn with_prefix(prefix: &str) -> Home {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        // Units may run as another user (postgres): it must reach the home.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = free_port_block();
        std::fs::write(
            dir.path().join("tmidb.toml"),
            format!("[ports]\nbase = {base}\n"),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("units")).unwrap();
        Home { dir, base }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn units(&self) -> PathBuf {
        self.dir.path().join("units")
    }

    /// Copies the default units `names` from the package's `units/`; `seaweedfs: false`
    /// drops the api's soft dependency on SeaweedFS (for stacks without it).
    pub fn default_units(&self, names: &[&str], seaweedfs: bool) {
        for u in names {
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("units/{u}.unit.toml")),
            )
            .unwrap();
            if seaweedfs {
                self.unit(u, &text);
            } else {
                self.unit(u, &text.replace("wants = [\"seaweedfs\"]", ""));
            }
        }
    }

    /// Writes (or replaces) units/NAME.unit.toml atomically, as editors do.
    pub fn unit(&self, name: &str, text: &str) {
        let tmp = self.units().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.units().join(format!("{name}.unit.toml"))).unwrap();
    }

    pub fn remove_unit(&self, name: &str) {
        std::fs::remove_file(self.units().join(format!("{name}.unit.toml"))).unwrap();
    }

    /// Starts a supervisor on this home with `units` (None: the home's own units dir).
    pub fn start_with(&self, units: Option<&Path>, env: &[(&str, &str)]) -> Sup {
        self.start_with_args(units, env, &[])
    }

    /// Like [`Home::start_with`], with extra supervisor options.
    pub fn start_with_args(
        &self,
        units: Option<&Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Sup {
        let log = self.path().join("supervisor.log");
        let out = std::fs::File::create(&log).unwrap();
        let units = units.map(Path::to_path_buf).unwrap_or_else(|| self.units());
        let mut cmd = Command::new(SUPERVISOR);
        cmd.arg("--home")
            .arg(self.path())
            .arg("--units")
            .arg(&units)
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().unwrap();
        let sup = Sup {
            pid: child.id() as i32,
            child: Some(child),
            home: self.path().to_path_buf(),
            log,
        };
        sup.wait_until("control socket answers", Duration::from_secs(20), |s| {
            s.cli(&["status", "--json"]).status.success()
        });
        sup
    }

    pub fn start(&self) -> Sup {
        self.start_with(None, &[])
    }
}

/// A running supervisor.
pub struct Sup {
    pub pid: i32,
    child: Option<Child>,
    pub home: PathBuf,
    pub log: PathBuf,
}

impl Sup {
    /// A handle on a supervisor this test did not start (the shared stack).
    pub fn attach(home: &Path) -> Sup {
        Sup {
            pid: 0,
            child: None,
            home: home.to_path_buf(),
            log: home.join("supervisor.log"),
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(CLI)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns stdout, panicking with stderr on failure.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "tmidb-cli {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log_tail()
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `status --json`, or why the CLI could not answer (the supervisor is not up yet).
    pub fn try_status(&self) -> Result<Vec<Value>, String> {
        let o = self.cli(&["status", "--json"]);
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("status --json: {e}"))
    }

    /// `status --json`; panics when the CLI fails (an empty list would pass vacuously).
    pub fn status(&self) -> Vec<Value> {
        let units = self
            .try_status()
            .unwrap_or_else(|e| panic!("tmidb-cli status: {e}"));
        assert!(!units.is_empty(), "tmidb-cli status listed no unit");
        units
    }

    /// One unit's status, None when the supervisor does not list it (or does not answer yet).
    pub fn unit(&self, name: &str) -> Option<Value> {
        self.try_status()
            .ok()?
            .into_iter()
            .find(|u| u["name"] == name)
    }

    /// A unit's state; `absent` when not listed, `unreachable` when the CLI fails.
    pub fn state(&self, name: &str) -> String {
        match self.try_status() {
            Err(_) => "unreachable".into(),
            Ok(units) => units
                .into_iter()
                .find(|u| u["name"] == name)
                .map(|u| u["state"].as_str().unwrap().to_string())
                .unwrap_or_else(|| "absent".into()),
        }
    }

    /// A unit's main pid; panics unless it is a real process id (a 0 or negative pid
    /// would signal the test's own process group).
    pub fn pid_of(&self, name: &str) -> i32 {
        let pid = self
            .unit(name)
            .and_then(|u| u["pid"].as_i64())
            .unwrap_or_else(|| panic!("{name} has no pid:\n{}", self.table()));
        assert!(pid > 1, "{name} reports pid {pid}:\n{}", self.table());
        pid as i32
    }

    pub fn table(&self) -> String {
        String::from_utf8_lossy(&self.cli(&["status"]).stdout).into_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Every record of the unified JSON stream.
    pub fn records(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The supervisor's own events (channel `supervisor`), as JSON records.
    pub fn events(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|v| v["unit"] == "supervisor")
            .collect()
    }

    /// Polls `f` every 50 ms until it holds; panics with status and log after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Sup) -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out after {timeout:?} waiting for: {what}\n{}\n--- log ---\n{}",
            self.table(),
            self.log_tail()
        );
    }

    pub fn wait_state(&self, unit: &str, state: &str, timeout: Duration) {
        self.wait_until(&format!("{unit} {state}"), timeout, |s| {
            s.state(unit) == state
        });
    }

    /// Every process below the supervisor.
    pub fn descendants(&self) -> Vec<i32> {
        descendants(self.pid)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig).unwrap();
    }

    /// Waits for the supervisor to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "supervisor did not exit within {timeout:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let left = descendants(self.pid);
            let _ = child.kill();
            let _ = child.wait();
            for p in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Parent pid and state of a process, from /proc.
fn stat(pid: i32) -> Option<(i32, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    let state = f.next()?.to_string();
    Some((f.next()?.parse().ok()?, state))
}

/// Live (non-zombie) processes below `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    let all: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| stat(p).map(|(pp, st)| (p, pp, st)))
        .collect();
    let mut out = vec![];
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp, st) in &all {
            if *pp == p && !out.contains(c) {
                if st != "Z" {
                    out.push(*c);
                }
                frontier.push(*c);
            }
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(_, st)| st != "Z")
}

/// Pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            }) && alive(*p)
        })
        .collect()
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Waits (up to 300 s) until the integrity report of the api on `api` says `category`
/// holds `n` rows and nothing is pending, then checks that it is whole: report ok, no
/// stream gap, `n` rows in the ledger and none unexpected, and the values `v` are
/// exactly `0..n` (each record stored once: nothing lost, nothing twice).
pub fn assert_stored_exactly_once(sup: &Sup, api: u16, token: &str, category: &str, n: u64) {
    let auth = format!("Bearer {token}");
    let get = |path: &str| json(api, "GET", path, &[("Authorization", &auth)], None).2;
    let of = |r: &Value| {
        r["categories"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["category"] == category).cloned())
            .unwrap_or(Value::Null)
    };
    // A timeout shows the last report and what JetStream says of the writers' consumer.
    let monitor = tmidb::config::Config::load(&sup.home).unwrap().ports["nats_monitor"];
    let mut last = Value::Null;
    let start = std::time::Instant::now();
    while !(of(&last)["stored_rows"] == n && last["stream"]["pending"] == 0) {
        if start.elapsed() > secs(300) {
            let jsz = try_http(
                monitor,
                "GET",
                "/jsz?accounts=true&streams=true&consumers=true&config=true",
                &[],
                b"",
            )
            .map(|(_, _, b)| String::from_utf8_lossy(&b).into_owned());
            panic!(
                "timed out waiting for every record stored\n{}\n--- log ---\n{}\n--- integrity ---\n{last}\n--- /jsz ---\n{jsz:?}",
                sup.table(),
                sup.log_tail(),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        last = get("/api/v1/integrity");
    }
    let r = get("/api/v1/integrity");
    let c = of(&r);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["stream"]["gaps"], 0, "{r}");
    assert_eq!(
        (
            c["stored_rows"].as_u64(),
            c["ledger_rows"].as_u64(),
            c["unexpected_rows"].as_u64()
        ),
        (Some(n), Some(n), Some(0)),
        "{r}"
    );
    let b = get(&format!(
        "/api/v1/categories/{category}/aggregate?field=v&interval=1d&raw=true"
    ));
    let rows = b.as_array().unwrap();
    let total: u64 = rows.iter().map(|x| x["count"].as_u64().unwrap()).sum();
    let sum: f64 = rows.iter().map(|x| x["sum"].as_f64().unwrap()).sum();
    assert_eq!(total, n);
    assert_eq!(sum, (0..n).sum::<u64>() as f64, "each v exactly once");
}
