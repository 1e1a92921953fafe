//! Containment: no process a unit started outlives its unit, or the supervisor.
//!
//! - **cgroup v2**, where the supervisor's own cgroup is writable: each unit gets
//!   `<own cgroup>/tmidb-<pidns>-<pid>/<unit>`, joined by the child before it execs (and before
//!   it drops privileges, which would forbid the move). Ending a unit kills its cgroup
//!   (`cgroup.kill`), which reaches processes that left the unit's process group
//!   (daemons that `setsid`).
//! - **Process groups** everywhere: every unit runs in its own group, signalled and
//!   killed as a whole. Without a writable cgroup this is all there is, and a process
//!   that leaves its group escapes (as under supervisord or s6).
//! - **A guardian** (`tmidb-supervisor guardian`, started before any unit) holds the
//!   read end of a pipe from the supervisor and is told every unit's process group.
//!   When the supervisor is gone, however it ended (SIGKILL included), the pipe reads
//!   end-of-file and the guardian kills what is left: the cgroup tree, and every group
//!   it was told of. It ignores the terminal's and the service manager's stop signals
//!   and lives in a group of its own, so it is still there when needed; it exits once it
//!   has cleaned up.

use std::ffi::CString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::process::{Reaper, group_members};

/// How a running supervisor contains its units.
pub struct Containment {
    /// The supervisor's cgroup of units (`…/tmidb-<pidns>-<pid>`), when cgroup v2 is writable.
    cgroups: Option<PathBuf>,
    /// The write end of the guardian's pipe (None: the guardian could not start).
    guardian: Option<std::fs::File>,
    /// Each running main process's cgroup, by its pid (= its process group).
    running: std::collections::HashMap<i32, PathBuf>,
    /// Spawns so far: each incarnation gets a cgroup of its own, so cleaning up after
    /// one can never touch the next.
    spawns: u64,
}

impl Containment {
    /// Sets up containment: the cgroup of units if possible, then the guardian.
    pub fn start(reaper: &Reaper) -> Containment {
        let cgroups = match own_cgroup_dir() {
            Some(own) => {
                remove_stale(&own);
                let root = own.join(format!("tmidb-{}-{}", pid_namespace(), std::process::id()));
                match std::fs::create_dir(&root) {
                    Ok(()) => Some(root),
                    Err(e) => {
                        tracing::info!(
                            "cgroup v2 at {} is not writable ({e}); units are contained by process groups",
                            own.display()
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let guardian = match start_guardian(reaper, cgroups.as_deref()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot start the guardian ({e}); if the supervisor is killed, processes its units started may survive"
                );
                None
            }
        };
        Containment {
            cgroups,
            guardian,
            running: Default::default(),
            spawns: 0,
        }
    }

    /// What contains the units, for the start-up log.
    pub fn describe(&self) -> String {
        let guard = if self.guardian.is_some() {
            ", and a guardian if the supervisor dies"
        } else {
            ""
        };
        match &self.cgroups {
            Some(root) => format!("a cgroup v2 per unit under {}{guard}", root.display()),
            None => format!("a process group per unit{guard}"),
        }
    }

    /// A new cgroup for the next process of `unit` (`<root>/<unit>.<n>`), and the
    /// `cgroup.procs` file the child writes itself into before it execs.
    pub fn prepare(&mut self, unit: &str) -> Option<(PathBuf, CString)> {
        self.spawns += 1;
        let dir = self
            .cgroups
            .as_ref()?
            .join(format!("{unit}.{}", self.spawns));
        if let Err(e) = std::fs::create_dir(&dir) {
            tracing::warn!(unit, "cannot create cgroup {}: {e}", dir.display());
            return None;
        }
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()?;
        Some((dir, procs))
    }

    /// Records a spawned main process (`pgid`: its pid and group) and its cgroup, and
    /// tells the guardian of the group. A failed spawn passes `None` for the pid.
    pub fn spawned(&mut self, pgid: Option<i32>, cgroup: Option<PathBuf>) {
        match (pgid, cgroup) {
            (Some(p), dir) => {
                if let Some(d) = dir {
                    self.running.insert(p, d);
                }
                self.tell(&format!("+{p}\n"));
            }
            (None, Some(d)) => {
                let _ = std::fs::remove_dir(d);
            }
            (None, None) => {}
        }
    }

    /// The unit's main process has ended: the guardian forgets its group, and the
    /// returned cleanup (run after a moment, off the event loop) kills whatever of the
    /// incarnation outlived it, in the group and in its cgroup, and returns the pids.
    pub fn ended(&mut self, pgid: i32) -> Cleanup {
        self.tell(&format!("-{pgid}\n"));
        Cleanup {
            pgid,
            cgroup: self.running.remove(&pgid),
        }
    }

    /// Sends SIGKILL to every process of the incarnation whose main process is `pgid`.
    pub fn kill(&self, pgid: i32) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        if let Some(dir) = self.running.get(&pgid) {
            kill_cgroup(dir);
        }
    }

    /// Removes the cgroup tree after an orderly stop (every unit is down).
    pub fn finish(&self) {
        if let Some(root) = &self.cgroups {
            remove_tree(root);
        }
    }

    fn tell(&mut self, line: &str) {
        if let Some(w) = &mut self.guardian
            && let Err(e) = w.write_all(line.as_bytes())
        {
            tracing::warn!("the guardian is gone ({e}); processes may survive a killed supervisor");
            self.guardian = None;
        }
    }
}

/// What is left to kill of a unit whose main process ended.
pub struct Cleanup {
    pgid: i32,
    cgroup: Option<PathBuf>,
}

impl Cleanup {
    /// Live processes of the unit: its group's, and its cgroup's.
    pub fn survivors(&self) -> Vec<i32> {
        let mut all = group_members(self.pgid);
        if let Some(dir) = &self.cgroup {
            for pid in cgroup_members(dir) {
                if !all.contains(&pid) {
                    all.push(pid);
                }
            }
        }
        all
    }

    /// Kills them, and removes the incarnation's cgroup; returns the pids found.
    pub fn run(&self) -> Vec<i32> {
        let survivors = self.survivors();
        if !survivors.is_empty() {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
        if let Some(dir) = &self.cgroup {
            remove_tree(dir);
        }
        survivors
    }
}

/// This process's cgroup directory in the cgroup v2 hierarchy, if there is one.
fn own_cgroup_dir() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo: `id parent dev root mountpoint options … - fstype source super`.
    let mount = mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let dir = mount.join(path.trim_start_matches('/'));
    dir.join("cgroup.procs").exists().then_some(dir)
}

/// The inode of our PID namespace: part of our cgroup's name, because a pid means
/// something only in its own namespace.
fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// Removes the cgroup trees of supervisors that are gone (`tmidb-<pidns>-<pid>` of our
/// own PID namespace whose pid is not alive), with whatever still runs in them: left
/// when a supervisor and its guardian were both killed. Trees of supervisors in other
/// PID namespaces (a container's, or ours seen from a container) are never judged:
/// their pids are not ours to test.
fn remove_stale(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    let ours = format!("tmidb-{}-", pid_namespace());
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&ours))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            tracing::info!(
                "removing the cgroup of a supervisor that is gone: {}",
                e.path().display()
            );
            remove_tree(&e.path());
        }
    }
}

fn cgroup_members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in a cgroup and below (`cgroup.kill`, or SIGKILL to each member
/// where the kernel has no `cgroup.kill`).
fn kill_cgroup(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in cgroup_members(dir) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Kills everything in `root`'s tree, waits (up to 5 s) for it to be empty, removes it.
fn remove_tree(root: &Path) {
    kill_cgroup(root);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let children: Vec<PathBuf> = std::fs::read_dir(root)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        for c in &children {
            let _ = std::fs::remove_dir(c);
        }
        if std::fs::remove_dir(root).is_ok() || !root.exists() {
            return;
        }
        if std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn start_guardian(reaper: &Reaper, cgroups: Option<&Path>) -> std::io::Result<std::fs::File> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("guardian")
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .process_group(0);
    if let Some(root) = cgroups {
        cmd.arg("--cgroup").arg(root);
    }
    use std::os::unix::process::CommandExt;
    let (_child, _exit) = reaper.spawn(&mut cmd)?;
    Ok(std::fs::File::from(write))
}

/// The guardian's work (`tmidb-supervisor guardian`): read `+PGID` / `-PGID` lines from
/// the supervisor until end-of-file, then kill what is left.
pub fn guardian(cgroups: Option<&Path>) {
    use nix::sys::signal::{SigHandler, signal};
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: installing SIG_IGN runs no handler code.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
    let mut groups = std::collections::BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (sign, pgid) = line.split_at(line.len().min(1));
        match (sign, pgid.parse::<i32>()) {
            ("+", Ok(p)) if p > 1 => {
                groups.insert(p);
            }
            ("-", Ok(p)) => {
                groups.remove(&p);
            }
            _ => {}
        }
    }
    // The supervisor is gone. Its units' main processes died with it (PDEATHSIG);
    // their descendants did not.
    for p in &groups {
        let _ = killpg(Pid::from_raw(*p), Signal::SIGKILL);
    }
    if let Some(root) = cgroups {
        remove_tree(root);
    }
}
