//! Readiness and liveness probes: tcp, http, exec, log (notify is handled by the
//! supervisor's notify sockets). A probe task reports through the supervisor's event
//! channel and is aborted when its incarnation stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;

use crate::logs::LogHub;
use crate::supervisor::core::Event;
use crate::supervisor::process::{Reaper, signal_group};
use crate::unit::{ProbeSpec, UnitSpec};

/// One probe attempt: `Ok` when up, `Err(reason)` otherwise.
pub async fn attempt(probe: &ProbeSpec, timeout: Duration, reaper: &Reaper) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt_inner(probe, reaper)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{} timed out after {}ms",
            probe.describe(),
            timeout.as_millis()
        )),
    }
}

async fn attempt_inner(probe: &ProbeSpec, reaper: &Reaper) -> Result<(), String> {
    match probe {
        ProbeSpec::Tcp(addr) => TcpStream::connect(addr.as_str())
            .await
            .map(|_| ())
            .map_err(|e| format!("connect {addr}: {e}")),
        ProbeSpec::Http {
            addr,
            host,
            path,
            expect,
        } => {
            let status = http_status(addr, host, path).await?;
            match expect {
                Some(want) if *want != status => {
                    Err(format!("GET {path}: status {status}, want {want}"))
                }
                _ => Ok(()),
            }
        }
        ProbeSpec::Exec(cmd) => {
            // Its output (stdout and stderr, the last bytes) explains a failure.
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("cannot make a pipe: {e}"))?;
            let (child, exit) = {
                let mut c = std::process::Command::new(&cmd[0]);
                let err_end = write
                    .try_clone()
                    .map_err(|e| format!("cannot make a pipe: {e}"))?;
                c.args(&cmd[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::from(write))
                    .stderr(std::process::Stdio::from(err_end));
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                // The command (and our copies of the write end) is dropped here.
                reaper
                    .spawn(&mut c)
                    .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?
            };
            let output = tokio::spawn(output_tail(read));
            // Kill the probe's group if this future is dropped (timeout or abort).
            struct Guard(i32, bool);
            impl Drop for Guard {
                fn drop(&mut self) {
                    if !self.1 {
                        signal_group(self.0, nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
            let mut guard = Guard(child.id() as i32, false);
            let status = exit.await.map_err(|_| "probe process lost".to_string())?;
            guard.1 = true;
            if status.success() {
                output.abort();
                return Ok(());
            }
            // What it wrote, unless something it started still holds the pipe open.
            let said = match tokio::time::timeout(Duration::from_millis(200), output).await {
                Ok(Ok(t)) if !t.is_empty() => format!(": {t}"),
                _ => String::new(),
            };
            Err(format!("{} ended with {status}{said}", cmd[0]))
        }
        ProbeSpec::Log(_) | ProbeSpec::Notify => Err("not an active probe".into()),
    }
}

/// The last 300 bytes a probe process wrote, as one line of text.
async fn output_tail(read: std::os::fd::OwnedFd) -> String {
    const KEEP: usize = 300;
    let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) else {
        return String::new();
    };
    let mut tail: Vec<u8> = vec![];
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * KEEP {
            tail.drain(..tail.len() - KEEP);
        }
    }
    let from = tail.len().saturating_sub(KEEP);
    let text = String::from_utf8_lossy(&tail[from..]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// GETs `path` and returns the status code: probes need nothing more than the status
/// line, so this is a dozen lines rather than an HTTP client with pools and TLS.
async fn http_status(addr: &str, host: &str, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tmidb-probe\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    head.strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP response"))
}

/// Polls the readiness probe of incarnation `inc` until it passes.
/// `since` is the log sequence number at spawn time (for log probes).
pub async fn readiness(
    spec: Arc<UnitSpec>,
    inc: u64,
    since: u64,
    tx: UnboundedSender<Event>,
    hub: Arc<LogHub>,
    reaper: Reaper,
) {
    let Some(r) = &spec.readiness else { return };
    let unit = spec.name.clone();
    match &r.probe {
        ProbeSpec::Notify => {}
        ProbeSpec::Log(pattern) => {
            let Ok(re) = regex::Regex::new(pattern) else {
                return;
            };
            if let Ok(line) = hub.watch_since(&unit, since, re).await {
                let how = format!("log line {:?}", truncate(&line, 80));
                let _ = tx.send(Event::ProbeReady { unit, inc, how });
            }
        }
        probe => {
            let per_try = r
                .interval
                .max(Duration::from_secs(1))
                .min(Duration::from_secs(5));
            let mut last = String::new();
            loop {
                match attempt(probe, per_try, &reaper).await {
                    Ok(()) => {
                        let _ = tx.send(Event::ProbeReady {
                            unit,
                            inc,
                            how: probe.describe(),
                        });
                        return;
                    }
                    // The reason of the last failure is kept for the timeout's message.
                    Err(why) if why != last => {
                        last = why.clone();
                        let unit = unit.clone();
                        let _ = tx.send(Event::ProbeFailed { unit, inc, why });
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(r.interval).await;
            }
        }
    }
}

/// Checks liveness every interval; reports after `failure_threshold` misses in a row.
/// A process unit is then restarted (this task ends); an external unit keeps being
/// probed, and a pass after the failure is reported too.
pub async fn liveness(spec: Arc<UnitSpec>, inc: u64, tx: UnboundedSender<Event>, reaper: Reaper) {
    let Some(l) = &spec.liveness else { return };
    let external = spec.kind == crate::unit::ServiceType::External;
    let (mut misses, mut reported) = (0, false);
    loop {
        tokio::time::sleep(l.interval).await;
        match attempt(&l.probe, l.timeout, &reaper).await {
            Ok(()) => {
                misses = 0;
                if reported {
                    reported = false;
                    let unit = spec.name.clone();
                    let _ = tx.send(Event::LivenessPassed { unit, inc });
                }
            }
            Err(reason) => {
                misses += 1;
                tracing::warn!(unit = %spec.name, misses, threshold = l.failure_threshold, "liveness probe failed: {reason}");
                if misses >= l.failure_threshold {
                    let unit = spec.name.clone();
                    let _ = tx.send(Event::LivenessFailed { unit, inc, reason });
                    if !external {
                        return;
                    }
                    reported = true;
                }
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
