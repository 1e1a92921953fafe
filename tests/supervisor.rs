//! The supervisor with trivial units: ordering, instances, restarts, stops, reload,
//! notify, probes and bad input.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::helpers::{CLI, Home, SUPERVISOR, alive, pids_with_cmdline, secs};

const SLEEPER: &str = "[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n";

#[test]
fn oneshot_dependency_order_and_instances() {
    let h = Home::new();
    let marker = h.path().join("init-done");
    // init takes a while; app would exit 1 (and count a restart) if started before it.
    h.unit(
        "init",
        &format!("[service]\ntype = \"oneshot\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.4; touch {}\"]\n", marker.display()),
    );
    h.unit(
        "app",
        &format!(
            "[unit]\nrequires = [\"init\"]\n[service]\ncommand = [\"/bin/sh\", \"-c\", \"test -f {} && exec sleep 1000\"]\n",
            marker.display()
        ),
    );
    h.unit(
        "worker",
        "[unit]\ninstances = 3\nafter = [\"app\"]\n[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo worker ${instance} of ${unit}; exec sleep 1000\"]\n[readiness]\nprobe = \"log\"\npattern = \"^worker [0-9] of worker@[0-9]$\"\n",
    );
    let sup = h.start();
    for w in ["worker@1", "worker@2", "worker@3"] {
        sup.wait_state(w, "ready", secs(10));
    }
    assert_eq!(sup.state("init"), "exited");
    let app = sup.unit("app").unwrap();
    assert_eq!(app["state"], "ready");
    assert_eq!(app["restarts"], 0, "app started before init finished");
    let pids: std::collections::BTreeSet<i64> = sup
        .status()
        .iter()
        .filter(|u| u["name"].as_str().unwrap().starts_with("worker@"))
        .map(|u| u["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids.len(), 3);
    // `status worker` selects every instance; `units deps` shows the tree.
    let out = sup.cli_ok(&["status", "worker", "--json"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len(),
        3
    );
    let deps_json: Vec<serde_json::Value> =
        serde_json::from_str(&sup.cli_ok(&["units", "deps", "worker", "--json"])).unwrap();
    assert_eq!(deps_json.len(), 3);
    assert_eq!(deps_json[0]["after"], serde_json::json!(["app"]));
    assert_eq!(deps_json[0]["requires"], serde_json::json!([]));
    let deps = sup.cli_ok(&["units", "deps", "app"]);
    assert_eq!(deps, "app\n└── init (requires)\n");
    // Every unit's JSON status has the documented fields.
    for key in ["name", "state", "pid", "restarts", "since", "last_exit"] {
        assert!(app.get(key).is_some(), "status --json lacks {key}");
    }
}

#[test]
fn crash_loop_fails_after_burst_and_start_clears_it() {
    let h = Home::new();
    h.unit("crashy", "[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo dying; exit 3\"]\n[restart]\ndelay = \"20ms\"\nburst = 4\ninterval = \"60s\"\n");
    h.unit("steady", SLEEPER);
    let sup = h.start();
    sup.wait_state("crashy", "failed", secs(10));
    let u = sup.unit("crashy").unwrap();
    assert_eq!(
        u["restarts"], 3,
        "4 starts allowed: the first and 3 restarts"
    );
    assert!(
        u["reason"].as_str().unwrap().contains("start limit hit"),
        "{u}"
    );
    assert_eq!(u["last_exit"]["value"], 3);
    let failures: Vec<serde_json::Value> =
        serde_json::from_str(&sup.cli_ok(&["failures", "crashy", "--json"])).unwrap();
    assert_eq!(failures.len(), 4);
    assert_eq!(failures[0]["last_lines"][0], "dying");
    assert_eq!(
        sup.state("steady"),
        "ready",
        "other units are not disturbed"
    );
    // start clears `failed` and the burst window: four more starts before failing again.
    sup.cli_ok(&["start", "crashy", "--no-block"]);
    sup.wait_until("crashy failed again", secs(10), |s| {
        s.state("crashy") == "failed"
            && s.cli_ok(&["failures", "crashy", "--json"])
                .matches("\"pid\"")
                .count()
                == 8
    });
    assert_eq!(sup.unit("crashy").unwrap()["restarts"], 3);
}

#[test]
fn grandchild_is_gone_after_stop() {
    let h = Home::new();
    h.unit(
        "forky",
        "[service]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 7771001 & exec sleep 7771002\"]\n",
    );
    let sup = h.start();
    sup.wait_state("forky", "ready", secs(10));
    sup.wait_until("both sleeps run", secs(5), |_| {
        pids_with_cmdline("sleep 777100").len() == 2
    });
    let gc = pids_with_cmdline("sleep 7771001");
    sup.cli_ok(&["stop", "forky"]);
    assert_eq!(sup.state("forky"), "inactive");
    sup.wait_until("grandchild gone", secs(5), |_| {
        gc.iter().all(|p| !alive(*p))
    });
    assert!(pids_with_cmdline("sleep 777100").is_empty());
}

#[test]
fn sigterm_stops_in_reverse_order_without_survivors() {
    let h = Home::new();
    // Each takes 200 ms to stop, so an unordered stop would interleave.
    let slow = |name: &str, req: &str| {
        format!(
            "[unit]\nrequires = [{req}]\n[service]\ncommand = [\"/bin/sh\", \"-c\", \"trap 'sleep 0.2; exit 0' TERM; sleep 1000 & wait\"]\n[log]\nchannel = \"{name}\"\n"
        )
    };
    h.unit("a", &slow("a", ""));
    h.unit("b", &slow("b", "\"a\""));
    h.unit("c", &slow("c", "\"b\""));
    let mut sup = h.start();
    sup.wait_state("c", "ready", secs(10));
    let procs = sup.descendants();
    assert!(procs.len() >= 6, "3 shells and 3 sleeps: {procs:?}");
    sup.signal(Signal::SIGTERM);
    let status = sup.wait_exit(secs(30));
    assert!(status.success(), "{status:?}");
    let stopped: Vec<String> = sup
        .events()
        .iter()
        .filter(|e| {
            e["msg"]
                .as_str()
                .unwrap_or("")
                .starts_with("stopping → inactive")
        })
        .map(|e| e["fields"]["unit"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stopped, ["c", "b", "a"]);
    assert!(
        procs.iter().all(|p| !alive(*p)),
        "survivors: {:?}",
        procs.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[test]
fn hot_reload_add_remove_change_and_invalid_edit() {
    let h = Home::new();
    h.unit("a", SLEEPER);
    h.unit("b", "[service]\ncommand = [\"/bin/sleep\", \"1001\"]\n");
    h.unit("c", SLEEPER);
    h.unit(
        "d",
        "[unit]\nrequires = [\"b\"]\n[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    );
    let sup = h.start();
    sup.wait_state("d", "ready", secs(10));
    let pid = |n: &str| sup.pid_of(n);
    let (a, b, c, d) = (pid("a"), pid("b"), pid("c"), pid("d"));

    // Add: picked up from the file change alone.
    h.unit("e", SLEEPER);
    sup.wait_state("e", "ready", secs(10));
    assert_eq!((pid("a"), pid("b"), pid("c"), pid("d")), (a, b, c, d));

    // Remove.
    h.remove_unit("c");
    sup.wait_until("c removed", secs(10), |s| s.unit("c").is_none());
    assert!(!alive(c));

    // Change b: b and d (requires b) restart; a and e keep their pids.
    let e = pid("e");
    let plan = {
        h.unit("b", "[service]\ncommand = [\"/bin/sleep\", \"1002\"]\n");
        sup.wait_until("b restarted", secs(10), |s| {
            s.unit("b")
                .and_then(|u| u["pid"].as_i64())
                .is_some_and(|p| p as i32 != b)
                && s.state("b") == "ready"
        });
        sup.wait_until("d restarted", secs(10), |s| {
            s.unit("d")
                .and_then(|u| u["pid"].as_i64())
                .is_some_and(|p| p as i32 != d)
                && s.state("d") == "ready"
        });
        sup.cli_ok(&["reload", "--dry-run"])
    };
    assert_eq!((pid("a"), pid("e")), (a, e));
    assert!(plan.contains("unchanged"), "{plan}");

    // Invalid edit: nothing changes, the error is reported with file:line:col.
    let before = sup.status();
    h.unit(
        "a",
        "[service]\ncommand = [\"/bin/sleep\", \"1000\"]\nrestrat = 1\n",
    );
    sup.wait_until("reload rejected in the log", secs(10), |s| {
        s.log_text().contains("reload (file change) rejected")
    });
    let log = sup.log_text();
    assert!(
        log.contains("a.unit.toml:3:1: unknown field `restrat`"),
        "{}",
        sup.log_tail()
    );
    let o = sup.cli(&["reload"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a.unit.toml:3:1"));
    let after = sup.status();
    let pids = |v: &Vec<serde_json::Value>| {
        v.iter()
            .map(|u| (u["name"].clone(), u["pid"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(pids(&before), pids(&after));
}

#[test]
fn notify_readiness_and_ready_to_parent() {
    let h = Home::new();
    let send = "import os,socket,time; time.sleep(1.0); s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); p=os.environ['NOTIFY_SOCKET']; s.sendto(b'STATUS=warm', p); s.sendto(b'READY=1', p); time.sleep(1000)";
    h.unit(
        "n",
        &format!("[service]\ntype = \"notify\"\ncommand = [\"python3\", \"-c\", \"{send}\"]\n"),
    );
    let parent = h.path().join("parent.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&parent).unwrap();
    listener.set_read_timeout(Some(secs(20))).unwrap();
    let sup = h.start_with(None, &[("NOTIFY_SOCKET", parent.to_str().unwrap())]);
    assert_eq!(sup.state("n"), "starting", "not ready before READY=1");
    let mut buf = [0u8; 256];
    let n = listener
        .recv(&mut buf)
        .expect("READY=1 from the supervisor");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let u = sup.unit("n").unwrap();
    assert_eq!(u["state"], "ready");
    assert_eq!(u["status_text"], "warm");
    assert!(
        sup.cli_ok(&["status", "n"]).contains(" — warm"),
        "the table shows STATUS= too"
    );
}

/// `make dev`: a rebuilt program restarts the units that run it and no other, whether
/// the build writes the file in place or replaces it by a new link (cargo does).
#[test]
fn watch_programs_restarts_just_the_unit_whose_program_changed() {
    let h = Home::new();
    let bin = h.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["a-prog", "b-prog"] {
        std::fs::copy("/bin/sleep", bin.join(p)).unwrap();
    }
    for (u, p) in [("a", "a-prog"), ("b", "b-prog")] {
        h.unit(
            u,
            &format!(
                "[service]\ncommand = [\"{}\", \"1000\"]\n",
                bin.join(p).display()
            ),
        );
    }
    // A finished oneshot running the same program is not run again.
    h.unit(
        "once",
        &format!(
            "[service]\ntype = \"oneshot\"\ncommand = [\"{}\", \"0\"]\n",
            bin.join("a-prog").display()
        ),
    );
    let sup = h.start_with_args(None, &[], &["--watch-programs"]);
    let pid = |u: &str| sup.unit(u).unwrap()["pid"].as_i64();
    sup.wait_until("both ready", secs(20), |s| {
        s.state("a") == "ready" && s.state("b") == "ready" && s.state("once") == "exited"
    });
    let once = sup.unit("once").unwrap()["since"].clone();
    let (a0, b0) = (pid("a"), pid("b"));

    // Touched in place (a running program cannot be opened for writing).
    let f = std::fs::File::open(bin.join("a-prog")).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    sup.wait_until("a restarted", secs(20), |s| {
        s.state("a") == "ready" && pid("a") != a0
    });
    let a1 = pid("a");
    assert_eq!(pid("b"), b0, "b kept running");
    assert_eq!(
        sup.unit("once").unwrap()["since"],
        once,
        "the oneshot was not run again"
    );

    // Replaced by a new link, as cargo does.
    std::fs::copy("/bin/sleep", bin.join(".b-prog.new")).unwrap();
    std::fs::rename(bin.join(".b-prog.new"), bin.join("b-prog")).unwrap();
    sup.wait_until("b restarted", secs(20), |s| {
        s.state("b") == "ready" && pid("b") != b0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pid("a"), a1, "a kept running");
}

/// Under systemd (`Type=notify`, the packaged service's `--exit-on-start-failure`), a
/// unit that fails for good before the set is ready must not leave `systemctl start`
/// waiting: STATUS= names it, every other unit is stopped, the supervisor exits 1.
#[test]
fn a_start_failure_is_reported_to_the_parent_and_ends_the_supervisor() {
    let h = Home::new();
    let pid_file = h.path().join("other.pid");
    h.unit(
        "other",
        &format!(
            "[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo $$$$ > {}; exec sleep 1000\"]\n",
            pid_file.display()
        ),
    );
    h.unit(
        "db",
        "[unit]\nrequires = [\"other\"]\n[service]\ntype = \"notify\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.5; echo 'cannot open data dir' >&2; exit 3\"]\n[restart]\npolicy = \"no\"\n",
    );
    let parent = h.path().join("parent.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&parent).unwrap();
    listener.set_read_timeout(Some(secs(30))).unwrap();
    let started = Instant::now();
    let out = Command::new(SUPERVISOR)
        .arg("--home")
        .arg(h.path())
        .arg("--units")
        .arg(h.units())
        .args(["--log-format", "json", "--exit-on-start-failure"])
        .env("NOTIFY_SOCKET", &parent)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        started.elapsed() < secs(30),
        "exited only after {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("db failed before every unit was ready") && stderr.contains("exit 3"),
        "{stderr}"
    );
    let mut buf = [0u8; 512];
    let n = listener
        .recv(&mut buf)
        .expect("STATUS= from the supervisor");
    let status = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        status.starts_with("STATUS=db failed before every unit was ready"),
        "{status}"
    );
    assert!(!status.contains("READY=1"), "{status}");
    let other: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(other), "the other unit was stopped before the exit");
}

#[test]
fn a_readiness_timeout_says_why_the_last_attempt_failed() {
    let h = Home::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let http = crate::helpers::TinyServer::start(0);
    let unit = |probe: &str| {
        format!(
            "[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n[readiness]\n{probe}\ninterval = \"100ms\"\ntimeout = \"1500ms\"\n[restart]\npolicy = \"no\"\n"
        )
    };
    h.unit(
        "tcp",
        &unit(&format!("probe = \"tcp\"\naddress = \"127.0.0.1:{port}\"")),
    );
    h.unit(
        "http",
        &unit(&format!(
            "probe = \"http\"\nurl = \"http://127.0.0.1:{}/up\"\nexpect_status = 204",
            http.port
        )),
    );
    h.unit(
        "exec",
        &unit("probe = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo warming up; exit 3\"]"),
    );
    let sup = h.start();
    for (u, why) in [
        ("tcp", "Connection refused".to_string()),
        ("http", "status 200, want 204".to_string()),
        ("exec", "ended with exit 3: warming up".to_string()),
    ] {
        sup.wait_state(u, "failed", secs(10));
        let failures = sup.cli_ok(&["failures", u]);
        assert!(
            failures.contains("not ready within 1s 500ms (last attempt:")
                && failures.contains(&why),
            "{u}: {failures}"
        );
    }
}

#[test]
fn liveness_failure_restarts_the_unit() {
    let h = Home::new();
    let flag = h.path().join("sick");
    h.unit(
        "l",
        &format!(
            "[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n[liveness]\nprobe = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"test ! -f {}\"]\ninterval = \"100ms\"\nfailure_threshold = 2\n",
            flag.display()
        ),
    );
    let sup = h.start();
    sup.wait_state("l", "ready", secs(10));
    let pid = sup.pid_of("l");
    std::fs::write(&flag, "").unwrap();
    sup.wait_until("restarted after liveness failure", secs(10), |s| {
        s.unit("l").is_some_and(|u| u["restarts"] == 1)
    });
    std::fs::remove_file(&flag).unwrap();
    sup.wait_state("l", "ready", secs(10));
    assert_ne!(sup.pid_of("l"), pid);
    let f: Vec<serde_json::Value> =
        serde_json::from_str(&sup.cli_ok(&["failures", "l", "--json"])).unwrap();
    assert!(
        f[0]["reason"]
            .as_str()
            .unwrap()
            .contains("liveness probe failed"),
        "{f:?}"
    );
}

#[test]
fn busy_port_and_missing_binary_are_clear_failures() {
    let h = Home::new();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    h.unit("web", &format!("[service]\ncommand = [\"/bin/sleep\", \"1000\"]\nlisten = [\"127.0.0.1:{port}\"]\n[restart]\npolicy = \"no\"\n"));
    h.unit(
        "ghost",
        "[service]\ncommand = [\"/nonexistent/ghostd\"]\n[restart]\npolicy = \"no\"\n",
    );
    h.unit("optional", "[unit]\ncondition_path_exists = [\"/nonexistent/ghostd\"]\n[service]\ncommand = [\"/nonexistent/ghostd\"]\n");
    h.unit("fine", SLEEPER);
    let sup = h.start();
    sup.wait_state("web", "failed", secs(10));
    sup.wait_state("ghost", "failed", secs(10));
    sup.wait_state("optional", "skipped", secs(10));
    let reason = |n: &str| sup.unit(n).unwrap()["reason"].as_str().unwrap().to_string();
    assert!(
        reason("web").contains(&format!(
            "port 127.0.0.1:{port} needed by unit web is already in use"
        )),
        "{}",
        reason("web")
    );
    assert!(
        reason("ghost").contains("cannot run `/nonexistent/ghostd`"),
        "{}",
        reason("ghost")
    );
    assert!(
        reason("optional").contains("/nonexistent/ghostd does not exist"),
        "{}",
        reason("optional")
    );
    assert_eq!(sup.state("fine"), "ready");
    // Unknown units in CLI commands: exit 4 and the known names.
    let o = sup.cli(&["restart", "nope"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("unknown unit `nope`; known units: fine, ghost, optional, web")
    );
    drop(squatter);
}

#[test]
fn invalid_unit_files_are_rejected_with_positions() {
    /// (what, unit files, expected error)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "cycle",
            &[
                (
                    "a",
                    "[unit]\nrequires = [\"b\"]\n[service]\ncommand = [\"x\"]\n",
                ),
                (
                    "b",
                    "[unit]\nafter = [\"a\"]\n[service]\ncommand = [\"x\"]\n",
                ),
            ],
            "a.unit.toml:2:13: dependency cycle: a → b → a",
        ),
        (
            "unknown key",
            &[(
                "a",
                "[service]\ncommand = [\"x\"]\nstop_sginal = \"SIGINT\"\n",
            )],
            "a.unit.toml:3:1: unknown field `stop_sginal`",
        ),
        (
            "wrong type",
            &[(
                "a",
                "[unit]\ninstances = \"3\"\n[service]\ncommand = [\"x\"]\n",
            )],
            "a.unit.toml:2:13: invalid type",
        ),
        (
            "missing dependency",
            &[
                (
                    "a",
                    "[unit]\nwants = [\"natz\"]\n[service]\ncommand = [\"x\"]\n",
                ),
                ("nats", "[service]\ncommand = [\"x\"]\n"),
            ],
            "a.unit.toml:2:10: unknown unit `natz`",
        ),
        (
            "unknown variable",
            &[("a", "[service]\ncommand = [\"x\", \"${ports.postgres}\"]\n")],
            "a.unit.toml:2:18: unknown variable `${ports.postgres}`",
        ),
    ];
    for (what, files, expected) in cases {
        let h = Home::new();
        for (n, t) in *files {
            h.unit(n, t);
        }
        let o = Command::new(SUPERVISOR)
            .arg("--home")
            .arg(h.path())
            .arg("--check")
            .arg(h.units())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains(expected),
            "{what}: expected `{expected}` in:\n{err}"
        );
        // The supervisor refuses to start on it, before spawning anything.
        let o = Command::new(SUPERVISOR)
            .arg("--home")
            .arg(h.path())
            .arg("--units")
            .arg(h.units())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{what}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(expected),
            "{what}"
        );
    }
    // `units verify --json` reports the same positions for scripts.
    let h = Home::new();
    h.unit("a", "[service]\ncommand = [\"x\"]\nbogus = 1\n");
    let o = Command::new(CLI)
        .arg("--home")
        .arg(h.path())
        .args(["units", "verify", "--json"])
        .arg(h.units())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["errors"][0]["at"]
            .as_str()
            .unwrap()
            .ends_with("a.unit.toml:3:1"),
        "{v}"
    );
    // The default set is valid.
    let h = Home::new();
    let o = Command::new(SUPERVISOR)
        .arg("--home")
        .arg(h.path())
        .arg("--check")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/units"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn cli_without_supervisor_names_the_socket() {
    let h = Home::new();
    let start = Instant::now();
    let o = Command::new(CLI)
        .arg("--home")
        .arg(h.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}/run/tmidb.sock does not exist",
            h.path().display()
        )),
        "{err}"
    );
    assert!(
        err.lines().count() <= 3,
        "one clear message, not a stack: {err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn stale_pid_file_left_by_a_crash_is_cleared_even_when_the_pid_was_reused() {
    let h = Home::new();
    let reused = h.path().join("reused.pid");
    let dead = h.path().join("dead.pid");
    // A live pid running another program (this test), as after PID reuse; and a dead one.
    std::fs::write(&reused, format!("{}\n/some/data\n", std::process::id())).unwrap();
    std::fs::write(&dead, "2147483000\n").unwrap();
    for (name, file) in [("reuse", &reused), ("dead", &dead)] {
        h.unit(
            name,
            &format!(
                "[service]\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e {f} && exec sleep 1000\"]\npid_file = \"{f}\"\n[restart]\npolicy = \"no\"\n",
                f = file.display()
            ),
        );
    }
    let sup = h.start();
    sup.wait_state("reuse", "ready", secs(10));
    sup.wait_state("dead", "ready", secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sup.state("reuse"),
        "ready",
        "the shell exits 1 if the file was left"
    );
    assert!(sup.log_text().contains("removed stale pid file"));
}

#[test]
fn orphans_are_reaped_watch_restarts_and_env_files_apply() {
    let h = Home::new();
    let watched = h.path().join("app.conf");
    std::fs::write(&watched, "v1").unwrap();
    std::fs::write(
        h.path().join("app.env"),
        "# comment\nGREETING=\"hello env\"\n",
    )
    .unwrap();
    // The subshell exits at once: its sleep is orphaned, reparented to the supervisor
    // (child subreaper), and must be reaped when it ends.
    h.unit(
        "orphaner",
        "[service]\ncommand = [\"/bin/sh\", \"-c\", \"(sleep 1.25 &); exec sleep 1000\"]\n",
    );
    h.unit(
        "env",
        &format!(
            "[service]\ncommand = [\"/bin/sh\", \"-c\", \"echo \\\"$GREETING/$EXTRA\\\"; exec sleep 1000\"]\nenvironment_files = [\"{}\", \"-/nonexistent/optional.env\"]\nenvironment = {{ EXTRA = \"${{unit}}\" }}\nwatch = [\"{}\"]\n[readiness]\nprobe = \"log\"\npattern = \"^hello env/env$\"\n",
            h.path().join("app.env").display(),
            watched.display()
        ),
    );
    let sup = h.start();
    sup.wait_state("env", "ready", secs(10));
    sup.wait_state("orphaner", "ready", secs(10));
    let ppid = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse::<i32>()
                    .ok()
            })
    };
    sup.wait_until("orphan exists", secs(5), |_| {
        !pids_with_cmdline("sleep 1.25").is_empty()
    });
    let orphan = pids_with_cmdline("sleep 1.25")[0];
    assert_eq!(
        ppid(orphan),
        Some(sup.pid),
        "the orphan is reparented to the subreaper"
    );
    sup.wait_until("orphan ended", secs(5), |_| !alive(orphan));
    std::thread::sleep(Duration::from_millis(300));
    let zombies: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                })
                .is_some_and(|f| f == format!("Z {}", sup.pid))
        })
        .collect();
    assert!(
        zombies.is_empty(),
        "unreaped children of the supervisor: {zombies:?}"
    );
    // A change to a watched path restarts the unit.
    let pid = sup.pid_of("env");
    std::fs::write(&watched, "v2").unwrap();
    sup.wait_until("env restarted by watch", secs(10), |s| {
        s.unit("env")
            .and_then(|u| u["pid"].as_i64())
            .is_some_and(|p| p as i32 != pid)
            && s.state("env") == "ready"
    });
    assert_eq!(sup.unit("orphaner").unwrap()["restarts"], 0);
}

#[test]
fn control_socket_mode_follows_the_configured_group() {
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    h.unit("s", SLEEPER);
    let sup = h.start();
    let mode = |sup: &crate::helpers::Sup| {
        std::fs::metadata(sup.home.join("run/tmidb.sock"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&sup), 0o600);
    drop(sup);
    let h = Home::new();
    h.unit("s", SLEEPER);
    let toml = std::fs::read_to_string(h.path().join("tmidb.toml")).unwrap();
    std::fs::write(
        h.path().join("tmidb.toml"),
        format!("{toml}[control]\ngroup = \"root\"\n"),
    )
    .unwrap();
    let sup = h.start();
    assert_eq!(mode(&sup), 0o660);
    // A second supervisor on the same home is refused, and the first keeps running.
    let o = Command::new(SUPERVISOR)
        .arg("--home")
        .arg(h.path())
        .arg("--units")
        .arg(h.units())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another supervisor is already running"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sup.state("s"), "ready");
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_in_order_on_sigterm() {
    let h = Home::new();
    h.unit("db", "[service]\ncommand = [\"/bin/sh\", \"-c\", \"(sleep 0.5 &); trap 'exit 0' TERM; sleep 1000 & wait\"]\n");
    h.unit(
        "app",
        "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    );
    let log = std::fs::File::create(h.path().join("supervisor.log")).unwrap();
    // A new PID namespace: the supervisor is PID 1 there, as in a container.
    let mut ns = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(SUPERVISOR)
        .arg("--home")
        .arg(h.path())
        .arg("--units")
        .arg(h.units())
        .args(["--log-format", "json"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let cli = |args: &[&str]| {
        Command::new(CLI)
            .arg("--home")
            .arg(h.path())
            .args(args)
            .output()
            .unwrap()
    };
    let start = Instant::now();
    while !String::from_utf8_lossy(&cli(&["status", "app"]).stdout).contains("ready") {
        assert!(
            start.elapsed() < secs(15),
            "app never ready: {}",
            std::fs::read_to_string(h.path().join("supervisor.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The supervisor's host pid: unshare's only child.
    let sup =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", ns.id(), ns.id())).unwrap();
    let sup: i32 = sup.split_whitespace().next().unwrap().parse().unwrap();
    let inner = std::fs::read_to_string(format!("/proc/{sup}/status")).unwrap();
    let nspid = inner
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap()
        .to_string();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "not PID 1 in its namespace: {nspid}"
    );
    std::thread::sleep(Duration::from_millis(800));
    let zombies = std::fs::read_dir(format!("/proc/{sup}/task"))
        .unwrap()
        .flatten()
        .any(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| {
                    std::fs::read_to_string(format!("/proc/{c}/stat")).is_ok_and(|s| {
                        s.rsplit_once(')')
                            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                    })
                })
        });
    assert!(!zombies, "PID 1 left a zombie");
    let procs = crate::helpers::descendants(sup);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), Signal::SIGTERM).unwrap();
    let status = ns.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(h.path().join("supervisor.log")).unwrap();
    let order: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| {
            r["unit"] == "supervisor"
                && r["msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("stopping → inactive"))
        })
        .map(|r| r["fields"]["unit"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["app", "db"], "{text}");
    assert!(procs.iter().all(|p| !alive(*p)));
}

/// However a unit ends, nothing it started survives: its process group always, and
/// with cgroup v2 (where writable) also what left the group (`setsid`).
#[test]
fn no_process_of_a_unit_survives_however_the_unit_or_the_supervisor_ends() {
    let h = Home::new();
    // Unique per run: several test runs may share the machine.
    let tag = |case: u32| format!("{}{case}", 7_000_000 + u32::from(h.base));
    let forky = |case: u32, then: &str| {
        let t = tag(case);
        format!(
            "[service]\ncommand = [\"/bin/sh\", \"-c\", \"setsid sleep {t}1 & sleep {t}2 & {then}\"]\n[restart]\npolicy = \"no\"\n"
        )
    };
    let exec_sleep = |case: u32| format!("exec sleep {}3", tag(case));
    h.unit("stopped", &forky(1, &exec_sleep(1)));
    h.unit("crashing", &forky(2, "sleep 1; exit 3"));
    h.unit("removed", &forky(3, &exec_sleep(3)));
    h.unit("terminated", &forky(4, &exec_sleep(4)));
    let mut sup = h.start();
    let cgroups = sup.records().iter().any(|r| {
        r["msg"]
            .as_str()
            .unwrap_or("")
            .starts_with("units are contained by a cgroup v2")
    });
    // With process groups only, a process that left its group escapes (documented).
    let must_die = |case: u32| -> Vec<String> {
        let t = tag(case);
        let mut v = vec![format!("sleep {t}2"), format!("sleep {t}3")];
        if cgroups {
            v.push(format!("sleep {t}1"));
        }
        v
    };
    let gone = |sup: &crate::helpers::Sup, what: &str, case: u32| {
        sup.wait_until(&format!("{what}: no survivor"), secs(5), |_| {
            must_die(case)
                .iter()
                .all(|n| pids_with_cmdline(n).is_empty())
        });
    };
    for case in [1, 2, 3, 4] {
        let t = tag(case);
        sup.wait_until("the unit's processes run", secs(10), |_| {
            !pids_with_cmdline(&format!("sleep {t}1")).is_empty()
                && !pids_with_cmdline(&format!("sleep {t}2")).is_empty()
        });
    }
    sup.cli_ok(&["stop", "stopped"]);
    gone(&sup, "tmidb-cli stop", 1);
    sup.wait_state("crashing", "failed", secs(10));
    gone(&sup, "a crash", 2);
    h.remove_unit("removed");
    sup.cli_ok(&["reload"]);
    gone(&sup, "a reload that removes the unit", 3);
    sup.signal(Signal::SIGTERM);
    sup.wait_exit(secs(20));
    gone(&sup, "supervisor SIGTERM", 4);

    // A cgroup left by a supervisor that is gone (killed together with its guardian)
    // is removed by the next one that starts.
    let first_root = sup.records().iter().find_map(|r| {
        let m = r["msg"].as_str()?;
        let rest = m.strip_prefix("units are contained by a cgroup v2 per unit under ")?;
        Some(std::path::PathBuf::from(rest.split(',').next()?))
    });
    let stale = first_root.as_ref().map(|r| {
        let mut dead = Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        // The same PID namespace's prefix (`tmidb-<pidns>-`), a pid that is gone.
        let name = r.file_name().unwrap().to_string_lossy().into_owned();
        let prefix = &name[..name.rfind('-').unwrap() + 1];
        let stale = r.parent().unwrap().join(format!("{prefix}{pid}"));
        std::fs::create_dir_all(stale.join("unit.1")).unwrap();
        stale
    });

    // SIGKILL of the supervisor: the guardian cleans up.
    let h = Home::new();
    let t = tag(5);
    h.unit("killed", &forky(5, &exec_sleep(5)));
    let mut sup = h.start();
    if let Some(stale) = &stale {
        assert!(!stale.exists(), "{} is left", stale.display());
    }
    sup.wait_until("the unit's processes run", secs(10), |_| {
        !pids_with_cmdline(&format!("sleep {t}1")).is_empty()
    });
    sup.signal(Signal::SIGKILL);
    sup.wait_exit(secs(5));
    let start = Instant::now();
    while must_die(5).iter().any(|n| !pids_with_cmdline(n).is_empty()) && start.elapsed() < secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = must_die(5)
        .into_iter()
        .filter(|n| !pids_with_cmdline(n).is_empty())
        .collect();
    assert!(
        left.is_empty(),
        "survivors of a SIGKILLed supervisor: {left:?}"
    );
    // The guardian removed the supervisor's cgroup too.
    let root = sup.records().iter().find_map(|r| {
        let m = r["msg"].as_str()?;
        let rest = m.strip_prefix("units are contained by a cgroup v2 per unit under ")?;
        Some(std::path::PathBuf::from(rest.split(',').next()?))
    });
    assert_eq!(root.is_some(), cgroups);
    if let Some(root) = root {
        // The guardian removes it once the kernel has emptied it (it retries for 5 s):
        // the processes being gone does not mean the directory already is.
        let start = Instant::now();
        while root.exists() && start.elapsed() < secs(6) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!root.exists(), "{} is left", root.display());
    }
}

#[test]
fn a_reload_that_changes_only_what_the_process_does_not_see_keeps_it_running() {
    let h = Home::new();
    h.unit("svc", SLEEPER);
    let sup = h.start();
    sup.wait_state("svc", "ready", secs(10));
    let pid = sup.unit("svc").unwrap()["pid"].clone();
    h.unit(
        "svc",
        &format!("[unit]\ndescription = \"now described\"\n{SLEEPER}[restart]\nburst = 2\n[log]\nenabled = false\n"),
    );
    // (The file watcher may apply it before an explicit reload does.)
    sup.cli_ok(&["reload"]);
    sup.wait_until("the update applied in place", secs(10), |s| {
        s.records().iter().any(|r| {
            r["msg"].as_str().is_some_and(|m| {
                m.starts_with("reload: Update") && m.contains("applied without a restart")
            })
        })
    });
    assert!(sup.cli_ok(&["units", "list"]).contains("now described"));
    assert_eq!(sup.unit("svc").unwrap()["pid"], pid, "not restarted");
    // A change of what it runs restarts it.
    h.unit("svc", "[service]\ncommand = [\"/bin/sleep\", \"1001\"]\n");
    sup.cli_ok(&["reload"]);
    sup.wait_until("restarted", secs(10), |s| {
        s.unit("svc")
            .is_some_and(|u| u["pid"] != pid && u["state"] == "ready")
    });
}
