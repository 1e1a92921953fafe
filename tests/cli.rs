//! tmidb-cli: output snapshots, completions, man pages, broken pipes.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::helpers::{CLI, Home, Sup, secs};

/// `actual` is `tests/snapshots/NAME.txt` (a golden file).
fn snapshot(name: &str, actual: &str) {
    crate::helpers::golden::assert(
        &format!("tests/snapshots/{name}.txt"),
        actual.as_bytes(),
        "run `make snapshots` to accept the output, then review the diff",
    );
}

/// Replaces what changes from run to run: pids, ages, timings, times, the temp home.
fn normalize(text: &str, sup: &Sup) -> String {
    let home = sup.home.display().to_string();
    let pid = regex::Regex::new(r"^(\S+\s+\S+\s+)(\d+|-)(\s+\d+\s+)(\d+[smhd][\dsmh]*)").unwrap();
    let took = regex::Regex::new(r"after \d+ms").unwrap();
    let clock = regex::Regex::new(r"^\d\d:\d\d:\d\d\.\d{3}").unwrap();
    let spawned = regex::Regex::new(r"pid \d+").unwrap();
    text.lines()
        .map(|l| {
            let l = l.replace(&home, "$HOME");
            let l = pid.replace(&l, |c: &regex::Captures| {
                let p = if &c[2] == "-" { "-" } else { "PID" };
                format!(
                    "{}{p:>w$}{}{:>a$}",
                    &c[1],
                    &c[3],
                    "AGE",
                    w = c[2].len(),
                    a = c[4].len()
                )
            });
            let l = took.replace_all(&l, "after Nms");
            let l = spawned.replace_all(&l, "pid N");
            clock.replace(&l, "HH:MM:SS.mmm").into_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn output_snapshots_of_status_units_list_and_logs_show() {
    let h = Home::new();
    h.unit("db", "[unit]\ndescription = \"The database\"\n[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo db up; echo db serves; exec sleep 1000\"]\n[readiness]\nprobe = \"log\"\npattern = \"^db up$\"\n");
    h.unit("app", "[unit]\ndescription = \"The app\"\nrequires = [\"db\"]\n[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo app 1; echo app 2; exec sleep 1000\"]\n");
    h.unit(
        "setup",
        "[service]\ntype = \"oneshot\"\ncommand = [\"/bin/true\"]\n",
    );
    h.unit("off", "[unit]\ncondition_path_exists = [\"/nonexistent\"]\n[service]\ncommand = [\"/bin/true\"]\n");
    let sup = h.start();
    sup.wait_until("app says 2", secs(10), |s| {
        s.cli_ok(&["logs", "show", "app"]).contains("app 2")
    });
    sup.wait_state("setup", "exited", secs(10));
    snapshot("status", &normalize(&sup.cli_ok(&["status"]), &sup));
    snapshot(
        "units-list",
        &normalize(&sup.cli_ok(&["units", "list"]), &sup),
    );
    snapshot(
        "logs-show",
        &normalize(&sup.cli_ok(&["logs", "show", "app", "db"]), &sup),
    );
    // Closing stdout early is not an error.
    let mut c = Command::new(CLI)
        .arg("--home")
        .arg(&sup.home)
        .args(["logs", "show", "-n", "10000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdout.take());
    assert!(c.wait().unwrap().success());
}

fn has(shell: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {shell}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn completion_scripts_parse_in_their_shells_and_complete_unit_names() {
    let dir = tempfile::tempdir().unwrap();
    // `make test` installs zsh and fish; bash is always there.
    let shells: Vec<&str> = ["bash", "zsh", "fish"]
        .into_iter()
        .filter(|s| *s == "bash" || has(s))
        .collect();
    if std::env::var_os("CI").is_some() {
        assert_eq!(
            shells,
            ["bash", "zsh", "fish"],
            "make test installs every shell"
        );
    }
    for shell in &shells {
        let o = Command::new(CLI)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success());
        let script = dir.path().join(format!("tmidb.{shell}"));
        std::fs::write(&script, &o.stdout).unwrap();
        let check = Command::new(shell).arg("-n").arg(&script).output().unwrap();
        assert!(
            check.status.success(),
            "{shell} -n: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("logs"),
            "{shell} script knows the subcommands"
        );
    }
    // Dynamic completion asks the running supervisor for unit and channel names.
    let h = Home::new();
    h.unit(
        "alpha",
        "[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n[log]\nchannel = \"achan\"\n",
    );
    h.unit(
        "beta",
        "[unit]\ninstances = 2\n[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    );
    let sup = h.start();
    let complete = |args: &[&str]| {
        let o = Command::new(CLI)
            .env("COMPLETE", "fish")
            .env("TMIDB_HOME", h.path())
            .arg("--")
            .arg("tmidb-cli")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Completion gives the supervisor one second; on a loaded machine, ask again.
    let want = ["alpha", "beta", "beta@1", "beta@2"].map(String::from);
    sup.wait_until("completion lists the units", secs(20), |_| {
        let units = complete(&["restart", ""]);
        want.iter().all(|w| units.contains(w))
    });
    let mut channels = complete(&["logs", "disable", ""]);
    for _ in 0..20 {
        if channels.contains(&"achan".to_string()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        channels = complete(&["logs", "disable", ""]);
    }
    assert!(
        channels.contains(&"achan".to_string()) && channels.contains(&"supervisor".to_string()),
        "{channels:?}"
    );
}

#[test]
fn man_pages_render_cleanly() {
    if !has("man") {
        assert!(
            std::env::var_os("CI").is_none(),
            "make test installs man-db"
        );
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert!(pages.len() >= 20, "{pages:?}");
    for p in pages {
        let o = Command::new("man")
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_STDERR", "1")
            .args(["--warnings", "-l"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "{}: {err}",
            p.display()
        );
        assert!(
            o.stdout.len() > 200,
            "{} renders to almost nothing",
            p.display()
        );
    }
}

#[test]
fn units_verify_checks_the_running_supervisors_directory_and_config_get_reads_every_setting() {
    let h = Home::new();
    let elsewhere = h.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(
        elsewhere.join("a.unit.toml"),
        "[service]\ncommand = [\"/bin/sleep\", \"100\"]\n",
    )
    .unwrap();
    let sup = h.start_with(Some(&elsewhere), &[]);
    sup.wait_state("a", "ready", secs(10));
    assert!(
        sup.cli_ok(&["units", "verify"])
            .contains(&format!("{}: 1 unit instances OK", elsewhere.display()))
    );
    // A bad edit there is what `verify` reports (the home's own units/ is empty).
    std::fs::write(
        elsewhere.join("b.unit.toml"),
        "[service]\ncommand = [\"x\"]\nbogus = 1\n",
    )
    .unwrap();
    let o = sup.cli(&["units", "verify"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("elsewhere/b.unit.toml:3:1"), "{err}");
    // `[ports] base` is a setting like any other.
    assert_eq!(
        sup.cli_ok(&["config", "get", "ports.base"]).trim(),
        h.base.to_string()
    );
}

/// Every exit code of tmidb-cli(1)'s table, from the command that should give it.
#[test]
fn exit_codes_follow_the_documented_table() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/tmidb-cli.1")).unwrap();
    let h = Home::new();
    h.unit(
        "init",
        "[service]\ntype = \"oneshot\"\ncommand = [\"/bin/false\"]\n[restart]\npolicy = \"no\"\n",
    );
    h.unit(
        "app",
        "[unit]\nrequires = [\"init\"]\n[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    );
    h.unit("other", "[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n");
    let sup = h.start();
    sup.wait_state("init", "failed", secs(10));
    sup.wait_state("other", "ready", secs(10));
    let cases: &[(&[&str], i32)] = &[
        (&["start", "other"], 0),
        (&["restart", "other"], 0),
        (&["stop", "init"], 0),
        (&["stop", "other"], 0),
        (&["start", "app"], 1),
        (&["restart", "app"], 1),
        (&["logs", "show", "other", "--grep", "("], 2),
        (&["logs", "show", "other", "--since", "yesterday-ish"], 2),
        (&["logs", "level", "other", "loud"], 2),
        (&["config", "set", "logs.channel.other.level", "loud"], 2),
        (&["config", "set", "logs.ring_lines", "-1"], 2),
        (&["status", "--bogus"], 2),
        (&["start", "nope"], 4),
        (&["logs", "show", "nope"], 4),
        (&["config", "get", "nope"], 4),
    ];
    for (args, code) in cases {
        let o = sup.cli(args);
        assert_eq!(
            o.status.code(),
            Some(*code),
            "tmidb-cli {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Start of a unit blocked by a failed requirement says why.
    let o = sup.cli(&["start", "app"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("app: inactive") && err.contains("init"),
        "{err}"
    );
    // No supervisor for this home.
    let idle = Home::new();
    let o = Command::new(CLI)
        .arg("--home")
        .arg(idle.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    for code in 0..=4 {
        assert!(
            page.lines()
                .any(|l| l.trim_start().starts_with(&format!("{code}  "))),
            "exit code {code} is not in the table of man/tmidb-cli.1"
        );
    }
}
