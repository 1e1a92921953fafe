//! The supervisor's units, for both front-ends of the api: asked through the control
//! socket with the shared protocol, as `tmidb-cli` does.

use super::AppState;
use crate::control::protocol::{
    ChannelState, ErrorKind, FailureRecord, LogRecord, PlanEntry, Request, Response, UnitInfo,
    UnitStatus,
};
use crate::web::error::{ApiError, ApiResult};

/// A unit as the supervisor reports it.
#[derive(Debug, poem_openapi::Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Unit {
    /// Instance name.
    pub name: String,
    /// inactive, starting, ready, stopping, exited, restarting, failed or skipped (a
    /// ready external unit whose liveness fails has `degraded` set).
    pub state: String,
    /// Why it is in that state.
    pub reason: String,
    /// Main process id while running.
    pub pid: Option<i32>,
    /// Automatic restarts.
    pub restarts: u32,
    /// When the state began (RFC 3339).
    pub since: String,
    /// How the last process ended (`exit 1`, `signal SIGKILL`).
    pub last_exit: Option<String>,
    /// Description.
    pub description: String,
    /// Why a ready external unit's liveness probe fails (absent while it passes).
    pub degraded: Option<String>,
}

impl From<UnitStatus> for Unit {
    fn from(u: UnitStatus) -> Unit {
        Unit {
            name: u.name,
            state: u.state.as_str().into(),
            reason: u.reason,
            pid: u.pid,
            restarts: u.restarts,
            since: u.since,
            last_exit: u.last_exit.map(|e| e.to_string()),
            description: u.description,
            degraded: u.degraded,
        }
    }
}

/// Asks the supervisor; 503 when it cannot be reached, 404 for unknown units, 409 for
/// a refused request.
pub async fn ask(state: &AppState, req: Request) -> ApiResult<Response> {
    let mut c = crate::cli::connect(&state.cfg)
        .await
        .map_err(|e| ApiError::unavailable(format!("the supervisor cannot be reached: {e}")))?;
    match c.request(&req).await {
        Ok(Response::Error {
            kind: ErrorKind::UnknownUnit,
            message,
        }) => Err(ApiError::not_found(message)),
        Ok(Response::Error { message, .. }) => Err(ApiError::conflict(message)),
        Ok(r) => Ok(r),
        Err(e) => Err(ApiError::unavailable(format!(
            "the supervisor did not answer: {e}"
        ))),
    }
}

/// Every unit as the supervisor reports it.
pub async fn list(state: &AppState) -> ApiResult<Vec<UnitStatus>> {
    match ask(state, Request::Status { units: vec![] }).await? {
        Response::Status { units } => Ok(units),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// What to do to a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum UnitAction {
    /// Start it (and what it requires); clears `failed`.
    Start,
    /// Stop it (and what requires it).
    Stop,
    /// Restart it (and what requires it).
    Restart,
}

impl UnitAction {
    /// The action named `s` (`start`, `stop`, `restart`).
    pub fn parse(s: &str) -> Option<UnitAction> {
        match s {
            "start" => Some(UnitAction::Start),
            "stop" => Some(UnitAction::Stop),
            "restart" => Some(UnitAction::Restart),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitAction::Start => "start",
            UnitAction::Stop => "stop",
            UnitAction::Restart => "restart",
        }
    }
}

/// Does `action` to the unit `name` on behalf of `by` and waits until it settled; the
/// units it touched, as they are now.
pub async fn control(
    state: &AppState,
    name: &str,
    action: UnitAction,
    by: &str,
) -> ApiResult<Vec<UnitStatus>> {
    let units = vec![name.to_string()];
    let req = match action {
        UnitAction::Start => Request::Start { units, wait: true },
        UnitAction::Stop => Request::Stop { units, wait: true },
        UnitAction::Restart => Request::Restart { units, wait: true },
    };
    tracing::warn!(unit = %name, action = action.as_str(), by, "unit control through the api");
    match ask(state, req).await? {
        Response::Done { units } => Ok(units),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// Every unit with its edges, as the supervisor's graph has them.
pub async fn infos(state: &AppState) -> ApiResult<Vec<UnitInfo>> {
    match ask(state, Request::UnitsList).await? {
        Response::Units { units } => Ok(units),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// The supervisor's graph of `units`, and the instances `name` (a unit or a
/// template) stands for.
fn graph_of(
    units: &[UnitInfo],
    name: &str,
) -> Result<(crate::unit::graph::Graph, Vec<String>), String> {
    let named: Vec<String> =
        crate::control::protocol::select(units, &[name.to_string()], |u| &u.name)?
            .into_iter()
            .map(|u| u.name.clone())
            .collect();
    let edges = |f: fn(&UnitInfo) -> &Vec<String>| {
        units
            .iter()
            .map(|u| (u.name.clone(), f(u).clone()))
            .collect()
    };
    let graph = crate::unit::graph::Graph {
        requires: edges(|u| &u.requires),
        wants: edges(|u| &u.wants),
        ..Default::default()
    };
    Ok((graph, named))
}

/// The units a stop or restart of `name` (a unit or a template) also stops or
/// restarts: every unit that transitively requires it, by the supervisor's own rule
/// ([`crate::unit::graph::Graph::required_by_closure`]) over its graph. The units
/// named themselves are not in the list.
pub fn also_affected(units: &[UnitInfo], name: &str) -> Result<Vec<String>, String> {
    let (graph, named) = graph_of(units, name)?;
    Ok(graph
        .required_by_closure(&named)
        .into_iter()
        .filter(|n| !named.contains(n))
        .collect())
}

/// The units a start of `name` pulls in: what it transitively requires or wants, by
/// the supervisor's own rule ([`crate::unit::graph::Graph::pull_in_closure`]); the
/// units named themselves are not in the list.
pub fn pulled_in(units: &[UnitInfo], name: &str) -> Result<Vec<String>, String> {
    let (graph, named) = graph_of(units, name)?;
    Ok(graph
        .pull_in_closure(&named)
        .into_iter()
        .filter(|n| !named.contains(n))
        .collect())
}

/// The log channels, each with its units, output switch and level (what
/// `tmidb-cli logs channels` shows).
pub async fn channels(state: &AppState) -> ApiResult<Vec<ChannelState>> {
    match ask(state, Request::LogChannels).await? {
        Response::Channels { channels } => Ok(channels),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// Switches `channel` into or out of the unified output (`tmidb-cli logs enable |
/// disable`: the same switch, persisted by the supervisor).
pub async fn set_channel(
    state: &AppState,
    channel: &str,
    enabled: bool,
    by: &str,
) -> ApiResult<()> {
    tracing::info!(channel, enabled, by, "log channel switched through the api");
    ask(
        state,
        Request::LogSet {
            channels: vec![channel.to_string()],
            enabled: Some(enabled),
            level: None,
        },
    )
    .await
    .map(|_| ())
}

/// The failure records of the unit `name`, oldest first (what `tmidb-cli failures`
/// shows).
pub async fn failures(state: &AppState, name: &str) -> ApiResult<Vec<FailureRecord>> {
    match ask(
        state,
        Request::Failures {
            unit: name.to_string(),
        },
    )
    .await?
    {
        Response::Failures { records } => Ok(records),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// What a reload of the units directory would do (`apply`: does it, on behalf of
/// `by`); whether it was applied. A directory that does not load is 409 naming each
/// problem (`file:line:col`).
pub async fn reload(state: &AppState, apply: bool, by: &str) -> ApiResult<(Vec<PlanEntry>, bool)> {
    if apply {
        tracing::warn!(by, "units reloaded through the api");
    }
    match ask(state, Request::Reload { dry_run: !apply }).await? {
        Response::Reload { plan, applied } => Ok((plan, applied)),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// The last `lines` buffered log records of every unit (or of `unit`), oldest first.
pub async fn recent_logs(
    state: &AppState,
    unit: Option<&str>,
    lines: usize,
) -> ApiResult<Vec<LogRecord>> {
    let req = Request::LogShow {
        units: unit.map(str::to_string).into_iter().collect(),
        lines,
        since: None,
        level: None,
        grep: None,
    };
    match ask(state, req).await? {
        Response::Logs { records } => Ok(records),
        other => Err(ApiError::internal(format!("unexpected answer {other:?}"))),
    }
}

/// What a log follower receives.
#[derive(Debug)]
pub enum LogEvent {
    /// A record.
    Record(LogRecord),
    /// Records this follower missed (it fell behind), and why.
    Gap {
        /// How many.
        missed: u64,
        /// Why.
        reason: String,
    },
}

/// Every unit's log records after `since_seq` (the buffered ones, then live ones)
/// until the receiver is dropped: one supervisor connection per follower, held by a
/// task that ends when the receiver goes.
pub async fn follow_logs(
    state: &AppState,
    since_seq: Option<u64>,
) -> ApiResult<tokio::sync::mpsc::Receiver<LogEvent>> {
    let mut client = crate::cli::connect(&state.cfg)
        .await
        .map_err(|e| ApiError::unavailable(format!("the supervisor cannot be reached: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let req = Request::LogFollow {
            units: vec![],
            since_seq,
        };
        let Ok(mut responses) = client.stream(&req).await else {
            return;
        };
        while let Ok(r) = responses.next().await {
            let events = match r {
                Response::Logs { records } => records.into_iter().map(LogEvent::Record).collect(),
                Response::LogGap { missed, reason } => vec![LogEvent::Gap { missed, reason }],
                _ => return,
            };
            for e in events {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::also_affected;
    use crate::control::protocol::{State, UnitInfo};

    fn unit(name: &str, requires: &[&str]) -> UnitInfo {
        UnitInfo {
            name: name.into(),
            state: State::Ready,
            kind: "simple".into(),
            channel: name.into(),
            file: String::new(),
            description: String::new(),
            requires: requires.iter().map(|r| r.to_string()).collect(),
            wants: vec![],
            after: requires.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_restart_takes_along_what_requires_the_unit_transitively() {
        let units = [
            unit("postgresql", &[]),
            unit("migrate", &["postgresql"]),
            unit("api", &["migrate", "nats"]),
            unit("nats", &[]),
            unit("worker@1", &["nats"]),
            unit("worker@2", &["nats"]),
        ];
        assert_eq!(
            also_affected(&units, "postgresql").unwrap(),
            ["api", "migrate"]
        );
        assert_eq!(
            also_affected(&units, "nats").unwrap(),
            ["api", "worker@1", "worker@2"]
        );
        assert!(also_affected(&units, "worker").unwrap().is_empty());
        assert!(also_affected(&units, "nope").is_err());
        assert_eq!(
            super::pulled_in(&units, "api").unwrap(),
            ["migrate", "nats", "postgresql"]
        );
        assert!(super::pulled_in(&units, "postgresql").unwrap().is_empty());
    }
}
