//! Supervisor benchmarks (`cargo bench --bench supervisor`): prints figures, asserts nothing.
//!
//! 1. Time from supervisor spawn to 100 trivial units ready (measured by the supervisor's
//!    own READY=1 on a NOTIFY_SOCKET we pass it).
//! 2. Restart latency after kill -9 of a child listening on TCP, minus the child's own
//!    cold start (the same command spawned directly).
//! 3. Idle RSS, CPU and wake-ups (context switches) of the supervisor with 8 children.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Mode, load, median};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_tmidb-supervisor");

fn home(base: u16) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("tmidb-bench-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.path().join("tmidb.toml"),
        format!("[ports]\nbase = {base}\n"),
    )
    .unwrap();
    std::fs::create_dir(d.path().join("units")).unwrap();
    d
}

fn start(home: &Path, notify: Option<&Path>) -> Child {
    let mut c = Command::new(SUPERVISOR);
    c.arg("--home")
        .arg(home)
        .arg("--units")
        .arg(home.join("units"))
        .args(["--log-format", "json"]);
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("TMIDB_LOG", "warn");
    match notify {
        Some(p) => c.env("NOTIFY_SOCKET", p),
        None => c.env_remove("NOTIFY_SOCKET"),
    };
    c.spawn().unwrap()
}

/// A home with `n` sleeping units; starts its supervisor and returns it once the
/// supervisor's own READY=1 arrives, with the time that took.
fn start_sleepers(base: u16, n: usize) -> (tempfile::TempDir, Child, Duration) {
    let h = home(base);
    for i in 0..n {
        std::fs::write(
            h.path().join(format!("units/u{i:03}.unit.toml")),
            "[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
        )
        .unwrap();
    }
    let sock = h.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t0 = Instant::now();
    let sup = start(h.path(), Some(&sock));
    let mut buf = [0u8; 128];
    let n = rx.recv(&mut buf).expect("READY=1");
    let took = t0.elapsed();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    (h, sup, took)
}

fn stop(mut c: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = c.wait();
}

fn startup_100(mode: Mode) {
    let mut runs = vec![];
    println!("{}", load());
    for _ in 0..mode.size(5, 1) {
        let (_h, sup, took) = start_sleepers(common::free_port_block(), 100);
        let dt = took.as_secs_f64() * 1000.0;
        runs.push(dt);
        stop(sup);
    }
    println!(
        "startup: 100 trivial units ready in {:.1} ms (median of {}; runs {:?} ms; target < 150 ms)",
        median(runs.clone()),
        runs.len(),
        runs.iter()
            .map(|r| (r * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
}

/// A listener that binds, then sleeps: python3 -S keeps its cold start small.
fn listener_cmd(port: u16) -> Vec<String> {
    let code = format!(
        "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',{port})); s.listen(16); time.sleep(1000)"
    );
    // The real interpreter, not a pyenv shim (bash + pyenv would add ~40 ms of noise).
    vec![
        tmidb::config::resolve_program("python3"),
        "-S".into(),
        "-c".into(),
        code,
    ]
}

fn wait_port(port: u16, deadline: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn wait_port_closed(port: u16) {
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn status_pid(home: &Path, unit: &str) -> Option<i32> {
    let o = Command::new(env!("CARGO_BIN_EXE_tmidb-cli"))
        .arg("--home")
        .arg(home)
        .args(["status", unit, "--json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v[0]["pid"].as_i64().map(|p| p as i32)
}

/// Children of `pid` (all threads), from /proc.
fn children(pid: i32) -> Vec<i32> {
    let mut out = vec![];
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(c.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    out
}

fn restart_latency(mode: Mode) {
    println!("{}", load());
    let port = common::free_port_block();
    let cmd = listener_cmd(port);
    // The child's own cold start, spawned directly.
    let mut cold = vec![];
    for _ in 0..mode.size(15, 3) {
        let t0 = Instant::now();
        let mut c = Command::new(&cmd[0]).args(&cmd[1..]).spawn().unwrap();
        wait_port(port, Duration::from_secs(10));
        cold.push(t0.elapsed().as_secs_f64() * 1000.0);
        c.kill().unwrap();
        c.wait().unwrap();
        wait_port_closed(port);
    }
    let h = home(common::free_port_block());
    let argv: Vec<String> = cmd.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        h.path().join("units/l.unit.toml"),
        format!("[service]\ncommand = [{}]\n[readiness]\nprobe = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ninterval = \"1ms\"\n[restart]\nburst = 1000\nreset_after = \"1ms\"\n", argv.join(", ")),
    )
    .unwrap();
    let sup = start(h.path(), None);
    let sup_pid = sup.id() as i32;
    let mut restart = vec![];
    let mut respawn: Vec<f64> = vec![];
    for _ in 0..mode.size(15, 3) {
        let pid = loop {
            if let Some(p) = status_pid(h.path(), "l") {
                break p;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        wait_port(port, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // What the supervisor adds: kill → the replacement process exists.
        while !children(sup_pid).iter().any(|c| *c != pid) && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_micros(50));
        }
        respawn.push(t0.elapsed().as_secs_f64() * 1000.0);
        // The port closes with the process; then time until the new child accepts.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && t0.elapsed() < Duration::from_secs(1)
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        wait_port(port, Duration::from_secs(10));
        restart.push(t0.elapsed().as_secs_f64() * 1000.0);
        while status_pid(h.path(), "l") == Some(pid) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    stop(sup);
    let max = respawn.iter().cloned().fold(0.0, f64::max);
    let (c, r, s) = (median(cold), median(restart), median(respawn));
    println!(
        "restart: kill -9 → replacement spawned {s:.2} ms (max {max:.2}); kill -9 → port accepting again {r:.2} ms vs the child's own cold start {c:.2} ms (difference {:.2} ms); medians of {}; target < 5 ms added",
        r - c,
        mode.size(15, 3)
    );
}

fn proc_stats(pid: i32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // Wake-ups: voluntary context switches of every thread.
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let s = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        switches += s
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (rss, ticks, switches)
}

fn idle(mode: Mode) {
    println!("{}", load());
    let (_h, sup, _) = start_sleepers(common::free_port_block(), 8);
    std::thread::sleep(Duration::from_secs(1));
    let pid = sup.id() as i32;
    let (_, t1, s1) = proc_stats(pid);
    let window = Duration::from_secs(mode.size(10, 2));
    std::thread::sleep(window);
    let (rss, t2, s2) = proc_stats(pid);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = (t2 - t1) as f64 / hz / window.as_secs_f64() * 100.0;
    println!(
        "idle with 8 children: RSS {:.1} MiB, CPU {cpu:.3} %, {} wake-ups (voluntary context switches, all threads) in {}s (target < 10 MiB, none periodic)",
        rss as f64 / 1024.0,
        s2 - s1,
        window.as_secs()
    );
    stop(sup);
}

fn main() {
    let Some(mode) = Mode::from_args() else {
        return;
    };
    startup_100(mode);
    restart_latency(mode);
    idle(mode);
}
