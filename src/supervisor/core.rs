//! The supervisor's state machine. Pure: it never spawns, signals, sleeps or reads a file.
//!
//! `Core::handle(event, now)` updates unit states and returns [`Action`]s for the executor
//! (`supervisor::run`) to carry out; results of those actions come back as further
//! [`Event`]s. Time is passed in, and backoff jitter comes from an injected function, so
//! every transition can be unit-tested without processes.
//!
//! Invariants:
//! - A unit has a pid exactly while its process runs (`Starting`, `Ready`, `Stopping`).
//! - Events carry the incarnation number (`inc`) they belong to; stale ones are ignored.
//! - A unit goes down only after every unit ordered after it that is also going down.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::control::protocol::{ExitInfo, FailureRecord, PlanAction, PlanEntry, State, UnitStatus};
use crate::unit::graph::Graph;
use crate::unit::{ProbeSpec, RestartPolicy, ServiceType, UnitSpec};

/// Failure records kept per unit.
const KEPT_FAILURES: usize = 20;

/// A message a unit sent to its NOTIFY_SOCKET.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifyMsg {
    /// `READY=1`.
    Ready,
    /// `STATUS=…`.
    Status(String),
    /// `WATCHDOG=1`.
    Watchdog,
    /// `STOPPING=1`.
    Stopping,
}

/// Inputs to the state machine.
#[derive(Debug, Clone)]
pub enum Event {
    /// The executor spawned incarnation `inc`.
    Spawned {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
        /// Main pid (also the process group id).
        pid: i32,
    },
    /// Spawning failed (missing binary, busy port, bad user, …).
    SpawnFailed {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
        /// What went wrong.
        error: String,
    },
    /// A `condition_path_exists` was not met; nothing was spawned.
    ConditionFailed {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
        /// Which condition.
        reason: String,
    },
    /// A main process ended (reaped).
    Exited {
        /// Its pid.
        pid: i32,
        /// How.
        exit: ExitInfo,
        /// Its last output lines.
        last_lines: Vec<String>,
    },
    /// The readiness probe passed.
    ProbeReady {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
        /// Which probe.
        how: String,
    },
    /// A readiness attempt failed (sent when the reason changes), for the timeout's
    /// reason.
    ProbeFailed {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
        /// Why the attempt failed.
        why: String,
    },
    /// Not ready by the readiness timeout (a oneshot: not exited by `start_timeout`).
    StartTimeout {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
    },
    /// The liveness probe failed `failure_threshold` times in a row.
    LivenessFailed {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
        /// Last probe error.
        reason: String,
    },
    /// An external unit's liveness probe passed after it had failed.
    LivenessPassed {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
    },
    /// A notify message from the unit's process.
    Notify {
        /// Instance name.
        unit: String,
        /// The message.
        msg: NotifyMsg,
    },
    /// Time to check that `WATCHDOG=1` arrived within the interval.
    WatchdogCheck {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
    },
    /// The stop grace period ran out.
    StopTimeout {
        /// Instance name.
        unit: String,
        /// Incarnation.
        inc: u64,
    },
    /// A backoff delay ended: re-run scheduling.
    Wake,
    /// Start these instances (and what they pull in).
    Start(Vec<String>),
    /// Stop these instances (and what requires them).
    Stop(Vec<String>),
    /// Restart these instances (and what requires them).
    Restart(Vec<String>),
    /// Apply a validated reload plan with the new unit set.
    Reload {
        /// The new instances.
        units: Vec<Arc<UnitSpec>>,
        /// The plan computed by [`crate::supervisor::reload::plan`].
        plan: Vec<PlanEntry>,
    },
    /// Orderly stop of everything, then exit.
    Shutdown,
    /// Second stop signal: SIGKILL every group now.
    ForceShutdown,
}

/// Log severity of a supervisor event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal transitions.
    Info,
    /// Crashes, restarts, timeouts.
    Warn,
    /// Failed units.
    Error,
}

/// Effects for the executor.
#[derive(Debug, Clone)]
pub enum Action {
    /// Check conditions and ports, then spawn; answer with Spawned / SpawnFailed /
    /// ConditionFailed.
    Spawn {
        /// What to run.
        spec: Arc<UnitSpec>,
        /// Incarnation.
        inc: u64,
    },
    /// Send a signal to a process group.
    Signal {
        /// Instance name.
        unit: String,
        /// Process group id.
        pgid: i32,
        /// Signal.
        signal: Signal,
    },
    /// Run the readiness probe of incarnation `inc` until ProbeReady.
    StartReadiness {
        /// The unit.
        spec: Arc<UnitSpec>,
        /// Incarnation.
        inc: u64,
    },
    /// Run the liveness probe of incarnation `inc` until LivenessFailed.
    StartLiveness {
        /// The unit.
        spec: Arc<UnitSpec>,
        /// Incarnation.
        inc: u64,
    },
    /// Cancel the unit's probes.
    StopProbes {
        /// Instance name.
        unit: String,
    },
    /// Deliver `event` after `delay`.
    After {
        /// Delay.
        delay: Duration,
        /// Event.
        event: Event,
    },
    /// The main process ended: kill (and report) whatever is left in its group.
    CleanupGroup {
        /// Instance name.
        unit: String,
        /// Process group id.
        pgid: i32,
    },
    /// A state transition or notable event to log.
    Log {
        /// Instance name.
        unit: String,
        /// Severity.
        level: Level,
        /// Message.
        message: String,
    },
    /// Every wanted unit is ready (sent once): notify our own parent.
    AllReady,
    /// Before every unit was ready, a wanted unit failed for good (start limit hit, policy
    /// `no`, or it could not be spawned): the set cannot become ready by itself (sent
    /// once, never after [`Action::AllReady`]).
    StartFailed {
        /// The failed instance.
        unit: String,
        /// Its last reason.
        reason: String,
    },
    /// Shutdown finished: every process is gone.
    AllStopped,
    /// A removed unit is gone: release its resources.
    Forget {
        /// Instance name.
        unit: String,
    },
}

/// What happens once a stopping unit's process has ended.
#[derive(Debug, Clone, PartialEq)]
enum AfterStop {
    /// Plain stop.
    Nothing,
    /// It was killed for failing (probe, timeout): apply the restart policy.
    Failure(String),
}

/// Run-time state of one instance.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Current spec.
    pub spec: Arc<UnitSpec>,
    /// Current state.
    pub state: State,
    /// Why.
    pub reason: String,
    /// When the state began.
    pub since: SystemTime,
    /// Main pid while running.
    pub pid: Option<i32>,
    /// Incarnation counter.
    pub inc: u64,
    /// Whether the unit should be running.
    pub wanted: bool,
    /// Automatic restarts since last explicit start.
    pub restarts: u32,
    /// How the last process ended.
    pub last_exit: Option<ExitInfo>,
    /// Failure records, oldest first.
    pub failures: VecDeque<FailureRecord>,
    /// `STATUS=` text.
    pub status_text: Option<String>,
    /// An external unit's failing liveness probe (it stays ready: nothing to restart).
    pub degraded: Option<String>,
    attempt: u32,
    starts: VecDeque<Instant>,
    spawned_at: Option<(Instant, SystemTime)>,
    ready_at: Option<Instant>,
    restart_at: Option<Instant>,
    after_stop: AfterStop,
    restart_pending: bool,
    pending_spec: Option<Arc<UnitSpec>>,
    remove_when_down: bool,
    blocked: bool,
    last_watchdog: Option<Instant>,
    last_probe_failure: Option<String>,
}

impl Unit {
    fn new(spec: Arc<UnitSpec>, wanted: bool, wall: SystemTime) -> Unit {
        Unit {
            spec,
            state: State::Inactive,
            reason: "loaded".into(),
            since: wall,
            pid: None,
            inc: 0,
            wanted,
            restarts: 0,
            last_exit: None,
            failures: VecDeque::new(),
            status_text: None,
            degraded: None,
            attempt: 0,
            starts: VecDeque::new(),
            spawned_at: None,
            ready_at: None,
            restart_at: None,
            after_stop: AfterStop::Nothing,
            restart_pending: false,
            pending_spec: None,
            remove_when_down: false,
            blocked: false,
            last_watchdog: None,
            last_probe_failure: None,
        }
    }

    /// Whether a process of the unit is up or about to be.
    fn is_up(&self) -> bool {
        matches!(
            self.state,
            State::Starting | State::Ready | State::Stopping | State::Restarting
        )
    }

    /// Whether nothing is pending for the unit (what `start --wait` waits for).
    pub fn settled(&self) -> bool {
        match self.state {
            State::Ready => !self.going_down(),
            State::Exited | State::Failed | State::Skipped => true,
            State::Inactive => !self.wanted || self.blocked,
            _ => false,
        }
    }

    /// Whether the unit should be brought down (stop, restart or changed spec).
    fn going_down(&self) -> bool {
        !self.wanted || self.restart_pending || self.pending_spec.is_some()
    }
}

/// The clock of one step.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Wall time, for display.
    pub wall: SystemTime,
}

impl Now {
    /// The current time.
    pub fn current() -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// The state machine.
pub struct Core {
    units: BTreeMap<String, Unit>,
    graph: Graph,
    pids: HashMap<i32, String>,
    shutting_down: bool,
    all_ready_sent: bool,
    start_failed_sent: bool,
    all_stopped_sent: bool,
    jitter: Box<dyn FnMut() -> f64 + Send>,
}

/// RFC 3339 text of a wall time.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Core {
    /// A core over `units`, all wanted; `jitter` returns values in `[0, 1)`.
    pub fn new(units: &[Arc<UnitSpec>], now: Now, jitter: Box<dyn FnMut() -> f64 + Send>) -> Core {
        Core {
            units: units
                .iter()
                .map(|u| (u.name.clone(), Unit::new(u.clone(), true, now.wall)))
                .collect(),
            graph: Graph::new(units),
            pids: HashMap::new(),
            shutting_down: false,
            all_ready_sent: false,
            start_failed_sent: false,
            all_stopped_sent: false,
            jitter,
        }
    }

    /// Kicks off the initial start: call once after construction.
    pub fn boot(&mut self, now: Now) -> Vec<Action> {
        self.handle(Event::Wake, now)
    }

    /// The unit whose main process is `pid`.
    pub fn unit_of_pid(&self, pid: i32) -> Option<&str> {
        self.pids.get(&pid).map(String::as_str)
    }

    /// A unit by instance name.
    pub fn unit(&self, name: &str) -> Option<&Unit> {
        self.units.get(name)
    }

    /// Instance names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.units.keys().cloned().collect()
    }

    /// Current specs (pending reload specs win), for the reload diff.
    pub fn specs(&self) -> Vec<Arc<UnitSpec>> {
        self.units
            .values()
            .filter(|u| !u.remove_when_down)
            .map(|u| u.pending_spec.clone().unwrap_or_else(|| u.spec.clone()))
            .collect()
    }

    /// The dependency graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Status of every instance.
    pub fn statuses(&self) -> Vec<UnitStatus> {
        self.units
            .values()
            .map(|u| UnitStatus {
                name: u.spec.name.clone(),
                state: u.state,
                reason: u.reason.clone(),
                pid: u.pid,
                restarts: u.restarts,
                since: rfc3339(u.since),
                last_exit: u.last_exit.clone(),
                status_text: u.status_text.clone(),
                channel: u.spec.log.channel.clone(),
                description: u.spec.description.clone(),
                dropped: 0,
                degraded: u.degraded.clone(),
                ready_ms: match (u.spawned_at, u.ready_at) {
                    (Some((spawned, _)), Some(ready)) => {
                        Some(ready.saturating_duration_since(spawned).as_millis() as u64)
                    }
                    _ => None,
                },
            })
            .collect()
    }

    /// Applies one event; returns the effects to carry out.
    pub fn handle(&mut self, event: Event, now: Now) -> Vec<Action> {
        let mut out = vec![];
        self.apply(event, now, &mut out);
        self.schedule(now, &mut out);
        self.check_milestones(&mut out);
        out
    }

    fn set_state(
        &mut self,
        name: &str,
        state: State,
        reason: String,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(u) = self.units.get_mut(name) else {
            return;
        };
        if u.state == state && u.reason == reason {
            return;
        }
        let level = match state {
            State::Failed => Level::Error,
            State::Restarting => Level::Warn,
            _ => Level::Info,
        };
        out.push(Action::Log {
            unit: name.to_string(),
            level,
            message: if u.state == state {
                format!("{}: {reason}", state.as_str())
            } else {
                format!("{} → {}: {reason}", u.state.as_str(), state.as_str())
            },
        });
        u.state = state;
        u.reason = reason;
        u.since = now.wall;
    }

    fn apply(&mut self, event: Event, now: Now, out: &mut Vec<Action>) {
        match event {
            Event::Wake => {}
            Event::Spawned { unit, inc, pid } => {
                let Some(u) = self.units.get_mut(&unit) else {
                    return;
                };
                if u.inc != inc || u.state != State::Starting {
                    return;
                }
                u.pid = Some(pid);
                self.pids.insert(pid, unit.clone());
                self.started(&unit, inc, format!("spawned pid {pid}"), now, out);
            }
            Event::SpawnFailed { unit, inc, error } => {
                let Some(u) = self.units.get(&unit) else {
                    return;
                };
                if u.inc != inc {
                    return;
                }
                self.record_failure(&unit, None, None, error.clone(), vec![], now);
                self.fail_or_restart(&unit, error, now, out);
            }
            Event::ConditionFailed { unit, inc, reason } => {
                let Some(u) = self.units.get(&unit) else {
                    return;
                };
                if u.inc != inc {
                    return;
                }
                self.set_state(&unit, State::Skipped, reason, now, out);
            }
            Event::Exited {
                pid,
                exit,
                last_lines,
            } => self.on_exit(pid, exit, last_lines, now, out),
            Event::ProbeReady { unit, inc, how } => {
                if self.is_current(&unit, inc, State::Starting) {
                    self.become_ready(&unit, &how, now, out);
                }
            }
            Event::ProbeFailed { unit, inc, why } => {
                if self.is_current(&unit, inc, State::Starting)
                    && let Some(u) = self.units.get_mut(&unit)
                {
                    u.last_probe_failure = Some(why);
                }
            }
            Event::StartTimeout { unit, inc } => {
                if self.is_current(&unit, inc, State::Starting) {
                    let spec = &self.units[&unit].spec;
                    let why = match (&spec.readiness, spec.kind) {
                        (_, ServiceType::Oneshot) => format!(
                            "still running after start_timeout ({})",
                            humantime::format_duration(spec.start_timeout)
                        ),
                        (r, _) => {
                            let t = r.as_ref().map(|r| r.timeout).unwrap_or_default();
                            let last = match &self.units[&unit].last_probe_failure {
                                Some(why) => format!(" (last attempt: {why})"),
                                None => String::new(),
                            };
                            format!("not ready within {}{last}", humantime::format_duration(t))
                        }
                    };
                    self.kill_for_failure(&unit, why, now, out);
                }
            }
            Event::LivenessFailed { unit, inc, reason } => {
                if !self.is_current(&unit, inc, State::Ready) {
                    return;
                }
                let u = self.units.get_mut(&unit).expect("unit exists");
                if u.spec.kind == ServiceType::External {
                    // Nothing here to restart: report it, keep probing, keep dependents.
                    if u.degraded.is_none() {
                        out.push(Action::Log {
                            unit: unit.clone(),
                            level: Level::Warn,
                            message: format!("degraded: liveness probe failed: {reason}"),
                        });
                    }
                    u.degraded = Some(format!("liveness probe failed: {reason}"));
                } else {
                    self.kill_for_failure(
                        &unit,
                        format!("liveness probe failed: {reason}"),
                        now,
                        out,
                    );
                }
            }
            Event::LivenessPassed { unit, inc } => {
                if self.is_current(&unit, inc, State::Ready)
                    && let Some(u) = self.units.get_mut(&unit)
                    && u.degraded.take().is_some()
                {
                    out.push(Action::Log {
                        unit,
                        level: Level::Info,
                        message: "liveness probe passes again".into(),
                    });
                }
            }
            Event::Notify { unit, msg } => self.on_notify(&unit, msg, now, out),
            Event::WatchdogCheck { unit, inc } => {
                if !self.is_current(&unit, inc, State::Ready) {
                    return;
                }
                let u = &self.units[&unit];
                let Some(l) = u.spec.liveness.clone() else {
                    return;
                };
                let fresh = u
                    .last_watchdog
                    .is_some_and(|t| now.mono.duration_since(t) <= l.interval);
                if fresh {
                    out.push(Action::After {
                        delay: l.interval,
                        event: Event::WatchdogCheck { unit, inc },
                    });
                } else {
                    let why = format!(
                        "no WATCHDOG=1 within {}",
                        humantime::format_duration(l.interval)
                    );
                    self.kill_for_failure(&unit, why, now, out);
                }
            }
            Event::StopTimeout { unit, inc } => {
                if self.is_current(&unit, inc, State::Stopping)
                    && let Some(pid) = self.units[&unit].pid
                {
                    let t = self.units[&unit].spec.stop_timeout;
                    out.push(Action::Log {
                        unit: unit.clone(),
                        level: Level::Warn,
                        message: format!(
                            "did not stop within {}: sending SIGKILL to process group {pid}",
                            humantime::format_duration(t)
                        ),
                    });
                    out.push(Action::Signal {
                        unit,
                        pgid: pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
            Event::Start(names) => {
                let pulled = self.graph.pull_in_closure(&names);
                for n in pulled {
                    let named = names.contains(&n);
                    let Some(u) = self.units.get_mut(&n) else {
                        continue;
                    };
                    u.wanted = true;
                    u.remove_when_down = false;
                    let reset = matches!(u.state, State::Failed | State::Skipped)
                        || (named && u.state == State::Exited);
                    if reset {
                        u.attempt = 0;
                        u.starts.clear();
                        u.restarts = 0;
                        self.set_state(&n, State::Inactive, "start requested".into(), now, out);
                    } else if named && u.state == State::Restarting {
                        // An explicit start skips the remaining backoff.
                        u.restart_at = Some(now.mono);
                    }
                }
            }
            Event::Stop(names) => {
                for n in self.graph.required_by_closure(&names) {
                    if let Some(u) = self.units.get_mut(&n) {
                        u.wanted = false;
                    }
                }
            }
            Event::Restart(names) => {
                for n in self.graph.required_by_closure(&names) {
                    let Some(u) = self.units.get_mut(&n) else {
                        continue;
                    };
                    u.wanted = true;
                    u.attempt = 0;
                    u.starts.clear();
                    if matches!(u.state, State::Starting | State::Ready | State::Stopping) {
                        u.restart_pending = true;
                    } else {
                        u.restart_at = Some(now.mono);
                        if !matches!(u.state, State::Restarting) {
                            self.set_state(
                                &n,
                                State::Inactive,
                                "restart requested".into(),
                                now,
                                out,
                            );
                        }
                    }
                }
            }
            Event::Reload { units, plan } => self.on_reload(units, plan, now, out),
            Event::Shutdown => {
                self.shutting_down = true;
                for u in self.units.values_mut() {
                    u.wanted = false;
                }
            }
            Event::ForceShutdown => {
                self.shutting_down = true;
                for u in self.units.values_mut() {
                    u.wanted = false;
                    if let Some(pid) = u.pid {
                        out.push(Action::Signal {
                            unit: u.spec.name.clone(),
                            pgid: pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
            }
        }
    }

    /// The unit's process is up (or, external, nothing needed spawning): wait for its
    /// readiness, its exit (oneshot), or nothing.
    fn started(&mut self, unit: &str, inc: u64, reason: String, now: Now, out: &mut Vec<Action>) {
        let u = self.units.get_mut(unit).expect("unit exists");
        u.spawned_at = Some((now.mono, now.wall));
        u.ready_at = None;
        u.status_text = None;
        u.degraded = None;
        u.last_probe_failure = None;
        let spec = u.spec.clone();
        let unit = unit.to_string();
        match (&spec.readiness, spec.kind) {
            (_, ServiceType::Oneshot) => {
                self.set_state(
                    &unit,
                    State::Starting,
                    format!("{reason}, running to completion"),
                    now,
                    out,
                );
                out.push(Action::After {
                    delay: spec.start_timeout,
                    event: Event::StartTimeout { unit, inc },
                });
            }
            (None, _) => self.become_ready(&unit, "spawned (no readiness probe)", now, out),
            (Some(r), _) => {
                self.set_state(
                    &unit,
                    State::Starting,
                    format!("{reason}, waiting for {}", r.probe.describe()),
                    now,
                    out,
                );
                out.push(Action::StartReadiness {
                    spec: spec.clone(),
                    inc,
                });
                out.push(Action::After {
                    delay: r.timeout,
                    event: Event::StartTimeout { unit, inc },
                });
            }
        }
    }

    fn is_current(&self, unit: &str, inc: u64, state: State) -> bool {
        self.units
            .get(unit)
            .is_some_and(|u| u.inc == inc && u.state == state)
    }

    fn become_ready(&mut self, name: &str, how: &str, now: Now, out: &mut Vec<Action>) {
        let u = self.units.get_mut(name).expect("unit exists");
        u.ready_at = Some(now.mono);
        u.last_watchdog = Some(now.mono);
        let took = u
            .spawned_at
            .map(|(t, _)| now.mono.duration_since(t).as_millis())
            .unwrap_or(0);
        let spec = u.spec.clone();
        let inc = u.inc;
        self.set_state(
            name,
            State::Ready,
            format!("{how} after {took}ms"),
            now,
            out,
        );
        if let Some(l) = &spec.liveness {
            if l.probe == ProbeSpec::Notify {
                out.push(Action::After {
                    delay: l.interval,
                    event: Event::WatchdogCheck {
                        unit: name.to_string(),
                        inc,
                    },
                });
            } else {
                out.push(Action::StartLiveness {
                    spec: spec.clone(),
                    inc,
                });
            }
        }
    }

    fn on_notify(&mut self, name: &str, msg: NotifyMsg, now: Now, out: &mut Vec<Action>) {
        let Some(u) = self.units.get_mut(name) else {
            return;
        };
        match msg {
            NotifyMsg::Ready => {
                if u.state == State::Starting
                    && u.pid.is_some()
                    && u.spec.kind == ServiceType::Notify
                {
                    self.become_ready(name, "READY=1", now, out);
                }
            }
            NotifyMsg::Status(text) => u.status_text = Some(text),
            NotifyMsg::Watchdog => u.last_watchdog = Some(now.mono),
            NotifyMsg::Stopping => u.status_text = Some("stopping (STOPPING=1)".into()),
        }
    }

    /// Kills a running unit that failed a probe; the restart policy applies on its exit.
    fn kill_for_failure(&mut self, name: &str, why: String, now: Now, out: &mut Vec<Action>) {
        let u = self.units.get_mut(name).expect("unit exists");
        u.after_stop = AfterStop::Failure(why.clone());
        self.begin_stop(name, why, now, out);
    }

    fn begin_stop(&mut self, name: &str, why: String, now: Now, out: &mut Vec<Action>) {
        let u = self.units.get_mut(name).expect("unit exists");
        out.push(Action::StopProbes {
            unit: name.to_string(),
        });
        match u.pid {
            Some(pid) => {
                let (signal, timeout, inc) = (u.spec.stop_signal, u.spec.stop_timeout, u.inc);
                out.push(Action::Signal {
                    unit: name.to_string(),
                    pgid: pid,
                    signal,
                });
                out.push(Action::After {
                    delay: timeout,
                    event: Event::StopTimeout {
                        unit: name.to_string(),
                        inc,
                    },
                });
                self.set_state(
                    name,
                    State::Stopping,
                    format!("{why} (sent {signal})"),
                    now,
                    out,
                );
            }
            None => match std::mem::replace(&mut u.after_stop, AfterStop::Nothing) {
                // An external unit that failed its start: retry by the restart policy.
                AfterStop::Failure(why) => {
                    self.record_failure(name, None, None, why.clone(), vec![], now);
                    self.fail_or_restart(name, why, now, out);
                }
                AfterStop::Nothing => {
                    u.restart_pending = false;
                    self.went_down(name, why, now, out);
                }
            },
        }
    }

    /// The unit's process is gone after a stop: settle as inactive, apply pending changes.
    fn went_down(&mut self, name: &str, why: String, now: Now, out: &mut Vec<Action>) {
        let u = self.units.get_mut(name).expect("unit exists");
        u.restart_pending = false;
        if let Some(spec) = u.pending_spec.take() {
            u.spec = spec;
        }
        if u.remove_when_down {
            self.set_state(name, State::Inactive, format!("{why}; removed"), now, out);
            self.units.remove(name);
            self.rebuild_graph();
            out.push(Action::Forget {
                unit: name.to_string(),
            });
            return;
        }
        self.set_state(name, State::Inactive, why, now, out);
    }

    fn on_exit(
        &mut self,
        pid: i32,
        exit: ExitInfo,
        last_lines: Vec<String>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(name) = self.pids.remove(&pid) else {
            return;
        };
        let Some(u) = self.units.get_mut(&name) else {
            return;
        };
        u.pid = None;
        u.last_exit = Some(exit.clone());
        out.push(Action::StopProbes { unit: name.clone() });
        out.push(Action::CleanupGroup {
            unit: name.clone(),
            pgid: pid,
        });
        let kind = u.spec.kind;
        let policy = u.spec.restart.policy;
        match u.state {
            State::Stopping => match std::mem::replace(&mut u.after_stop, AfterStop::Nothing) {
                AfterStop::Failure(why) => {
                    self.record_failure(&name, Some(pid), Some(exit), why.clone(), last_lines, now);
                    self.fail_or_restart(&name, why, now, out);
                }
                AfterStop::Nothing => self.went_down(&name, format!("stopped ({exit})"), now, out),
            },
            State::Starting | State::Ready => {
                let was_ready = u.state == State::Ready;
                if exit.success() && kind == ServiceType::Oneshot {
                    self.set_state(&name, State::Exited, "completed (exit 0)".into(), now, out);
                } else if exit.success() && policy != RestartPolicy::Always {
                    self.set_state(
                        &name,
                        State::Exited,
                        "exited by itself (exit 0)".into(),
                        now,
                        out,
                    );
                } else if exit.success() {
                    self.fail_or_restart(&name, "exited (exit 0), policy always".into(), now, out);
                } else {
                    let why = if was_ready || kind == ServiceType::Oneshot {
                        format!("process ended ({exit})")
                    } else {
                        format!("process ended before ready ({exit})")
                    };
                    self.record_failure(&name, Some(pid), Some(exit), why.clone(), last_lines, now);
                    self.fail_or_restart(&name, why, now, out);
                }
            }
            _ => {}
        }
    }

    fn record_failure(
        &mut self,
        name: &str,
        pid: Option<i32>,
        exit: Option<ExitInfo>,
        reason: String,
        last_lines: Vec<String>,
        now: Now,
    ) {
        let Some(u) = self.units.get_mut(name) else {
            return;
        };
        let (started_mono, started_wall) = u.spawned_at.unwrap_or((now.mono, now.wall));
        let rec = FailureRecord {
            pid: pid.unwrap_or(0),
            started: rfc3339(started_wall),
            ended: rfc3339(now.wall),
            exit,
            reason,
            time_to_ready_ms: u
                .ready_at
                .map(|r| r.duration_since(started_mono).as_millis() as u64),
            last_lines,
        };
        u.failures.push_back(rec);
        while u.failures.len() > KEPT_FAILURES {
            u.failures.pop_front();
        }
    }

    /// Applies the restart policy after a failure (or an `always` exit).
    fn fail_or_restart(&mut self, name: &str, why: String, now: Now, out: &mut Vec<Action>) {
        let u = self.units.get_mut(name).expect("unit exists");
        let r = u.spec.restart.clone();
        if r.policy == RestartPolicy::No || !u.wanted || u.going_down() {
            if u.going_down() && u.wanted {
                // A restart or reload was pending anyway: let scheduling start it fresh.
                self.went_down(name, why, now, out);
            } else if r.policy == RestartPolicy::No {
                self.set_state(
                    name,
                    State::Failed,
                    format!("{why}; restart policy is `no`"),
                    now,
                    out,
                );
            } else {
                self.went_down(name, why, now, out);
            }
            return;
        }
        let stable = u
            .ready_at
            .or(u.spawned_at.map(|s| s.0))
            .is_some_and(|t| now.mono.duration_since(t) >= r.reset_after);
        if stable {
            u.attempt = 0;
        }
        while u
            .starts
            .front()
            .is_some_and(|t| now.mono.duration_since(*t) > r.interval)
        {
            u.starts.pop_front();
        }
        if u.starts.len() as u32 >= r.burst {
            let msg = format!(
                "{why}; start limit hit ({} starts within {}): `tmidb-cli start {name}` to try again",
                u.starts.len(),
                humantime::format_duration(r.interval)
            );
            self.set_state(name, State::Failed, msg, now, out);
            return;
        }
        let delay = if u.attempt == 0 {
            Duration::ZERO
        } else {
            crate::backoff::Backoff::new(r.delay, r.max_delay).delay(u.attempt - 1, (self.jitter)())
        };
        let u = self.units.get_mut(name).expect("unit exists");
        u.attempt += 1;
        u.restarts += 1;
        u.restart_at = Some(now.mono + delay);
        let msg = if delay.is_zero() {
            format!("{why}; restarting now")
        } else {
            format!("{why}; restarting in {}ms", delay.as_millis())
        };
        self.set_state(name, State::Restarting, msg, now, out);
        if !delay.is_zero() {
            out.push(Action::After {
                delay,
                event: Event::Wake,
            });
        }
    }

    fn on_reload(
        &mut self,
        units: Vec<Arc<UnitSpec>>,
        plan: Vec<PlanEntry>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let by_name: HashMap<&str, &Arc<UnitSpec>> =
            units.iter().map(|u| (u.name.as_str(), u)).collect();
        for e in &plan {
            match e.action {
                PlanAction::Start => {
                    let spec = by_name[e.unit.as_str()].clone();
                    let mut u = Unit::new(spec, !self.shutting_down, now.wall);
                    u.reason = "added by reload".into();
                    self.units.insert(e.unit.clone(), u);
                }
                PlanAction::Stop => {
                    if let Some(u) = self.units.get_mut(&e.unit) {
                        u.wanted = false;
                        u.remove_when_down = true;
                        if !u.is_up() {
                            self.went_down(&e.unit.clone(), "removed by reload".into(), now, out);
                        }
                    }
                }
                PlanAction::Restart => {
                    let spec = by_name[e.unit.as_str()].clone();
                    let Some(u) = self.units.get_mut(&e.unit) else {
                        continue;
                    };
                    u.wanted = !self.shutting_down;
                    u.attempt = 0;
                    u.starts.clear();
                    if u.pid.is_some() {
                        u.pending_spec = Some(spec);
                    } else {
                        u.spec = spec;
                        u.restart_at = Some(now.mono);
                        self.set_state(
                            &e.unit.clone(),
                            State::Inactive,
                            format!("reloaded: {}", e.why),
                            now,
                            out,
                        );
                    }
                }
                PlanAction::Update => {
                    if let (Some(u), Some(spec)) =
                        (self.units.get_mut(&e.unit), by_name.get(e.unit.as_str()))
                    {
                        // The running process keeps going; the next decision (a restart,
                        // a burst count) follows the new settings.
                        match &mut u.pending_spec {
                            Some(p) => *p = (*spec).clone(),
                            None => u.spec = (*spec).clone(),
                        }
                    }
                }
                PlanAction::Unchanged => {
                    if let (Some(u), Some(spec)) =
                        (self.units.get_mut(&e.unit), by_name.get(e.unit.as_str()))
                    {
                        // Equal content; take the new value so error locations stay current.
                        if u.pending_spec.is_none() {
                            u.spec = (*spec).clone();
                        }
                    }
                }
            }
        }
        self.rebuild_graph();
    }

    fn rebuild_graph(&mut self) {
        let specs: Vec<Arc<UnitSpec>> = self
            .units
            .values()
            .map(|u| u.pending_spec.clone().unwrap_or_else(|| u.spec.clone()))
            .collect();
        self.graph = Graph::new(&specs);
    }

    /// Starts and stops whatever the targets call for, in dependency order.
    fn schedule(&mut self, now: Now, out: &mut Vec<Action>) {
        loop {
            let mut progressed = false;
            let names = self.names();
            // Stops first, dependents before what they depend on.
            for n in &names {
                let Some(u) = self.units.get(n) else { continue };
                if !u.going_down() {
                    continue;
                }
                match u.state {
                    State::Starting | State::Ready => {
                        let blocked = self.graph.dependents_of(n).iter().any(|d| {
                            self.units.get(d).is_some_and(|du| {
                                du.going_down()
                                    && matches!(
                                        du.state,
                                        State::Starting | State::Ready | State::Stopping
                                    )
                            })
                        });
                        if !blocked {
                            let why = if !u.wanted {
                                "stop requested"
                            } else {
                                "restart requested"
                            };
                            self.begin_stop(n, why.into(), now, out);
                            progressed = true;
                        }
                    }
                    State::Restarting => {
                        self.went_down(n, "stop requested during backoff".into(), now, out);
                        progressed = true;
                    }
                    State::Inactive | State::Failed | State::Exited | State::Skipped
                        if u.remove_when_down =>
                    {
                        self.went_down(n, "removed by reload".into(), now, out);
                        progressed = true;
                    }
                    _ => {}
                }
            }
            if self.shutting_down {
                if !progressed {
                    break;
                }
                continue;
            }
            // Starts, each after what it is ordered after.
            for n in &self.names() {
                let u = &self.units[n];
                let due = match u.state {
                    State::Inactive => true,
                    State::Restarting => u.restart_at.is_none_or(|t| t <= now.mono),
                    _ => false,
                };
                if !u.wanted || !due || u.going_down() {
                    continue;
                }
                match self.start_gate(n) {
                    Gate::Open => {
                        self.spawn(n, now, out);
                        progressed = true;
                    }
                    Gate::Wait(why) => {
                        let u = self.units.get_mut(n).expect("unit exists");
                        u.blocked = false;
                        if u.state == State::Inactive {
                            self.set_state(n, State::Inactive, why, now, out);
                        }
                    }
                    Gate::Blocked(why) => {
                        let u = self.units.get_mut(n).expect("unit exists");
                        if !u.blocked {
                            u.blocked = true;
                            progressed = true;
                        }
                        self.set_state(n, State::Inactive, why, now, out);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn start_gate(&self, name: &str) -> Gate {
        for r in self.graph.requires.get(name).into_iter().flatten() {
            let Some(ru) = self.units.get(r) else {
                continue;
            };
            match ru.state {
                State::Ready | State::Exited | State::Skipped if !ru.going_down() => {}
                State::Failed => return Gate::Blocked(format!("required unit {r} failed")),
                State::Inactive if ru.blocked => {
                    return Gate::Blocked(format!("required unit {r} cannot start: {}", ru.reason));
                }
                State::Inactive if !ru.wanted => {
                    return Gate::Blocked(format!("required unit {r} is stopped"));
                }
                _ => return Gate::Wait(format!("waiting for {r}")),
            }
        }
        for o in self.graph.order_of(name) {
            let Some(ou) = self.units.get(o) else {
                continue;
            };
            let pending = match ou.state {
                State::Starting | State::Restarting | State::Stopping => true,
                State::Inactive => ou.wanted && !ou.blocked,
                _ => false,
            };
            if pending {
                return Gate::Wait(format!("waiting for {o} (ordered after it)"));
            }
        }
        Gate::Open
    }

    fn spawn(&mut self, name: &str, now: Now, out: &mut Vec<Action>) {
        let u = self.units.get_mut(name).expect("unit exists");
        let r = &u.spec.restart;
        while u
            .starts
            .front()
            .is_some_and(|t| now.mono.duration_since(*t) > r.interval)
        {
            u.starts.pop_front();
        }
        u.starts.push_back(now.mono);
        u.inc += 1;
        u.blocked = false;
        u.restart_at = None;
        u.after_stop = AfterStop::Nothing;
        let (spec, inc) = (u.spec.clone(), u.inc);
        if spec.kind == ServiceType::External {
            self.started(name, inc, "external service".into(), now, out);
            return;
        }
        self.set_state(name, State::Starting, "spawning".into(), now, out);
        out.push(Action::Spawn { spec, inc });
    }

    fn check_milestones(&mut self, out: &mut Vec<Action>) {
        if self.shutting_down {
            let all_down = self
                .units
                .values()
                .all(|u| u.pid.is_none() && u.state != State::Stopping);
            if all_down && !self.all_stopped_sent {
                self.all_stopped_sent = true;
                out.push(Action::AllStopped);
            }
            return;
        }
        if !self.all_ready_sent
            && self.units.values().all(|u| {
                !u.wanted || matches!(u.state, State::Ready | State::Exited | State::Skipped)
            })
        {
            self.all_ready_sent = true;
            out.push(Action::AllReady);
        }
        if !self.all_ready_sent && !self.start_failed_sent {
            let failed = self
                .units
                .values()
                .find(|u| u.wanted && u.state == State::Failed);
            if let Some(u) = failed {
                self.start_failed_sent = true;
                out.push(Action::StartFailed {
                    unit: u.spec.name.clone(),
                    reason: u.reason.clone(),
                });
            }
        }
    }

    /// Failure records of a unit.
    pub fn failures(&self, name: &str) -> Option<Vec<FailureRecord>> {
        self.units
            .get(name)
            .map(|u| u.failures.iter().cloned().collect())
    }
}

enum Gate {
    Open,
    Wait(String),
    Blocked(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn specs(files: &[(&str, &str)]) -> Vec<Arc<UnitSpec>> {
        let mut vars = BTreeMap::new();
        vars.insert("paths.data_dir".to_string(), "/d".to_string());
        crate::unit::load_files(files, &vars).unwrap().units
    }

    /// A core with a hand-driven clock and jitter fixed at the middle (factor 1.0).
    struct H {
        core: Core,
        now: Now,
        next_pid: i32,
    }

    impl H {
        fn new(files: &[(&str, &str)]) -> (H, Vec<Action>) {
            let now = Now::current();
            let mut core = Core::new(&specs(files), now, Box::new(|| 0.5));
            let boot = core.boot(now);
            (
                H {
                    core,
                    now,
                    next_pid: 100,
                },
                boot,
            )
        }
        fn step(&mut self, ev: Event) -> Vec<Action> {
            self.core.handle(ev, self.now)
        }
        fn advance(&mut self, d: Duration) {
            self.now.mono += d;
            self.now.wall += d;
        }
        /// Answers every Spawn in `actions` with Spawned; returns the pids by unit.
        fn spawn_all(&mut self, actions: &[Action]) -> (BTreeMap<String, i32>, Vec<Action>) {
            let mut pids = BTreeMap::new();
            let mut more = vec![];
            for a in actions {
                if let Action::Spawn { spec, inc } = a {
                    self.next_pid += 1;
                    pids.insert(spec.name.clone(), self.next_pid);
                    more.extend(self.step(Event::Spawned {
                        unit: spec.name.clone(),
                        inc: *inc,
                        pid: self.next_pid,
                    }));
                }
            }
            (pids, more)
        }
        fn state(&self, n: &str) -> State {
            self.core.unit(n).unwrap().state
        }
        fn exit(&mut self, pid: i32, code: i32) -> Vec<Action> {
            self.step(Event::Exited {
                pid,
                exit: ExitInfo::Code(code),
                last_lines: vec!["bye".into()],
            })
        }
    }

    fn spawned(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { spec, .. } => Some(spec.name.clone()),
                _ => None,
            })
            .collect()
    }

    fn signalled(actions: &[Action]) -> Vec<(i32, Signal)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal { pgid, signal, .. } => Some((*pgid, *signal)),
                _ => None,
            })
            .collect()
    }

    const SIMPLE: &str = "[service]\ncommand = [\"/bin/sleep\", \"100\"]\n";

    #[test]
    fn independent_units_start_together_and_dependents_wait_for_oneshots() {
        let (mut h, boot) = H::new(&[
            ("a", SIMPLE),
            ("b", SIMPLE),
            (
                "init",
                "[service]\ntype = \"oneshot\"\ncommand = [\"/bin/true\"]\n",
            ),
            (
                "app",
                "[unit]\nrequires = [\"init\"]\n[service]\ncommand = [\"/bin/sleep\", \"1\"]\n",
            ),
        ]);
        assert_eq!(spawned(&boot), ["a", "b", "init"]);
        let (pids, more) = h.spawn_all(&boot);
        assert!(spawned(&more).is_empty(), "app must wait for init");
        assert_eq!(h.state("a"), State::Ready);
        assert_eq!(h.state("init"), State::Starting);
        let after = h.exit(pids["init"], 0);
        assert_eq!(h.state("init"), State::Exited);
        assert_eq!(spawned(&after), ["app"]);
    }

    const EXTERNAL: &str = "[service]\ntype = \"external\"\n[readiness]\nprobe = \"tcp\"\naddress = \"db.example:5432\"\ntimeout = \"5s\"\n[liveness]\nprobe = \"tcp\"\naddress = \"db.example:5432\"\n";

    fn probe_started(actions: &[Action], unit: &str) -> Option<u64> {
        actions.iter().find_map(|a| match a {
            Action::StartReadiness { spec, inc } if spec.name == unit => Some(*inc),
            _ => None,
        })
    }

    #[test]
    fn an_external_unit_spawns_nothing_and_gates_its_dependents_on_its_probe() {
        let (mut h, boot) = H::new(&[
            ("db", EXTERNAL),
            (
                "app",
                "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"/bin/sleep\", \"1\"]\n",
            ),
        ]);
        assert!(spawned(&boot).is_empty(), "nothing to spawn yet: {boot:?}");
        let inc = probe_started(&boot, "db").expect("readiness probe of db");
        assert_eq!(h.state("db"), State::Starting);
        assert!(h.core.unit("db").unwrap().pid.is_none());
        let after = h.step(Event::ProbeReady {
            unit: "db".into(),
            inc,
            how: "tcp".into(),
        });
        assert_eq!(h.state("db"), State::Ready);
        assert_eq!(spawned(&after), ["app"]);
        let (pids, _) = h.spawn_all(&after);
        // A stop takes app down first; db then stops at once: no process, no signal.
        let stop = h.step(Event::Stop(vec!["db".into()]));
        assert_eq!(signalled(&stop), [(pids["app"], Signal::SIGTERM)]);
        assert_eq!(h.state("db"), State::Ready, "app is stopped first");
        let down = h.exit(pids["app"], 0);
        assert!(signalled(&down).is_empty());
        assert_eq!(h.state("db"), State::Inactive);
    }

    #[test]
    fn an_external_unit_is_degraded_not_restarted_when_its_liveness_fails() {
        let (mut h, boot) = H::new(&[("db", EXTERNAL)]);
        let inc = probe_started(&boot, "db").unwrap();
        h.step(Event::ProbeReady {
            unit: "db".into(),
            inc,
            how: "tcp".into(),
        });
        let out = h.step(Event::LivenessFailed {
            unit: "db".into(),
            inc,
            reason: "connection refused".into(),
        });
        assert!(signalled(&out).is_empty() && spawned(&out).is_empty());
        assert!(!out.iter().any(|a| matches!(a, Action::StopProbes { .. })));
        assert_eq!(h.state("db"), State::Ready);
        let st = h.core.statuses();
        assert_eq!(
            st[0].degraded.as_deref(),
            Some("liveness probe failed: connection refused")
        );
        h.step(Event::LivenessPassed {
            unit: "db".into(),
            inc,
        });
        assert_eq!(h.core.statuses()[0].degraded, None);
    }

    #[test]
    fn an_external_unit_not_ready_in_time_is_retried_by_its_restart_policy() {
        let (mut h, boot) = H::new(&[("db", EXTERNAL)]);
        let inc = probe_started(&boot, "db").unwrap();
        h.advance(Duration::from_secs(5));
        let again = h.step(Event::StartTimeout {
            unit: "db".into(),
            inc,
        });
        let u = h.core.unit("db").unwrap();
        assert_eq!(u.failures.back().unwrap().reason, "not ready within 5s");
        assert_eq!(u.restarts, 1);
        // The first retry is immediate (then doubling delays): a new readiness probe.
        assert_eq!(probe_started(&again, "db"), Some(inc + 1));
        assert!(spawned(&again).is_empty());
    }

    #[test]
    fn failed_oneshot_blocks_what_requires_it() {
        let (mut h, boot) = H::new(&[
            (
                "init",
                "[service]\ntype = \"oneshot\"\ncommand = [\"/bin/false\"]\n[restart]\npolicy = \"no\"\n",
            ),
            (
                "app",
                "[unit]\nrequires = [\"init\"]\n[service]\ncommand = [\"/bin/sleep\", \"1\"]\n",
            ),
        ]);
        let (pids, _) = h.spawn_all(&boot);
        let after = h.exit(pids["init"], 1);
        assert!(spawned(&after).is_empty());
        assert_eq!(h.state("init"), State::Failed);
        assert_eq!(h.state("app"), State::Inactive);
        assert!(
            h.core
                .unit("app")
                .unwrap()
                .reason
                .contains("required unit init failed")
        );
        assert!(
            h.core.unit("app").unwrap().settled(),
            "a blocked unit must not hang `start --wait`"
        );
    }

    #[test]
    fn a_oneshot_that_hangs_fails_at_its_start_timeout_and_blocks_dependents() {
        let (mut h, boot) = H::new(&[
            (
                "init",
                "[service]\ntype = \"oneshot\"\ncommand = [\"/bin/sleep\", \"1000\"]\nstart_timeout = \"2s\"\n[restart]\npolicy = \"no\"\n",
            ),
            (
                "app",
                "[unit]\nrequires = [\"init\"]\n[service]\ncommand = [\"/bin/sleep\", \"1\"]\n",
            ),
        ]);
        let (pids, out) = h.spawn_all(&boot);
        let timer = out.iter().find_map(|a| match a {
            Action::After {
                delay,
                event: Event::StartTimeout { unit, inc },
            } if unit == "init" => Some((*delay, *inc)),
            _ => None,
        });
        let (delay, inc) = timer.expect("a oneshot's start is bounded");
        assert_eq!(delay, Duration::from_secs(2));
        let kill = h.step(Event::StartTimeout {
            unit: "init".into(),
            inc,
        });
        assert_eq!(signalled(&kill), [(pids["init"], Signal::SIGTERM)]);
        let after = h.step(Event::Exited {
            pid: pids["init"],
            exit: ExitInfo::Signal("SIGTERM".into()),
            last_lines: vec![],
        });
        assert!(spawned(&after).is_empty());
        assert_eq!(h.state("init"), State::Failed);
        assert!(
            h.core.failures("init").unwrap()[0]
                .reason
                .contains("still running after start_timeout (2s)")
        );
        assert_eq!(h.state("app"), State::Inactive);
        assert!(h.core.unit("app").unwrap().settled());
    }

    #[test]
    fn first_crash_restarts_at_once_then_backoff_doubles() {
        let (mut h, boot) = H::new(&[(
            "a",
            "[service]\ncommand = [\"x\"]\n[restart]\ndelay = \"200ms\"\nmax_delay = \"300ms\"\nburst = 10\n",
        )]);
        let (pids, _) = h.spawn_all(&boot);
        let a1 = h.exit(pids["a"], 1);
        assert_eq!(spawned(&a1), ["a"], "respawned in the same step");
        let (pids, _) = h.spawn_all(&a1);
        let a2 = h.exit(pids["a"], 1);
        assert!(spawned(&a2).is_empty());
        let delay = a2.iter().find_map(|a| match a {
            Action::After {
                delay,
                event: Event::Wake,
            } => Some(*delay),
            _ => None,
        });
        assert_eq!(delay, Some(Duration::from_millis(200)));
        assert_eq!(h.state("a"), State::Restarting);
        h.advance(Duration::from_millis(200));
        let woke = h.step(Event::Wake);
        let (pids, _) = h.spawn_all(&woke);
        let a3 = h.exit(pids["a"], 1);
        let delay = a3.iter().find_map(|a| match a {
            Action::After { delay, .. } => Some(*delay),
            _ => None,
        });
        assert_eq!(
            delay,
            Some(Duration::from_millis(300)),
            "400ms capped at max_delay"
        );
        assert_eq!(h.core.unit("a").unwrap().restarts, 3);
        assert_eq!(h.core.failures("a").unwrap().len(), 3);
        assert_eq!(h.core.failures("a").unwrap()[0].last_lines, ["bye"]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let (mut h, boot) = H::new(&[(
            "a",
            "[service]\ncommand = [\"x\"]\n[restart]\nreset_after = \"5s\"\n",
        )]);
        let (pids, _) = h.spawn_all(&boot);
        let a1 = h.exit(pids["a"], 1);
        let (pids, _) = h.spawn_all(&a1);
        h.advance(Duration::from_secs(6));
        let a2 = h.exit(pids["a"], 1);
        assert_eq!(
            spawned(&a2),
            ["a"],
            "stable for 6s: immediate restart again"
        );
    }

    #[test]
    fn burst_exhausted_fails_and_start_clears_it() {
        let (mut h, boot) = H::new(&[(
            "a",
            "[service]\ncommand = [\"x\"]\n[restart]\ndelay = \"0s\"\nburst = 3\n",
        )]);
        let mut actions = boot;
        for _ in 0..3 {
            let (pids, _) = h.spawn_all(&actions);
            actions = h.exit(pids["a"], 1);
        }
        assert_eq!(h.state("a"), State::Failed);
        assert!(
            h.core
                .unit("a")
                .unwrap()
                .reason
                .contains("start limit hit (3 starts")
        );
        let again = h.step(Event::Start(vec!["a".into()]));
        assert_eq!(spawned(&again), ["a"]);
        assert_eq!(h.core.unit("a").unwrap().restarts, 0);
    }

    #[test]
    fn shutdown_stops_dependents_first() {
        let (mut h, boot) = H::new(&[
            ("db", SIMPLE),
            (
                "api",
                "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"x\"]\nstop_signal = \"SIGINT\"\n",
            ),
        ]);
        let (pids, more) = h.spawn_all(&boot);
        let (pids2, _) = h.spawn_all(&more);
        let down = h.step(Event::Shutdown);
        assert_eq!(
            signalled(&down),
            [(pids2["api"], Signal::SIGINT)],
            "db waits for api"
        );
        let down = h.exit(pids2["api"], 0);
        assert_eq!(signalled(&down), [(pids["db"], Signal::SIGTERM)]);
        let last = h.exit(pids["db"], 0);
        assert!(last.iter().any(|a| matches!(a, Action::AllStopped)));
    }

    #[test]
    fn stop_timeout_escalates_to_sigkill_of_the_group() {
        let (mut h, boot) = H::new(&[("a", SIMPLE)]);
        let (pids, _) = h.spawn_all(&boot);
        let stop = h.step(Event::Stop(vec!["a".into()]));
        let inc = h.core.unit("a").unwrap().inc;
        assert!(stop.iter().any(|a| matches!(
            a,
            Action::After {
                event: Event::StopTimeout { .. },
                ..
            }
        )));
        let kill = h.step(Event::StopTimeout {
            unit: "a".into(),
            inc,
        });
        assert_eq!(signalled(&kill), [(pids["a"], Signal::SIGKILL)]);
    }

    #[test]
    fn stale_probe_results_are_ignored() {
        let (mut h, boot) = H::new(&[(
            "a",
            "[service]\ncommand = [\"x\"]\n[readiness]\nprobe = \"tcp\"\naddress = \"127.0.0.1:1\"\n",
        )]);
        let (pids, _) = h.spawn_all(&boot);
        let old = h.core.unit("a").unwrap().inc;
        let re = h.exit(pids["a"], 1);
        h.spawn_all(&re);
        h.step(Event::ProbeReady {
            unit: "a".into(),
            inc: old,
            how: "tcp".into(),
        });
        assert_eq!(
            h.state("a"),
            State::Starting,
            "an old incarnation's probe must not count"
        );
        h.step(Event::ProbeReady {
            unit: "a".into(),
            inc: old + 1,
            how: "tcp".into(),
        });
        assert_eq!(h.state("a"), State::Ready);
    }

    #[test]
    fn readiness_timeout_kills_and_applies_the_policy() {
        let (mut h, boot) = H::new(&[(
            "a",
            "[service]\ncommand = [\"x\"]\n[readiness]\nprobe = \"tcp\"\naddress = \"127.0.0.1:1\"\ntimeout = \"1s\"\n",
        )]);
        let (pids, _) = h.spawn_all(&boot);
        let inc = h.core.unit("a").unwrap().inc;
        h.step(Event::ProbeFailed {
            unit: "a".into(),
            inc,
            why: "connect 127.0.0.1:1: Connection refused".into(),
        });
        let kill = h.step(Event::StartTimeout {
            unit: "a".into(),
            inc,
        });
        assert_eq!(signalled(&kill), [(pids["a"], Signal::SIGTERM)]);
        let after = h.step(Event::Exited {
            pid: pids["a"],
            exit: ExitInfo::Signal("SIGTERM".into()),
            last_lines: vec![],
        });
        assert_eq!(spawned(&after), ["a"]);
        assert!(h.core.failures("a").unwrap()[0].reason.contains(
            "not ready within 1s (last attempt: connect 127.0.0.1:1: Connection refused)"
        ));
    }

    #[test]
    fn restart_restarts_what_requires_the_unit_in_order() {
        let (mut h, boot) = H::new(&[
            ("db", SIMPLE),
            (
                "api",
                "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"x\"]\n",
            ),
        ]);
        let (pids, more) = h.spawn_all(&boot);
        let (pids2, _) = h.spawn_all(&more);
        let r = h.step(Event::Restart(vec!["db".into()]));
        assert_eq!(signalled(&r), [(pids2["api"], Signal::SIGTERM)]);
        let r = h.exit(pids2["api"], 0);
        assert_eq!(signalled(&r), [(pids["db"], Signal::SIGTERM)]);
        let r = h.exit(pids["db"], 0);
        assert_eq!(spawned(&r), ["db"]);
        let (_, more) = h.spawn_all(&r);
        assert_eq!(spawned(&more), ["api"]);
    }

    fn start_failures(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::StartFailed { unit, reason } => Some((unit.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_failed_unit_before_ready_is_reported_once_and_never_after_ready() {
        let never = "[service]\ncommand = [\"x\"]\n[restart]\npolicy = \"no\"\n";
        // notify units are not ready until they say so: the set is still starting.
        let slow = "[service]\ntype = \"notify\"\ncommand = [\"x\"]\n[restart]\npolicy = \"no\"\n";
        let (mut h, boot) = H::new(&[("db", slow), ("cache", slow)]);
        let (pids, _) = h.spawn_all(&boot);
        let r = h.exit(pids["db"], 3);
        assert_eq!(h.state("db"), State::Failed);
        let failed = start_failures(&r);
        assert_eq!(failed.len(), 1, "{r:?}");
        assert_eq!(failed[0].0, "db");
        assert!(failed[0].1.contains("exit 3"), "{failed:?}");
        assert!(!r.iter().any(|a| matches!(a, Action::AllReady)));
        // A second failure is not a second report.
        let r = h.exit(pids["cache"], 1);
        assert!(start_failures(&r).is_empty(), "{r:?}");

        // Once everything was ready, a failure is a runtime failure, not a start failure.
        let (mut h, boot) = H::new(&[("db", never)]);
        let (pids, more) = h.spawn_all(&boot);
        assert!(
            more.iter()
                .chain(&boot)
                .any(|a| matches!(a, Action::AllReady)),
            "{more:?}"
        );
        let r = h.exit(pids["db"], 3);
        assert_eq!(h.state("db"), State::Failed);
        assert!(start_failures(&r).is_empty(), "{r:?}");
    }

    #[test]
    fn notify_ready_and_watchdog() {
        let (mut h, boot) = H::new(&[(
            "n",
            "[service]\ntype = \"notify\"\ncommand = [\"x\"]\n[liveness]\nprobe = \"notify\"\ninterval = \"1s\"\n",
        )]);
        h.spawn_all(&boot);
        assert_eq!(h.state("n"), State::Starting);
        let ready = h.step(Event::Notify {
            unit: "n".into(),
            msg: NotifyMsg::Ready,
        });
        assert_eq!(h.state("n"), State::Ready);
        assert!(ready.iter().any(|a| matches!(a, Action::AllReady)));
        let inc = h.core.unit("n").unwrap().inc;
        h.advance(Duration::from_millis(900));
        h.step(Event::Notify {
            unit: "n".into(),
            msg: NotifyMsg::Watchdog,
        });
        h.advance(Duration::from_millis(200));
        h.step(Event::WatchdogCheck {
            unit: "n".into(),
            inc,
        });
        assert_eq!(h.state("n"), State::Ready, "a WATCHDOG=1 arrived in time");
        h.advance(Duration::from_secs(2));
        let k = h.step(Event::WatchdogCheck {
            unit: "n".into(),
            inc,
        });
        assert_eq!(h.state("n"), State::Stopping);
        assert_eq!(signalled(&k).len(), 1);
    }
}
