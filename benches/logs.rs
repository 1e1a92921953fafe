//! Log throughput (`cargo bench --bench logs`): prints figures, asserts nothing.
//!
//! A child writes 1M × 100-byte lines as fast as it can, in two shapes: 64 KiB writes
//! (`yes … | head`) and one write per line (awk flushing each). For each: the same
//! child into `cat > file`; through the supervisor into the unified JSON sink (stdout
//! to a file); through the supervisor into the per-unit file sink only.
//!
//! The figure is the child's pace: from its start (its own clock, the first thing it
//! runs) to its last line read — by `cat` (which then exits), or by the supervisor (the
//! time in that line's record). That is what the capture can slow; the supervisor's
//! own start request, spawn and shutdown (some 40 ms, fixed) are reported apart, as the
//! whole time from `tmidb-cli start` to the supervisor's exit with every sink flushed.
//! Also reported: the ratio to `cat`, supervisor CPU time and peak RSS, and lines lost
//! (must be 0).

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

/// The child as a shell command that first writes its start time (ns since the epoch)
/// to `start`.
fn timed_child(start: &Path, per_line: bool) -> String {
    format!("date +%s%N > {}; {}", start.display(), child_cmd(per_line))
}

/// Nanoseconds since the epoch written by `date +%s%N` to `path`.
fn read_ns(path: &Path) -> u128 {
    let text = std::fs::read_to_string(path).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {text:?}", path.display()))
}

/// The child into `cat > file`: its pace in seconds.
fn cat_baseline(dir: &Path, per_line: bool) -> f64 {
    let out = dir.join("cat.out");
    let (start, end) = (dir.join("cat.start"), dir.join("cat.end"));
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{{ {}; }} | cat > {}; date +%s%N > {}",
            timed_child(&start, per_line),
            out.display(),
            end.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let dt = (read_ns(&end) - read_ns(&start)) as f64 / 1e9;
    let n = std::fs::read(&out)
        .unwrap()
        .iter()
        .filter(|b| **b == b'\n')
        .count() as u64;
    assert_eq!(n, lines());
    // Deleted at once: pages left dirty would be written back during the next runs.
    let _ = std::fs::remove_file(&out);
    dt
}

struct Run {
    /// The child's pace: its start to its last line read.
    secs: f64,
    /// From `tmidb-cli start` to the supervisor's exit, every sink flushed.
    total_secs: f64,
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
            cmd = timed_child(&home.join("child.start"), per_line)
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
    let total_secs = t0.elapsed().as_secs_f64();
    let text = if file_sink {
        std::fs::read(home.join("logs/gen.log")).unwrap_or_default()
    } else {
        std::fs::read(home.join("stdout.jsonl")).unwrap()
    };
    let needle = b"\"unit\":\"gen\",\"instance\"";
    let mut lines = 0;
    let mut last = &b""[..];
    for l in text.split(|b| *b == b'\n') {
        if l.windows(needle.len()).any(|w| w == needle) {
            lines += 1;
            last = l;
        }
    }
    let last: serde_json::Value = serde_json::from_slice(last).expect("a record of gen");
    let read = humantime::parse_rfc3339(last["ts"].as_str().expect("ts")).unwrap();
    let read = read
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secs = (read - read_ns(&home.join("child.start"))) as f64 / 1e9;
    let _ = std::fs::remove_dir_all(&home);
    Run {
        secs,
        total_secs,
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

/// Runs of each figure: the runs are short, so more of them than other benchmarks do.
fn run_count(mode: Mode) -> usize {
    mode.size(7, 1)
}

/// The runs of one shape, interleaved (`cat`, JSON sink, file sink, and again), so that
/// whatever the machine does meanwhile falls on all three alike; each sink's ratio to
/// `cat` is given per run (paired with that run's `cat`) and as the median of those.
fn shape_figures(mode: Mode, dir: &Path, per_line: bool) {
    let lines = lines();
    let sinks = [
        ("unified JSON sink (stdout → file)", false),
        ("file sink", true),
    ];
    let mut cat = vec![];
    let mut results: Vec<Vec<Run>> = sinks.iter().map(|_| vec![]).collect();
    for i in 0..run_count(mode) {
        println!("{} run {}: cat, then each sink", common::load(), i + 1);
        cat.push(cat_baseline(dir, per_line));
        for ((_, file_sink), runs) in sinks.iter().zip(&mut results) {
            runs.push(supervised(
                dir,
                common::free_port_block(),
                *file_sink,
                per_line,
            ));
        }
    }
    let cat_median = common::median(cat.clone());
    println!(
        "child | cat > file: {lines} lines in {cat_median:.3} s = {:.0} lines/s (median; runs {} s)",
        lines as f64 / cat_median,
        runs(&cat, 3)
    );
    for ((name, _), all) in sinks.iter().zip(&results) {
        let lost: u64 = all.iter().map(|r| lines - r.lines.min(lines)).sum();
        let ratios: Vec<f64> = all.iter().zip(&cat).map(|(r, c)| c / r.secs).collect();
        let mut sorted: Vec<&Run> = all.iter().collect();
        sorted.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        let r = sorted[sorted.len() / 2];
        let total = common::median(all.iter().map(|r| r.total_secs).collect());
        println!(
            "{name}: {} lines in {:.3} s = {:.0} lines/s (median of {}, runs {} s); {:.2}× cat (median of the paired runs {}); with start and stop {total:.3} s; supervisor CPU {:.2} s, peak RSS {:.1} MiB; lost {lost} in all runs",
            r.lines,
            r.secs,
            r.lines as f64 / r.secs,
            all.len(),
            runs(&all.iter().map(|r| r.secs).collect::<Vec<_>>(), 3),
            common::median(ratios.clone()),
            runs(&ratios, 2),
            r.cpu_secs,
            r.peak_rss_mib,
        );
        if mode == Mode::Quick {
            assert_eq!(lost, 0, "{name}: lines lost");
        }
    }
}
