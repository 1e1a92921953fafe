//! The supervisor's side of the control socket: binding (with stale-socket and
//! second-supervisor detection), the Hello handshake, and one handler per request.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Input, LoopReply, Snapshot};
use crate::control::protocol::{
    ErrorKind, LogRecord, PROTOCOL_VERSION, Request, Response, UnitStatus,
};
use crate::control::{Conn, FrameError, framed, recv, send};
use crate::logs::LogHub;

/// Longest a `wait` request waits for units to settle.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Why the control socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another supervisor answers on the socket.
    #[error(
        "another supervisor is already running on {0} (its control socket answers)\n  hint: stop it first, or use another --home"
    )]
    AlreadyRunning(PathBuf),
    /// Filesystem or socket error.
    #[error("cannot create control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The configured group does not exist.
    #[error("[control] group `{0}` does not exist")]
    NoGroup(String),
}

/// Binds the socket at `path` (0600, or 0660 owned by `group`), replacing a stale one.
pub async fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let mode = match group {
        Some(g) => {
            let gid = nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| BindError::NoGroup(g.to_string()))?
                .gid;
            nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(e.into()))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(listener)
}

/// What handlers need from the supervisor.
#[derive(Clone)]
pub struct Ctx {
    /// The supervisor loop's input.
    pub inputs: mpsc::UnboundedSender<Input>,
    /// Latest unit states.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// The log hub (`logs show`, `logs follow`).
    pub hub: Arc<LogHub>,
}

/// Accepts connections until the listener fails or the task is aborted.
pub async fn serve(listener: UnixListener, ctx: Ctx) {
    while let Ok((stream, _)) = listener.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, ctx).await {
                tracing::debug!("control connection ended: {e}");
            }
        });
    }
}

async fn connection(stream: UnixStream, ctx: Ctx) -> Result<(), FrameError> {
    let mut conn = framed(stream);
    match recv::<Request>(&mut conn).await? {
        Request::Hello { version, .. } => {
            send(
                &mut conn,
                &Response::Hello {
                    version: PROTOCOL_VERSION,
                    server: format!("tmidb-supervisor {}", env!("CARGO_PKG_VERSION")),
                },
            )
            .await?;
            if version != PROTOCOL_VERSION {
                return Ok(());
            }
        }
        _ => {
            let msg = "the first message must be Hello with the protocol version";
            send(
                &mut conn,
                &Response::Error {
                    kind: ErrorKind::Unexpected,
                    message: msg.into(),
                },
            )
            .await?;
            return Ok(());
        }
    }
    loop {
        let req = match recv::<Request>(&mut conn).await {
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Malformed(e)) => {
                let resp = Response::Error {
                    kind: ErrorKind::Unexpected,
                    message: format!("malformed request: {e}"),
                };
                send(&mut conn, &resp).await?;
                continue;
            }
            other => other?,
        };
        if let Request::LogFollow { units, since_seq } = req {
            return follow(&mut conn, &ctx, &units, since_seq).await;
        }
        let resp = handle(req, &ctx).await;
        send(&mut conn, &resp).await?;
    }
}

async fn handle(req: Request, ctx: &Ctx) -> Response {
    match req {
        Request::Hello { .. } => Response::Error {
            kind: ErrorKind::Unexpected,
            message: "Hello was already exchanged".into(),
        },
        Request::Status { units } => status(ctx, &units),
        Request::LogShow {
            units,
            lines,
            since,
            level,
            grep,
        } => show(ctx, &units, lines, since, level, grep),
        Request::LogFollow { .. } => Response::Error {
            kind: ErrorKind::Unexpected,
            message: "internal: follow".into(),
        },
        req @ (Request::Start { wait, .. }
        | Request::Stop { wait, .. }
        | Request::Restart { wait, .. }) => lifecycle(ctx, req, wait).await,
        req @ (Request::Reload { .. }
        | Request::Deps { .. }
        | Request::ConfigGet { .. }
        | Request::ConfigSet { .. }
        | Request::Failures { .. }
        | Request::UnitsList
        | Request::UnitsCat { .. }
        | Request::LogChannels
        | Request::LogSet { .. }) => match ask_loop(ctx, req).await {
            LoopReply::Response(r) => r,
            LoopReply::Wait(_) => Response::Error {
                kind: ErrorKind::Unexpected,
                message: "internal: unexpected wait".into(),
            },
        },
    }
}

fn status(ctx: &Ctx, names: &[String]) -> Response {
    let snap = ctx.snapshot.borrow().clone();
    match crate::control::protocol::select(&snap.units, names, |u| &u.name) {
        Ok(units) => Response::Status {
            units: units
                .into_iter()
                .map(|u| UnitStatus {
                    dropped: ctx.hub.dropped(&u.name),
                    ..u.clone()
                })
                .collect(),
        },
        Err(message) => Response::Error {
            kind: ErrorKind::UnknownUnit,
            message,
        },
    }
}

/// Resolves `logs` arguments (unit, instance or channel names; `supervisor`) to ring
/// names; empty means all.
fn log_sources(ctx: &Ctx, names: &[String]) -> Result<Vec<String>, String> {
    let snap = ctx.snapshot.borrow().clone();
    let mut out = vec![];
    for n in names {
        if n == "supervisor" {
            out.push(n.clone());
            continue;
        }
        match crate::control::protocol::select(&snap.units, std::slice::from_ref(n), |u| &u.name) {
            Ok(sel) => out.extend(sel.into_iter().map(|u| u.name.clone())),
            Err(e) => {
                let on_channel: Vec<String> = snap
                    .units
                    .iter()
                    .filter(|u| u.channel == *n)
                    .map(|u| u.name.clone())
                    .collect();
                if on_channel.is_empty() {
                    return Err(e.replace("unknown unit", "unknown unit or channel"));
                }
                out.extend(on_channel);
            }
        }
    }
    Ok(out)
}

fn show(
    ctx: &Ctx,
    names: &[String],
    lines: usize,
    since: Option<String>,
    level: Option<crate::control::protocol::Level>,
    grep: Option<String>,
) -> Response {
    let units = match log_sources(ctx, names) {
        Ok(u) => u,
        Err(message) => {
            return Response::Error {
                kind: ErrorKind::UnknownUnit,
                message,
            };
        }
    };
    let re = match grep.as_deref().map(regex::Regex::new).transpose() {
        Ok(r) => r,
        Err(e) => {
            return Response::Error {
                kind: ErrorKind::InvalidArgument,
                message: format!("invalid --grep pattern: {e}"),
            };
        }
    };
    let since = match since
        .as_deref()
        .map(humantime::parse_rfc3339_weak)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            return Response::Error {
                kind: ErrorKind::InvalidArgument,
                message: format!("invalid --since time: {e}"),
            };
        }
    };
    let mut records: Vec<LogRecord> = ctx
        .hub
        .buffered(&units, 0)
        .into_iter()
        .filter(|r| level.is_none_or(|l| r.level >= l))
        .filter(|r| re.as_ref().is_none_or(|re| re.is_match(&r.msg)))
        .filter(|r| {
            since.is_none_or(|t| humantime::parse_rfc3339_weak(&r.ts).is_ok_and(|rt| rt >= t))
        })
        .map(|r| (*r).clone())
        .collect();
    if records.len() > lines {
        records.drain(..records.len() - lines);
    }
    Response::Logs { records }
}

/// Streams buffered records after `since_seq`, then live ones, until the client leaves.
/// Subscribing before reading the rings and skipping what was already sent leaves no gap
/// between the two; a follower that falls behind the live feed gets a `LogGap`.
async fn follow(
    conn: &mut Conn,
    ctx: &Ctx,
    names: &[String],
    since_seq: Option<u64>,
) -> Result<(), FrameError> {
    let units = match log_sources(ctx, names) {
        Ok(u) => u,
        Err(message) => {
            return send(
                conn,
                &Response::Error {
                    kind: ErrorKind::UnknownUnit,
                    message,
                },
            )
            .await;
        }
    };
    let wanted = |r: &LogRecord| units.is_empty() || units.contains(&r.instance_name());
    let mut live = ctx.hub.subscribe();
    let mut last = since_seq.unwrap_or_else(|| ctx.hub.last_seq());
    if let Some(after) = since_seq {
        if let Some(oldest) = ctx.hub.oldest_buffered(&units)
            && oldest > after + 1
        {
            let missed = oldest - after - 1;
            let reason = format!(
                "records {}..{} are no longer buffered (the ring holds {} lines per unit)",
                after + 1,
                oldest - 1,
                ctx.hub.ring_lines()
            );
            send(conn, &Response::LogGap { missed, reason }).await?;
        }
        let buffered: Vec<LogRecord> = ctx
            .hub
            .buffered(&units, after)
            .iter()
            .map(|r| (**r).clone())
            .collect();
        if let Some(r) = buffered.last() {
            last = r.seq;
        }
        for chunk in buffered.chunks(1000) {
            send(
                conn,
                &Response::Logs {
                    records: chunk.to_vec(),
                },
            )
            .await?;
        }
    }
    loop {
        let first = match live.recv().await {
            Ok(r) => r,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                send(
                    conn,
                    &Response::LogGap {
                        missed: n,
                        reason: "this follower read too slowly".into(),
                    },
                )
                .await?;
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        };
        let mut batch = vec![];
        let mut take = |r: crate::logs::Committed| {
            if r.seq > last && wanted(&r) {
                last = r.seq;
                batch.push((*r).clone());
            }
        };
        take(first);
        for _ in 0..1000 {
            match live.try_recv() {
                Ok(r) => take(r),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            send(conn, &Response::Logs { records: batch }).await?;
        }
    }
}

async fn ask_loop(ctx: &Ctx, req: Request) -> LoopReply {
    let (tx, rx) = oneshot::channel();
    if ctx.inputs.send(Input::Control(req, tx)).is_err() {
        return LoopReply::Response(shutting_down());
    }
    rx.await
        .unwrap_or_else(|_| LoopReply::Response(shutting_down()))
}

fn shutting_down() -> Response {
    Response::Error {
        kind: ErrorKind::ShuttingDown,
        message: "the supervisor is shutting down".into(),
    }
}

/// Runs a start, stop or restart; with `wait`, answers once the named units have
/// settled: an error (exit 1) naming each unit that did not reach what was asked —
/// running (ready, exited or skipped) for start and restart, not running for stop.
async fn lifecycle(ctx: &Ctx, req: Request, wait: bool) -> Response {
    use crate::control::protocol::State;
    let stopping = matches!(req, Request::Stop { .. });
    let names = match ask_loop(ctx, req).await {
        LoopReply::Response(r) => return r,
        LoopReply::Wait(names) => names,
    };
    let mut rx = ctx.snapshot.clone();
    let pick = |snap: &Snapshot| -> Vec<UnitStatus> {
        snap.units
            .iter()
            .filter(|u| names.contains(&u.name))
            .cloned()
            .collect()
    };
    if !wait {
        return Response::Done {
            units: pick(&rx.borrow()),
        };
    }
    let settled = |snap: &Snapshot| {
        names
            .iter()
            .all(|n| snap.settled.get(n).copied().unwrap_or(true))
    };
    let _ = tokio::time::timeout(MAX_WAIT, rx.wait_for(|s| settled(s))).await;
    let units = pick(&rx.borrow());
    let missed: Vec<String> = units
        .iter()
        .filter(|u| {
            if stopping {
                !matches!(
                    u.state,
                    State::Inactive | State::Failed | State::Exited | State::Skipped
                )
            } else {
                !matches!(u.state, State::Ready | State::Exited | State::Skipped)
            }
        })
        .map(|u| format!("{}: {}: {}", u.name, u.state.as_str(), u.reason))
        .collect();
    if !missed.is_empty() {
        return Response::Error {
            kind: ErrorKind::Failed,
            message: missed.join("\n"),
        };
    }
    Response::Done { units }
}
