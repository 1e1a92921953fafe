//! The platform's own pages: the dashboard (units live, ingest over the last hour,
//! backlog, dead letters, integrity, disk), the units (their dependency graph with
//! start / stop / restart, each unit's failures and last lines, what a reload of the
//! units directory would do) and the logs (one live tail of every unit beside the
//! channel switches `tmidb-cli logs enable | disable` turns).

use std::sync::Arc;

use poem::web::{Data, Path};
use poem::{IntoResponse, Request, Response, handler};
use sailfish::TemplateSimple;

use super::frame::Frame;
use super::svg::{self, Graph, Spark};
use super::{Fields, admin, or_page, page, see_other};
use crate::api::AppState;
use crate::api::overview::{self, Backlog, Disk, Ingest};
use crate::api::units::{self, UnitAction};
use crate::control::protocol::{
    ChannelState, FailureRecord, LogRecord, PlanAction, PlanEntry, UnitInfo, UnitStatus,
};
use crate::integrity::Report;

#[derive(TemplateSimple)]
#[template(path = "dashboard.stpl")]
struct Dashboard<'a> {
    frame: &'a Frame,
    units: Option<Vec<UnitStatus>>,
    categories: Vec<(String, Spark, i64)>,
    sources: Vec<(String, Spark)>,
    rejected: i64,
    backlog: Option<Backlog>,
    integrity: Option<Report>,
    disk: Option<Disk>,
    script: String,
}

#[handler]
pub async fn dashboard(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let is_admin = s.principal.require_admin().is_ok();
    let Ingest {
        categories,
        sources,
        rejected,
    } = match overview::ingest(&state, &s.principal).await {
        Ok(i) => i,
        Err(e) => return s.failure("dashboard", e),
    };
    let categories = categories
        .into_iter()
        .map(|(c, series)| {
            let dead = rejected.get(&c).copied().unwrap_or(0);
            (c, svg::sparkline(&series), dead)
        })
        .collect();
    let sources = sources
        .into_iter()
        .map(|(n, series)| (n, svg::sparkline(&series)))
        .collect();
    // The supervisor's units, the backlog, integrity and disk are shown to whom the
    // REST API shows them: admins.
    let (units, backlog, integrity, disk) = if is_admin {
        let units = match units::list(&state).await {
            Ok(u) => Some(u),
            Err(e) => return s.failure("dashboard", e),
        };
        let (backlog, integrity, disk) = tokio::join!(
            overview::backlog(&state),
            overview::integrity(&state),
            overview::disk(&state)
        );
        (units, backlog, integrity, Some(disk))
    } else {
        (None, None, None, None)
    };
    page(Dashboard {
        frame: &s.frame("Dashboard", "dashboard"),
        units,
        categories,
        sources,
        rejected: rejected.values().sum(),
        backlog,
        integrity,
        disk,
        script: super::frame::asset("dashboard.js"),
    })
}

/// How often the dashboard's stream looks at the supervisor's units.
const UNITS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The units as the dashboard's script reads them: the REST API's `Unit` objects.
fn units_json(units: Vec<UnitStatus>) -> String {
    use poem_openapi::types::ToJSON;
    let list: Vec<units::Unit> = units.into_iter().map(Into::into).collect();
    list.to_json_string()
}

/// The units as Server-Sent Events (`units`: the whole list), sent at once and then
/// whenever it changes (looked at every second).
#[handler]
pub async fn dashboard_stream(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    or_page!(admin(&state, req, "dashboard").await);
    let state = state.0.clone();
    let events = futures_util::stream::unfold(
        (state, String::new(), true),
        |(state, last, first)| async move {
            let mut first = first;
            loop {
                if !first {
                    tokio::time::sleep(UNITS_EVERY).await;
                }
                first = false;
                let Ok(units) = units::list(&state).await else {
                    continue;
                };
                let now = units_json(units);
                if now != last {
                    let event = poem::web::sse::Event::message(now.clone()).event_type("units");
                    return Some((event, (state, now, false)));
                }
            }
        },
    );
    poem::web::sse::SSE::new(events)
        .keep_alive(std::time::Duration::from_secs(15))
        .into_response()
}

#[derive(TemplateSimple)]
#[template(path = "units.stpl")]
struct Units<'a> {
    frame: &'a Frame,
    units: Vec<(UnitStatus, Option<UnitInfo>)>,
    graph: Graph,
    plan: Result<Vec<PlanEntry>, String>,
    done: Option<String>,
}

#[handler]
pub async fn units_page(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(admin(&state, req, "units").await);
    let (statuses, infos) = match tokio::join!(units::list(&state), units::infos(&state)) {
        (Ok(s), Ok(i)) => (s, i),
        (Err(e), _) | (_, Err(e)) => return s.failure("units", e),
    };
    let plan = units::reload(&state, false, &s.principal.username)
        .await
        .map(|(plan, _)| plan)
        .map_err(|e| super::reasons(&e).join("; "));
    let graph = svg::graph(&infos);
    let units = statuses
        .into_iter()
        .map(|u| {
            let info = infos.iter().find(|i| i.name == u.name).cloned();
            (u, info)
        })
        .collect();
    page(Units {
        frame: &s.frame("Units", "units"),
        units,
        graph,
        plan,
        done: q.opt("done").map(str::to_string),
    })
}

#[derive(TemplateSimple)]
#[template(path = "unit.stpl")]
struct Unit<'a> {
    frame: &'a Frame,
    unit: UnitStatus,
    info: Option<UnitInfo>,
    failures: Vec<FailureRecord>,
    lines: Vec<LogRecord>,
}

/// Lines the unit page shows.
const UNIT_LINES: usize = 50;

#[handler]
pub async fn unit_page(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(name): Path<String>,
) -> Response {
    let s = or_page!(admin(&state, req, "units").await);
    let (statuses, infos) = match tokio::join!(units::list(&state), units::infos(&state)) {
        (Ok(s), Ok(i)) => (s, i),
        (Err(e), _) | (_, Err(e)) => return s.failure("units", e),
    };
    let Some(unit) = statuses.into_iter().find(|u| u.name == name) else {
        let e = crate::web::error::ApiError::not_found(format!("no unit `{name}`"));
        return s.failure("units", e);
    };
    let (failures, lines) = tokio::join!(
        units::failures(&state, &name),
        units::recent_logs(&state, Some(&name), UNIT_LINES)
    );
    let (failures, lines) = match (failures, lines) {
        (Ok(f), Ok(l)) => (f, l),
        (Err(e), _) | (_, Err(e)) => return s.failure("units", e),
    };
    page(Unit {
        frame: &s.frame(name.clone(), "units"),
        info: infos.into_iter().find(|i| i.name == name),
        unit,
        failures,
        lines,
    })
}

#[derive(TemplateSimple)]
#[template(path = "confirm.stpl")]
pub(super) struct Confirm<'a> {
    pub frame: &'a Frame,
    pub question: String,
    pub alone: String,
    pub along: String,
    pub also: Vec<String>,
    pub warning: Option<String>,
    pub action: String,
    pub hidden: Vec<(String, String)>,
    pub checkbox: Option<(&'a str, &'a str)>,
    pub button: String,
    pub cancel: String,
}

impl<'a> Confirm<'a> {
    /// A confirmation of `question`, sent to `action` with `button`.
    pub fn new(frame: &'a Frame, question: String, action: String, button: String) -> Self {
        Confirm {
            frame,
            question,
            alone: String::new(),
            along: String::new(),
            also: vec![],
            warning: None,
            action,
            hidden: vec![],
            checkbox: None,
            button,
            cancel: "/".into(),
        }
    }
}

/// What a start, stop or restart of `unit` takes along, in words.
fn confirmation<'a>(
    frame: &'a Frame,
    unit: &str,
    act: UnitAction,
    infos: &[UnitInfo],
) -> Result<Confirm<'a>, String> {
    let verb = match act {
        UnitAction::Start => "Start",
        UnitAction::Stop => "Stop",
        UnitAction::Restart => "Restart",
    };
    let mut c = Confirm::new(
        frame,
        format!("{verb} {unit}?"),
        format!("/units/{unit}/{}", act.as_str()),
        format!("{verb} {unit}"),
    );
    c.cancel = "/units".into();
    match act {
        UnitAction::Start => {
            c.also = units::pulled_in(infos, unit)?;
            c.alone = format!("{unit} requires and wants nothing else.");
            c.along = format!(
                "This also starts what {unit} requires or wants (units already running stay as they are):"
            );
        }
        UnitAction::Stop | UnitAction::Restart => {
            c.also = units::also_affected(infos, unit)?;
            c.alone = format!("Nothing else is affected: no unit requires {unit}.");
            c.along = format!("This also {}s what requires {unit}:", act.as_str());
        }
    }
    let serving = act != UnitAction::Start && (unit == "api" || c.also.iter().any(|a| a == "api"));
    if serving {
        c.warning = Some(
            "The api serves this console: the page goes blank while it restarts, then comes back (reload it)."
                .into(),
        );
    }
    Ok(c)
}

#[handler]
pub async fn confirm(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let s = or_page!(admin(&state, req, "units").await);
    let frame = s.frame("Units", "units");
    let Some(act) = UnitAction::parse(&action) else {
        let e = crate::web::error::ApiError::not_found("units are started, stopped or restarted");
        return s.failure("units", e);
    };
    let infos = match units::infos(&state).await {
        Ok(i) => i,
        Err(e) => return s.failure("units", e),
    };
    match confirmation(&frame, &name, act, &infos) {
        Ok(c) => page(c),
        Err(why) => s.failure("units", crate::web::error::ApiError::not_found(why)),
    }
}

#[handler]
pub async fn control(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path((name, action)): Path<(String, String)>,
    f: Fields,
) -> Response {
    or_page!(admin(&state, req, "units").await);
    let s = or_page!(super::sender(&state, req, "units", &f).await);
    let Some(act) = UnitAction::parse(&action) else {
        let e = crate::web::error::ApiError::not_found("units are started, stopped or restarted");
        return s.failure("units", e);
    };
    match units::control(&state, &name, act, &s.principal.username).await {
        Ok(_) => super::done("/units", &format!("{name}: {action} done")),
        Err(e) => s.failure("units", e),
    }
}

/// Applies what a reload of the units directory does (the plan the units page shows).
#[handler]
pub async fn reload(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    or_page!(admin(&state, req, "units").await);
    let s = or_page!(super::sender(&state, req, "units", &f).await);
    match units::reload(&state, true, &s.principal.username).await {
        Ok((plan, _)) => {
            let changed = plan
                .iter()
                .filter(|p| p.action != PlanAction::Unchanged)
                .count();
            super::done("/units", &format!("reloaded: {changed} unit(s) changed"))
        }
        Err(e) => s.failure("units", e),
    }
}

/// Lines the logs page shows before the live tail takes over.
const RECENT_LINES: usize = 200;

#[derive(TemplateSimple)]
#[template(path = "logs.stpl")]
struct Logs<'a> {
    frame: &'a Frame,
    channels: Vec<ChannelState>,
    records: Vec<LogRecord>,
    disabled: String,
    script: String,
}

#[handler]
pub async fn logs_page(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    let s = or_page!(admin(&state, req, "logs").await);
    let (channels, records) = match tokio::join!(
        units::channels(&state),
        units::recent_logs(&state, None, RECENT_LINES)
    ) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return s.failure("logs", e),
    };
    let disabled = channels
        .iter()
        .filter(|c| !c.enabled)
        .map(|c| c.channel.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    page(Logs {
        frame: &s.frame("Logs", "logs"),
        channels,
        records,
        disabled,
        script: super::frame::asset("logs.js"),
    })
}

#[handler]
pub async fn switch_channel(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path((channel, switch)): Path<(String, String)>,
    f: Fields,
) -> Response {
    or_page!(admin(&state, req, "logs").await);
    let s = or_page!(super::sender(&state, req, "logs", &f).await);
    let enabled = match switch.as_str() {
        "on" => true,
        "off" => false,
        _ => {
            let e = crate::web::error::ApiError::not_found("a channel is switched on or off");
            return s.failure("logs", e);
        }
    };
    match units::set_channel(&state, &channel, enabled, &s.principal.username).await {
        Ok(()) => see_other("/logs"),
        Err(e) => s.failure("logs", e),
    }
}

/// Every unit's log lines as Server-Sent Events (`log`: a record, id its sequence;
/// `gap`: lines this follower missed). A reconnecting EventSource sends
/// `Last-Event-ID` and resumes right after it (`?since=SEQ` when there is none).
#[handler]
pub async fn logs_stream(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    or_page!(admin(&state, req, "logs").await);
    let resume = req
        .header("last-event-id")
        .and_then(|v| v.parse::<u64>().ok())
        .or(q.get("since").parse().ok());
    let rx = match units::follow_logs(&state, resume).await {
        Ok(rx) => rx,
        Err(e) => return super::failure(&Frame::anonymous("Logs"), e),
    };
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        let event = match e {
            units::LogEvent::Record(r) => {
                poem::web::sse::Event::message(serde_json::to_string(&r).expect("json"))
                    .event_type("log")
                    .id(r.seq.to_string())
            }
            units::LogEvent::Gap { missed, reason } => poem::web::sse::Event::message(
                serde_json::json!({"missed": missed, "reason": reason}).to_string(),
            )
            .event_type("gap"),
        };
        Some((event, rx))
    });
    poem::web::sse::SSE::new(events)
        .keep_alive(std::time::Duration::from_secs(15))
        .into_response()
}
