//! Processes: spawning units, reaping every child, signalling and cleaning process groups.
//!
//! One [`Reaper`] owns `waitpid(-1)`: the supervisor is a child subreaper (and may be PID 1),
//! so orphaned grandchildren are reparented to it and must be reaped here too. Every
//! process we spawn (unit mains and exec probes) is registered with the reaper under the
//! same lock as the spawn, so an exit can never be reaped before its waiter exists.
//! `tokio::process` is deliberately not used: its own reaping would race ours.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::sync::oneshot;

use crate::control::protocol::ExitInfo;
use crate::unit::UnitSpec;

/// Marks this process as a child subreaper, so orphaned descendants are reparented to it.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[derive(Default)]
struct Registry {
    waiters: HashMap<i32, oneshot::Sender<ExitInfo>>,
    unclaimed: HashMap<i32, ExitInfo>,
}

/// Reaps every child and hands exit statuses to whoever spawned them.
#[derive(Clone, Default)]
pub struct Reaper {
    inner: Arc<Mutex<Registry>>,
}

impl Reaper {
    /// Starts the SIGCHLD listener task.
    pub fn start() -> io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sig.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and registers it; the receiver yields its exit status.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<ExitInfo>)> {
        let (tx, rx) = oneshot::channel();
        let mut reg = self.inner.lock().expect("reaper lock");
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        match reg.unclaimed.remove(&pid) {
            Some(exit) => {
                let _ = tx.send(exit);
            }
            None => {
                reg.waiters.insert(pid, tx);
            }
        }
        Ok((child, rx))
    }

    /// Reaps every exited child without blocking.
    pub fn reap_all(&self) {
        let mut reg = self.inner.lock().expect("reaper lock");
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, ExitInfo::Code(code)),
                WaitStatus::Signaled(pid, sig, _) => {
                    (pid, ExitInfo::Signal(sig.as_str().to_string()))
                }
                _ => continue,
            };
            match reg.waiters.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => {
                    // An orphan reparented to us, or a child whose spawn is still
                    // registering: keep briefly for the latter.
                    tracing::debug!(pid = pid.as_raw(), %exit, "reaped orphan");
                    if reg.unclaimed.len() > 1024 {
                        reg.unclaimed.clear();
                    }
                    reg.unclaimed.insert(pid.as_raw(), exit);
                }
            }
        }
    }
}

/// Why a spawn did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A condition was not met: the unit is skipped, not failed.
    #[error("{0}")]
    Condition(String),
    /// Anything else: a failed start.
    #[error("{0}")]
    Failed(String),
}

/// Checks `condition_path_exists`.
pub fn check_conditions(spec: &UnitSpec) -> Result<(), SpawnError> {
    for c in &spec.conditions {
        let exists = c.path.exists();
        if exists == c.negate {
            return Err(SpawnError::Condition(if c.negate {
                format!("condition_path_exists: {} exists", c.path.display())
            } else {
                format!("condition_path_exists: {} does not exist", c.path.display())
            }));
        }
    }
    Ok(())
}

/// Checks that every `listen` address is free, naming the unit and port if not.
pub fn check_ports(spec: &UnitSpec) -> Result<(), SpawnError> {
    for addr in &spec.listen {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(SpawnError::Failed(
                if e.kind() == io::ErrorKind::AddrInUse {
                    format!(
                        "port {addr} needed by unit {} is already in use by another process; \
                     free it or change the port in tmidb.toml",
                        spec.name
                    )
                } else {
                    format!("cannot bind {addr} for unit {}: {e}", spec.name)
                },
            ));
        }
    }
    Ok(())
}

/// The identity a unit runs as.
struct Identity {
    uid: Uid,
    gid: Gid,
    name: String,
    home: PathBuf,
}

fn identity(spec: &UnitSpec) -> Result<Option<Identity>, SpawnError> {
    let Some(user) = &spec.user else {
        return Ok(None);
    };
    if !Uid::effective().is_root() {
        // Not root: we cannot switch users; run as ourselves (documented).
        return Ok(None);
    }
    let u = User::from_name(user)
        .map_err(|e| SpawnError::Failed(format!("cannot look up user `{user}`: {e}")))?
        .ok_or_else(|| {
            SpawnError::Failed(format!("user `{user}` does not exist (unit {})", spec.name))
        })?;
    let gid = match &spec.group {
        None => u.gid,
        Some(g) => {
            nix::unistd::Group::from_name(g)
                .map_err(|e| SpawnError::Failed(format!("cannot look up group `{g}`: {e}")))?
                .ok_or_else(|| {
                    SpawnError::Failed(format!("group `{g}` does not exist (unit {})", spec.name))
                })?
                .gid
        }
    };
    Ok(Some(Identity {
        uid: u.uid,
        gid,
        name: u.name,
        home: u.dir,
    }))
}

/// Creates the state directory (0700, owned by the unit's user) and checks that the user
/// can reach it: a home under a 0700 temp dir is a classic silent failure.
fn prepare_state_dir(spec: &UnitSpec, id: Option<&Identity>) -> Result<(), SpawnError> {
    let Some(dir) = &spec.state_directory else {
        return Ok(());
    };
    let fail = |what: &str, e: io::Error| {
        SpawnError::Failed(format!(
            "cannot {what} state directory {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("create", e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail("chmod", e))?;
    if let Some(id) = id {
        nix::unistd::chown(dir, Some(id.uid), Some(id.gid))
            .map_err(|e| fail("chown", io::Error::from(e)))?;
        check_reachable(dir, id)?;
    }
    Ok(())
}

fn check_reachable(dir: &Path, id: &Identity) -> Result<(), SpawnError> {
    match unreachable(dir, id.uid, id.gid, &id.name) {
        Some(why) => Err(SpawnError::Failed(why)),
        None => Ok(()),
    }
}

/// Why `user` (`uid`, primary group `gid`) cannot reach `dir`: the first ancestor it may
/// not traverse, its mode, and the fix. None when every ancestor lets it through.
pub fn unreachable(dir: &Path, uid: Uid, gid: Gid, user: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    for anc in dir.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(anc) else {
            continue;
        };
        let mode = m.mode();
        let ok = if m.uid() == uid.as_raw() {
            mode & 0o100 != 0
        } else if m.gid() == gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Some(format!(
                "user {user} cannot reach {} because {} is mode {:o}; run `chmod o+x {}` or choose a home outside it",
                dir.display(),
                anc.display(),
                mode & 0o7777,
                anc.display()
            ));
        }
    }
    None
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments skipped, quotes stripped).
pub fn read_env_file(path: &Path) -> io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect())
}

/// Removes `spec.pid_file` when it is stale: the pid it names is not running, or runs a
/// different program than the unit's (the pid was reused after a crash). A file naming a
/// live process of the same program is left for the service to judge.
pub fn clear_stale_pid_file(spec: &UnitSpec) -> Result<Option<String>, SpawnError> {
    let Some(path) = &spec.pid_file else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    let stale = match pid {
        None => Some("it names no pid".to_string()),
        Some(pid) => match std::fs::read_link(format!("/proc/{pid}/exe")) {
            Err(_) => Some(format!("pid {pid} is not running")),
            Ok(exe) => {
                let ours = std::fs::canonicalize(&spec.command[0]).ok();
                (ours.as_deref() != Some(exe.as_path()))
                    .then(|| format!("pid {pid} now runs {}", exe.display()))
            }
        },
    };
    match stale {
        Some(why) => {
            std::fs::remove_file(path).map_err(|e| {
                SpawnError::Failed(format!(
                    "cannot remove stale pid file {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Some(format!(
                "removed stale pid file {} ({why})",
                path.display()
            )))
        }
        None => Ok(None),
    }
}

/// A spawned unit process.
pub struct Spawned {
    /// The process (its stdout/stderr pipes are taken by the log capture).
    pub child: Child,
    /// Resolves when it has been reaped.
    pub exit: oneshot::Receiver<ExitInfo>,
}

/// Spawns a unit's main process in its own process group (and, given its
/// `cgroup.procs`, in the unit's cgroup), dying with the supervisor.
pub fn spawn_unit(
    reaper: &Reaper,
    spec: &UnitSpec,
    notify_socket: Option<&Path>,
    cgroup_procs: Option<std::ffi::CString>,
) -> Result<Spawned, SpawnError> {
    let id = identity(spec)?;
    prepare_state_dir(spec, id.as_ref())?;
    if let Some(note) = clear_stale_pid_file(spec)? {
        tracing::warn!(unit = %spec.name, "{note}");
    }
    let program = &spec.command[0];
    let mut cmd = Command::new(program);
    cmd.args(&spec.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env("TMIDB_UNIT", &spec.name);
    for (path, optional) in &spec.environment_files {
        match read_env_file(path) {
            Ok(vars) => {
                cmd.envs(vars);
            }
            Err(e) if *optional && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(SpawnError::Failed(format!(
                    "cannot read environment file {}: {e}",
                    path.display()
                )));
            }
        }
    }
    cmd.envs(&spec.environment);
    if let Some(sock) = notify_socket {
        cmd.env("NOTIFY_SOCKET", sock);
    } else {
        cmd.env_remove("NOTIFY_SOCKET");
    }
    if let Some(l) = &spec.liveness
        && l.probe == crate::unit::ProbeSpec::Notify
    {
        cmd.env("WATCHDOG_USEC", l.interval.as_micros().to_string());
    }
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    if let (Some(id), Some(dir)) = (&id, &spec.working_dir)
        && let Some(why) = unreachable(&dir.join("."), id.uid, id.gid, &id.name)
    {
        return Err(SpawnError::Failed(format!("working_dir: {why}")));
    }
    if let Some(id) = &id {
        cmd.env("USER", &id.name)
            .env("LOGNAME", &id.name)
            .env("HOME", &id.home);
    }
    let drop_to = id.as_ref().map(|i| (i.uid, i.gid));
    let parent = nix::unistd::getpid();
    // SAFETY: only async-signal-safe calls (open, write, close, setgroups, setgid,
    // setuid, prctl, getppid, _exit) between fork and exec, on data prepared before the
    // fork. The order matters: the cgroup is joined while still root (moving a process
    // needs write access to the cgroups' common ancestor), privileges are dropped next,
    // and PR_SET_PDEATHSIG comes last, since a credential change clears it.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &cgroup_procs {
                // Best effort: a unit outside its cgroup is still in its process group.
                let fd =
                    nix::libc::open(procs.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
                if fd >= 0 {
                    nix::libc::write(fd, b"0".as_ptr().cast(), 1);
                    nix::libc::close(fd);
                }
            }
            if let Some((uid, gid)) = drop_to {
                nix::unistd::setgroups(&[gid]).map_err(io::Error::from)?;
                nix::unistd::setgid(gid).map_err(io::Error::from)?;
                nix::unistd::setuid(uid).map_err(io::Error::from)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            if nix::unistd::getppid() != parent {
                // The supervisor died between fork and prctl.
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    reaper
        .spawn(&mut cmd)
        .map(|(child, exit)| Spawned { child, exit })
        .map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::NotFound {
                "; install it, or fix the path (service binaries are `bin.*` keys in tmidb.toml)"
            } else {
                ""
            };
            SpawnError::Failed(format!("cannot run `{program}`: {e}{hint}"))
        })
}

/// Sends `sig` to a process group; a group that is already gone is fine.
pub fn signal_group(pgid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
}

/// Live (non-zombie) members of a process group, from /proc.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the parenthesised command: state ppid pgrp …
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next();
            let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}
