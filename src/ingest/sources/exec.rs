//! The `exec` source: a program whose stdout lines are NDJSON records, restarted with
//! backoff (1 s doubling to 60 s, reset after a minute of running), like a unit.

use std::time::{Duration, Instant};

use super::patiently;
use crate::backoff::Backoff;
use crate::ingest::Manager;
use crate::ingest::payload::Item;
use crate::model::source::ExecConfig;
use crate::model::source::Source;

pub(super) async fn run(m: &Manager, s: &Source, c: ExecConfig) -> Result<(), String> {
    use tokio::io::AsyncBufReadExt;
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).retry();
    loop {
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&c.command[0]);
        cmd.args(&c.command[1..])
            .envs(&c.env)
            .env("TMIDB_SOURCE", &s.name)
            .env("TMIDB_CATEGORY", &s.category)
            .current_dir(&m.cfg.home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        match cmd.spawn() {
            Err(e) => tracing::error!(source = %s.name, "cannot run {:?}: {e}", c.command),
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                tracing::info!(source = %s.name, pid, "exec source running {:?}", c.command);
                let stderr = child.stderr.take().expect("piped");
                let name = s.name.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        tracing::warn!(source = %name, "{l}");
                    }
                });
                let mut lines =
                    tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
                let mut n = 0u64;
                let mut batch: Vec<Item> = vec![];
                loop {
                    // Up to 1000 lines, or whatever arrived within 200 ms.
                    let line = if batch.is_empty() {
                        lines.next_line().await.map(Some)
                    } else {
                        match tokio::time::timeout(Duration::from_millis(200), lines.next_line())
                            .await
                        {
                            Ok(r) => r.map(Some),
                            Err(_) => Ok(None),
                        }
                    };
                    let (flush, end) = match line {
                        Ok(Some(Some(l))) => {
                            n += 1;
                            if !l.trim().is_empty() {
                                batch.push(Item::line(
                                    format!("pid {pid} line {n}"),
                                    l.trim().as_bytes(),
                                ));
                            }
                            (batch.len() >= 1000, false)
                        }
                        Ok(Some(None)) | Err(_) => (true, true),
                        Ok(None) => (true, false),
                    };
                    if flush && !batch.is_empty() {
                        let items = std::mem::take(&mut batch);
                        let submitted = patiently(&s.name, || {
                            m.submit(&s.category, &s.name, &s.transform, items.clone())
                        })
                        .await;
                        match submitted {
                            Ok(r) if !r.dead.is_empty() => {
                                tracing::warn!(source = %s.name, rejected = r.dead.len(), "records rejected (see the dead letters)")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::error!(source = %s.name, "records not taken: {e}"),
                        }
                    }
                    if end {
                        break;
                    }
                }
                let status = child.wait().await;
                tracing::warn!(source = %s.name, "exec source exited ({status:?}) after {n} lines");
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            retry.reset();
        }
        retry.wait().await;
    }
}
