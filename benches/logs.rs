//! Log throughput (`cargo bench --bench logs`): prints figures, asserts nothing.
//!
//! A child writes 1M × 100-byte lines as fast as it can, in two shapes: 64 KiB writes
//! (`yes … | head`) and one write per line (awk flushing each). For each: the same
//! child into `cat > file`; through the supervisor into the unified JSON sink (stdout
//! to a file); through the supervisor into the per-unit file sink only. Reported:
//! lines/s, the ratio to `cat`, supervisor CPU time and peak RSS, and lines lost (must
//! be 0).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_tmidb-supervisor");
mod common;

use common::{Mode, runs};

const CLI: &str = env!("CARGO_BIN_EXE_tmidb-cli");
/// Lines the child writes (set by the mode).
static LINES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn lines() -> u64 {
    *LINES.get().expect("set in main")
}

/// The child: 100-byte lines (99 characters and a newline), written in 64 KiB chunks
/// (`yes | head`) or one write per line (awk flushing after each).
fn child_cmd(per_line: bool) -> String {
    if per_line {
        format!(
            "awk -v n={} 'BEGIN {{ s = sprintf(\"%99s\", \"\"); gsub(/ /, \"x\", s); for (i = 0; i < n; i++) {{ print s; fflush() }} }}'",
            lines()
        )
    } else {
        format!("yes {} | head -n {}", "x".repeat(99), lines())
    }
}

fn cat_baseline(dir: &Path, per_line: bool) -> f64 {
    let out = dir.join("cat.out");
    let t0 = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("{} | cat > {}", child_cmd(per_line), out.display()))
        .status()
        .unwrap();
    let dt = t0.elapsed().as_secs_f64();
    assert!(st.success());
    let n = std::fs::read(&out)
        .unwrap()
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64;
    assert_eq!(n, lines());
    dt
}

struct Run {
    secs: f64,
    cpu_secs: f64,
    peak_rss_mib: f64,
    lines: u64,
}

fn proc_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// Runs the supervisor with one oneshot unit writing the lines; `file_sink` sends them
/// to per-unit files only (the channel is off for stdout); otherwise to stdout (JSON).
fn supervised(dir: &Path, base: u16, file_sink: bool, per_line: bool) -> Run {
    // A home per run: the line count reads what this run wrote.
    let kind = if file_sink { "file" } else { "json" };
    let home = dir.join(format!("home-{kind}-{base}"));
    std::fs::create_dir_all(home.join("units")).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = if file_sink {
        "[logs]\nfile_dir = \"logs\"\nfile_max_bytes = 10000000000\n"
    } else {
        ""
    };
    std::fs::write(
        home.join("tmidb.toml"),
        format!("[ports]\nbase = {base}\n{logs}"),
    )
    .unwrap();
    let enabled = if file_sink { "false" } else { "true" };
    std::fs::write(
        home.join("units/gen.unit.toml"),
        format!(
            "[unit]\ncondition_path_exists = [\"{go}\"]\n[service]\ntype = \"oneshot\"\ncommand = [\"/bin/sh\", \"-c\", {cmd:?}]\n[log]\nenabled = {enabled}\nformat = \"text\"\n",
            go = home.join("go").display(),
            cmd = child_cmd(per_line)
        ),
    )
    .unwrap();
    let stdout = std::fs::File::create(home.join("stdout.jsonl")).unwrap();
    let mut sup = Command::new(SUPERVISOR)
        .arg("--home")
        .arg(&home)
        .arg("--units")
        .arg(home.join("units"))
        .args(["--log-format", "json"])
        .env("TMIDB_LOG", "warn")
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cli = |args: &[&str]| {
        Command::new(CLI)
            .arg("--home")
            .arg(&home)
            .args(args)
            .output()
            .unwrap()
    };
    while !cli(&["status"]).status.success() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The unit was skipped (no `go` yet); start it now and time until the sink is done.
    std::fs::write(home.join("go"), "").unwrap();
    let t0 = Instant::now();
    let o = cli(&["start", "gen"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let peak = proc_field(sup.id(), "VmHWM:") as f64 / 1024.0;
    let cpu = cpu_secs(sup.id());
    // Stopping flushes every sink before the supervisor exits.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    sup.wait().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let text = if file_sink {
        std::fs::read(home.join("logs/gen.log")).unwrap_or_default()
    } else {
        std::fs::read(home.join("stdout.jsonl")).unwrap()
    };
    let needle = b"\"unit\":\"gen\",\"instance\"";
    let lines = text
        .split(|b| *b == b'\n')
        .filter(|l| l.windows(needle.len()).any(|w| w == needle))
        .count() as u64;
    Run {
        secs,
        cpu_secs: cpu,
        peak_rss_mib: peak,
        lines,
    }
}

fn main() {
    let Some(mode) = Mode::from_args() else {
        return;
    };
    LINES.set(mode.size(1_000_000, 50_000)).unwrap();
    let lines = lines();
    let dir = tempfile::Builder::new()
        .prefix("tmidb-logbench-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (shape, per_line) in [("64 KiB writes", false), ("one write per line", true)] {
        println!("-- the child writes {lines} lines of 100 bytes, {shape}");
        shape_figures(mode, dir.path(), per_line);
    }
}

fn shape_figures(mode: Mode, dir: &Path, per_line: bool) {
    let lines = lines();
    let (cat, all) = common::median_of(mode, "child | cat > file", || cat_baseline(dir, per_line));
    println!(
        "child | cat > file: {lines} lines in {cat:.3} s = {:.0} lines/s (median; runs {} s)",
        lines as f64 / cat,
        runs(&all, 3)
    );
    for (name, file_sink) in [
        ("unified JSON sink (stdout → file)", false),
        ("file sink", true),
    ] {
        let mut results = vec![];
        for i in 0..mode.runs() {
            println!("{} {name}: run {}", common::load(), i + 1);
            results.push(supervised(
                dir,
                common::free_port_block(),
                file_sink,
                per_line,
            ));
        }
        results.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        let r = &results[results.len() / 2];
        let lost: u64 = results.iter().map(|r| lines - r.lines.min(lines)).sum();
        println!(
            "{name}: {} lines in {:.3} s = {:.0} lines/s ({:.2}× cat; median of {}, runs {} s); supervisor CPU {:.2} s, peak RSS {:.1} MiB; lost {lost} in all runs",
            r.lines,
            r.secs,
            r.lines as f64 / r.secs,
            cat / r.secs,
            results.len(),
            results
                .iter()
                .map(|r| format!("{:.3}", r.secs))
                .collect::<Vec<_>>()
                .join(", "),
            r.cpu_secs,
            r.peak_rss_mib,
        );
        if mode == Mode::Quick {
            assert_eq!(lost, 0, "{name}: lines lost");
        }
    }
}
