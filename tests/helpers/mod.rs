//! Fixtures: a temp home on a free port block, a running supervisor with its JSON log in
//! a file, CLI calls, polling with deadlines, and clean-up of every process on drop.

pub mod client;
pub mod golden;

pub use client::{http, json};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_tmidb-supervisor");
pub const CLI: &str = env!("CARGO_BIN_EXE_tmidb-cli");

/// Ports every home reserves (all `[ports]` keys, with room to spare).
const BLOCK: u16 = 20;

static NEXT_BASE: AtomicU16 = AtomicU16::new(0);

/// The first port the kernel hands out for outgoing connections: test ports stay below
/// it, or a service stopped by a test could find its port taken by some client's socket
/// when it starts again (seen: SeaweedFS's filer gRPC port).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A block of BLOCK free consecutive ports in 10000..ephemeral_low(); distinct per
/// call, and per process by pid (a run uses ~1000 ports; runs start 1400 apart).
fn free_port_block() -> u16 {
    const LOW: u16 = 10000;
    let high = ephemeral_low().max(LOW + 20 * BLOCK);
    let blocks = (high - LOW) / BLOCK;
    let _ = NEXT_BASE.compare_exchange(
        0,
        (std::process::id() % 64) as u16 * 70 % blocks,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..blocks {
        let base = LOW + NEXT_BASE.fetch_add(1, Ordering::SeqCst) % blocks * BLOCK;
        if (base..base + BLOCK).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of {BLOCK} ports below {high}");
}

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
        let log = self.path().join("supervisor.log");
        let out = std::fs::File::create(&log).unwrap();
        let units = units.map(Path::to_path_buf).unwrap_or_else(|| self.units());
        let mut cmd = Command::new(SUPERVISOR);
        cmd.arg("--home")
            .arg(self.path())
            .arg("--units")
            .arg(&units)
            .args(["--log-format", "json"])
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

/// A multipart part: name, optional (file name, content type), bytes.
pub type Part<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

/// A multipart/form-data body of `fields`: (its Content-Type, its bytes).
pub fn multipart(fields: &[Part]) -> (String, Vec<u8>) {
    let boundary = "tmidbBoundary7d1f";
    let mut body = vec![];
    for (name, file, data) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some((filename, ct)) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

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
        let units = h.units();
        for u in [
            "postgresql-init",
            "postgresql",
            "migrate",
            "nats-init",
            "nats",
            "api",
            "seaweedfs-init",
            "seaweedfs",
        ] {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("units/{u}.unit.toml")),
                units.join(format!("{u}.unit.toml")),
            )
            .unwrap();
        }
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

/// A local HTTP server for sources and webhooks: GET answers `body`, POST bodies are
/// kept in `posts` (the first `fail_first` POSTs answer 500, to exercise retries).
pub struct TinyServer {
    /// Its port.
    pub port: u16,
    /// What GET answers.
    pub body: std::sync::Arc<std::sync::Mutex<String>>,
    /// Bodies POSTed, in order.
    pub posts: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// POSTs still to refuse.
    pub fail_first: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TinyServer {
    pub fn start(fail_first: usize) -> TinyServer {
        use std::io::{BufRead, Read, Write};
        use std::sync::{Arc, Mutex, atomic::AtomicUsize, atomic::Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new(String::from("[]")));
        let posts = Arc::new(Mutex::new(vec![]));
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let (b, p, f) = (body.clone(), posts.clone(), fail.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut r = std::io::BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut data = vec![0; len];
                let _ = r.read_exact(&mut data);
                let (status, out) = if line.starts_with("POST") {
                    if f.load(Ordering::SeqCst) > 0 {
                        f.fetch_sub(1, Ordering::SeqCst);
                        (500, String::from("{}"))
                    } else {
                        p.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&data).unwrap_or(Value::Null));
                        (200, String::from("{}"))
                    }
                } else {
                    (200, b.lock().unwrap().clone())
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                    out.len()
                );
            }
        });
        TinyServer {
            port,
            body,
            posts,
            fail_first: fail,
        }
    }
}

/// Publishes on core NATS the way an external system would (plain protocol), with
/// `user` and `password` if given, and waits for the server to have processed it
/// (PING/PONG). Err: the server's `-ERR` line.
pub fn nats_publish(
    port: u16,
    credentials: Option<(&str, &str)>,
    subject: &str,
    payloads: &[&[u8]],
) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut info = String::new();
    r.read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO"), "{info}");
    let mut connect = json!({"verbose": false, "pedantic": false});
    if let Some((user, pass)) = credentials {
        connect["user"] = user.into();
        connect["pass"] = pass.into();
    }
    let mut out = format!("CONNECT {connect}\r\n").into_bytes();
    for p in payloads {
        out.extend_from_slice(format!("PUB {subject} {}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"PING\r\n");
    // The server may close the connection on the way (refused credentials): its
    // answer says why.
    let mut w = s;
    let _ = w.write_all(&out);
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return Err("connection closed".into());
        }
        if l.starts_with("-ERR") {
            return Err(l.trim_end().to_string());
        }
        if l.starts_with("PONG") {
            return Ok(());
        }
    }
}

/// One Server-Sent Event: (id, event type, data).
pub type Sse = (String, String, Value);

/// Reads SSE events from `path` until `want` returns true or `timeout` passes.
pub fn sse(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    want: impl Fn(&[Sse]) -> bool,
) -> Vec<Sse> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    if !status.contains(" 200 ") {
        use std::io::Read;
        let mut rest = vec![];
        let _ = r.read_to_end(&mut rest);
        panic!("{path}: {status}{}", String::from_utf8_lossy(&rest));
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut events = vec![];
    let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
    let mut in_body = false;
    while std::time::Instant::now() < deadline && !want(&events) {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if !in_body {
            in_body = line.is_empty();
            continue;
        }
        // Chunk-size lines of the chunked encoding are skipped (hex only).
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        } else if line.is_empty() && !data.is_empty() {
            events.push((
                std::mem::take(&mut id),
                std::mem::take(&mut kind),
                serde_json::from_str(&std::mem::take(&mut data)).unwrap_or(Value::Null),
            ));
        }
    }
    events
}

/// psql as `postgres` against the `tmidb` database of the stack in `home`; returns
/// trimmed stdout and panics (with stderr) when psql fails.
pub fn psql(home: &Path, sql: &str) -> String {
    let port = Sup::attach(home)
        .cli_ok(&["config", "get", "ports.postgresql"])
        .trim()
        .to_string();
    let o = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "tmidb",
            "-tAc",
            sql,
            "-p",
            &port,
        ])
        .env(
            "PGPASSWORD",
            std::fs::read_to_string(home.join("secrets/postgresql.password"))
                .unwrap()
                .trim(),
        )
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
