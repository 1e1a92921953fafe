//! The supervisor: the executor around the pure [`core::Core`].
//!
//! One task owns the core and all per-unit resources. It takes [`Event`]s (process exits,
//! probe results, timers, notify messages) and [`Input`]s (control requests, signals, file
//! changes), feeds them to the core, and carries out the returned [`core::Action`]s:
//! spawning, signalling, probes, timers. Results of an action that are known at once
//! (spawned / failed to spawn) are fed back before the next input, so the core never sees
//! a half-done step.

pub mod contain;
pub mod core;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod process;
pub mod reload;
mod requests;
pub mod server;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use self::core::{Action, Core, Event, Level, Now};
use crate::config::{Config, ConfigError};
use crate::control::protocol::{ErrorKind, PlanAction, Request, Response, UnitStatus};
use crate::logs::{Format, LogHub};
use crate::unit::{UnitErrors, UnitSet, UnitSpec, load_dir};

/// Unit states as published to the control server after every step.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every instance.
    pub units: Vec<UnitStatus>,
    /// Whether each instance has settled (nothing pending for it).
    pub settled: HashMap<String, bool>,
}

/// Inputs from outside the core's event stream.
pub enum Input {
    /// A control request; answered through the sender.
    Control(Request, oneshot::Sender<LoopReply>),
    /// SIGTERM / SIGINT: orderly stop (a second one kills).
    Shutdown,
    /// SIGHUP: reload.
    Reload,
    /// Watched files changed (debounced).
    FilesChanged(Vec<PathBuf>),
}

/// The loop's answer to a control request.
pub enum LoopReply {
    /// A final response.
    Response(Response),
    /// The request was applied to these instances; wait for them to settle if asked.
    Wait(Vec<String>),
}

/// How to run a supervisor.
#[derive(Debug, Clone)]
pub struct Options {
    /// The home directory.
    pub home: PathBuf,
    /// The unit directory (None: [`default_units_dir`]).
    pub units_dir: Option<PathBuf>,
    /// Unified log output format.
    pub log_format: Format,
    /// Stop everything and exit 1 when a wanted unit fails before every unit was ready
    /// (under systemd: `systemctl start` fails at once and the restart limits apply).
    pub exit_on_start_failure: bool,
    /// Restart a unit when its program file is replaced or written (`make dev`: a
    /// rebuild restarts just the services whose binary changed).
    pub watch_programs: bool,
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// tmidb.toml is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The unit set is invalid; nothing was started.
    #[error("invalid units in {dir}:\n{errors}")]
    Units {
        /// Unit directory.
        dir: PathBuf,
        /// Every problem.
        errors: UnitErrors,
    },
    /// The control socket could not be bound.
    #[error(transparent)]
    Bind(#[from] server::BindError),
    /// A unit failed before every unit was ready (`--exit-on-start-failure`); every unit
    /// was stopped.
    #[error("{0}; every unit was stopped")]
    StartFailed(String),
    /// A filesystem or OS error.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The unit directory when none is given: `HOME/units`, then `/etc/tmidb/units`, then the
/// source tree's `units/` (development builds).
pub fn default_units_dir(home: &Path) -> PathBuf {
    let candidates = [
        home.join("units"),
        PathBuf::from("/etc/tmidb/units"),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/units")),
    ];
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

/// Creates the home layout: home and data/run 0755 (units may run as other users and must
/// reach their state directories), secrets 0700.
pub fn prepare_home(cfg: &Config) -> Result<(), RunError> {
    let mk = |p: &Path, mode: u32| -> Result<(), RunError> {
        let io = |source| RunError::Io {
            what: format!("cannot prepare {}", p.display()),
            source,
        };
        let existed = p.exists();
        std::fs::create_dir_all(p).map_err(io)?;
        if !existed || mode == 0o700 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        Ok(())
    };
    mk(&cfg.home, 0o755)?;
    mk(&cfg.data_dir, 0o755)?;
    mk(&cfg.runtime_dir, 0o755)?;
    mk(&cfg.secrets_dir, 0o700)
}

/// Runs a supervisor until it is told to stop and every unit is down.
pub async fn run(opts: Options) -> Result<(), RunError> {
    let started = Instant::now();
    let mut cfg = Config::load(&opts.home)?;
    prepare_home(&cfg)?;
    let units_dir = opts
        .units_dir
        .clone()
        .unwrap_or_else(|| default_units_dir(&cfg.home));
    let set = load_dir(&units_dir, &cfg.vars()).map_err(|errors| RunError::Units {
        dir: units_dir.clone(),
        errors,
    })?;
    if let Err(e) = process::become_subreaper() {
        tracing::warn!(
            "cannot become a child subreaper ({e}); orphaned grandchildren will not be reaped here"
        );
    }
    let hub = LogHub::new(
        cfg.sinks(opts.log_format),
        cfg.logs.ring_lines,
        Some(cfg.state_path()),
    );
    crate::logs::layer::install(hub.clone());
    let reaper = process::Reaper::start().map_err(|source| RunError::Io {
        what: "cannot watch SIGCHLD".into(),
        source,
    })?;
    let contain = contain::Containment::start(&reaper);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Input>();

    let socket = cfg.socket_path();
    let listener = server::bind(&socket, cfg.control_group.as_deref()).await?;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    spawn_signal_task(in_tx.clone()).map_err(|source| RunError::Io {
        what: "cannot install signal handlers".into(),
        source,
    })?;

    tracing::info!(home = %cfg.home.display(), units = %units_dir.display(), socket = %socket.display(), pid = std::process::id(), "tmidb-supervisor {} starting {} units", env!("CARGO_PKG_VERSION"), set.units.len());
    tracing::info!("units are contained by {}", contain.describe());

    let mut exec = Executor {
        cfg: cfg.clone(),
        units_dir,
        hub,
        reaper,
        contain,
        ev_tx,
        in_tx,
        probes: HashMap::new(),
        notify: HashMap::new(),
        spawn_seq: HashMap::new(),
        watcher: None,
        started,
        done: false,
        ready_pending: false,
        exit_on_start_failure: opts.exit_on_start_failure,
        watch_programs: opts.watch_programs,
        start_failure: None,
    };
    exec.declare_channels(&set.units);
    exec.rewatch(&set);
    let mut core = Core::new(&set.units, Now::current(), Box::new(fastrand::f64));
    let boot = core.boot(Now::current());
    exec.run_actions(&mut core, boot);
    snap_tx.send_replace(Arc::new(snapshot(&core, &exec.hub)));
    // Served only now: a request that came in since the bind waits in the backlog
    // rather than seeing an empty unit list.
    let metrics = tokio::spawn(metrics::serve(
        cfg.listen_address,
        cfg.ports["supervisor"],
        snap_rx.clone(),
        exec.hub.clone(),
    ));
    let server = tokio::spawn(server::serve(
        listener,
        server::Ctx {
            inputs: exec.in_tx.clone(),
            snapshot: snap_rx,
            hub: exec.hub.clone(),
        },
    ));

    let mut shutdown_signals = 0;
    while !exec.done {
        tokio::select! {
            Some(ev) = ev_rx.recv() => exec.feed(&mut core, ev),
            Some(input) = in_rx.recv() => match input {
                Input::Control(req, reply) => {
                    let r = exec.control(&mut core, req);
                    // Publish first: a waiting handler must see the state after this request.
                    snap_tx.send_replace(Arc::new(snapshot(&core, &exec.hub)));
                    let _ = reply.send(r);
                }
                Input::Shutdown => {
                    shutdown_signals += 1;
                    if shutdown_signals == 1 {
                        tracing::info!("stop requested: stopping every unit in reverse dependency order (send it again, e.g. a second Ctrl-C, to kill them at once)");
                        exec.feed(&mut core, Event::Shutdown);
                    } else {
                        tracing::warn!("second stop request: killing every unit now");
                        exec.feed(&mut core, Event::ForceShutdown);
                    }
                }
                Input::Reload => {
                    exec.reload(&mut core, false, "SIGHUP");
                }
                Input::FilesChanged(paths) => exec.files_changed(&mut core, paths),
            },
            else => break,
        }
        snap_tx.send_replace(Arc::new(snapshot(&core, &exec.hub)));
    }
    server.abort();
    metrics.abort();
    exec.contain.finish();
    let _ = std::fs::remove_file(&socket);
    for (path, task) in exec.notify.values() {
        task.abort();
        let _ = std::fs::remove_file(path);
    }
    cfg.home.clear();
    tracing::info!("all units stopped; supervisor exits");
    exec.hub.flush().await;
    match exec.start_failure {
        Some(why) => Err(RunError::StartFailed(why)),
        None => Ok(()),
    }
}

fn snapshot(core: &Core, hub: &LogHub) -> Snapshot {
    let mut units = core.statuses();
    for u in &mut units {
        u.dropped = hub.dropped(&u.name);
    }
    let settled = core
        .names()
        .into_iter()
        .map(|n| {
            let s = core.unit(&n).map(core::Unit::settled).unwrap_or(true);
            (n, s)
        })
        .collect();
    Snapshot { units, settled }
}

fn spawn_signal_task(tx: mpsc::UnboundedSender<Input>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = term.recv() => Input::Shutdown,
                _ = int.recv() => Input::Shutdown,
                _ = hup.recv() => Input::Reload,
            };
            if tx.send(input).is_err() {
                break;
            }
        }
    });
    Ok(())
}

struct Executor {
    cfg: Config,
    units_dir: PathBuf,
    hub: Arc<LogHub>,
    reaper: process::Reaper,
    /// Keeps every process a unit starts from outliving it.
    contain: contain::Containment,
    ev_tx: mpsc::UnboundedSender<Event>,
    in_tx: mpsc::UnboundedSender<Input>,
    probes: HashMap<String, Vec<AbortHandle>>,
    notify: HashMap<String, (PathBuf, JoinHandle<()>)>,
    spawn_seq: HashMap<String, u64>,
    watcher: Option<::notify::RecommendedWatcher>,
    started: Instant,
    done: bool,
    ready_pending: bool,
    exit_on_start_failure: bool,
    watch_programs: bool,
    /// Why the start failed, when `exit_on_start_failure` stopped the set.
    start_failure: Option<String>,
}

impl Executor {
    fn feed(&mut self, core: &mut Core, ev: Event) {
        let actions = core.handle(ev, Now::current());
        self.run_actions(core, actions);
    }

    /// Carries out actions; immediate results are fed back before returning.
    fn run_actions(&mut self, core: &mut Core, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            if let Some(ev) = self.act(a) {
                queue.extend(core.handle(ev, Now::current()));
            }
        }
        if std::mem::take(&mut self.ready_pending) {
            self.announce_ready(core);
        }
    }

    fn act(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn { spec, inc } => Some(self.spawn(spec, inc)),
            Action::Signal { pgid, signal, .. } => {
                if signal == nix::sys::signal::Signal::SIGKILL {
                    self.contain.kill(pgid);
                } else {
                    process::signal_group(pgid, signal);
                }
                None
            }
            Action::StartReadiness { spec, inc } => {
                let since = self.spawn_seq.get(&spec.name).copied().unwrap_or(0);
                let task = tokio::spawn(probe::readiness(
                    spec.clone(),
                    inc,
                    since,
                    self.ev_tx.clone(),
                    self.hub.clone(),
                    self.reaper.clone(),
                ));
                self.track_probe(&spec.name, task);
                None
            }
            Action::StartLiveness { spec, inc } => {
                let task = tokio::spawn(probe::liveness(
                    spec.clone(),
                    inc,
                    self.ev_tx.clone(),
                    self.reaper.clone(),
                ));
                self.track_probe(&spec.name, task);
                None
            }
            Action::StopProbes { unit } => {
                for h in self.probes.remove(&unit).unwrap_or_default() {
                    h.abort();
                }
                self.hub.unwatch(&unit);
                None
            }
            Action::After { delay, event } => {
                let tx = self.ev_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(event);
                });
                None
            }
            Action::CleanupGroup { unit, pgid } => {
                let cleanup = self.contain.ended(pgid);
                tokio::task::spawn_blocking(move || {
                    // Members that were signalled with the main process may still be exiting.
                    if !cleanup.survivors().is_empty() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    let survivors = cleanup.run();
                    if !survivors.is_empty() {
                        tracing::warn!(unit = %unit, pgid, ?survivors, "{} process(es) of the unit's group outlived its main process; killed them", survivors.len());
                    }
                });
                None
            }
            Action::Log {
                unit,
                level,
                message,
            } => {
                match level {
                    Level::Info => tracing::info!(unit = %unit, "{message}"),
                    Level::Warn => tracing::warn!(unit = %unit, "{message}"),
                    Level::Error => tracing::error!(unit = %unit, "{message}"),
                }
                None
            }
            Action::AllReady => {
                self.ready_pending = true;
                None
            }
            Action::StartFailed { unit, reason } => {
                let why = format!("{unit} failed before every unit was ready: {reason}");
                tracing::error!(unit = %unit, "{why}");
                let status = if self.exit_on_start_failure {
                    let _ = self.in_tx.send(Input::Shutdown);
                    self.start_failure = Some(why.clone());
                    format!("STATUS={why}; stopping (--exit-on-start-failure)")
                } else {
                    tracing::warn!(
                        "the other units keep running; fix the cause and `tmidb-cli restart {unit}`"
                    );
                    format!("STATUS={why}; waiting for `tmidb-cli restart {unit}`")
                };
                if let Err(e) = notify::notify_parent(&status) {
                    tracing::warn!("cannot notify our parent: {e}");
                }
                None
            }
            Action::AllStopped => {
                self.done = true;
                None
            }
            Action::Forget { unit } => {
                if let Some((path, task)) = self.notify.remove(&unit) {
                    task.abort();
                    let _ = std::fs::remove_file(path);
                }
                None
            }
        }
    }

    fn declare_channels(&self, units: &[Arc<UnitSpec>]) {
        let decl: Vec<(String, String, bool)> = units
            .iter()
            .map(|u| (u.name.clone(), u.log.channel.clone(), u.log.enabled))
            .collect();
        self.hub.set_units(&decl);
    }

    /// Keeps a probe task so `StopProbes` can abort it.
    fn track_probe(&mut self, unit: &str, task: JoinHandle<()>) {
        self.probes
            .entry(unit.to_string())
            .or_default()
            .push(task.abort_handle());
    }

    fn spawn(&mut self, spec: Arc<UnitSpec>, inc: u64) -> Event {
        let unit = spec.name.clone();
        let fail = |error: String| Event::SpawnFailed {
            unit: unit.clone(),
            inc,
            error,
        };
        if let Err(e) = process::check_conditions(&spec) {
            return Event::ConditionFailed {
                unit: unit.clone(),
                inc,
                reason: e.to_string(),
            };
        }
        if let Err(e) = process::check_ports(&spec) {
            return fail(e.to_string());
        }
        let notify_path = if spec.uses_notify() {
            match self.notify_socket(&unit) {
                Ok(p) => Some(p),
                Err(e) => return fail(format!("cannot create notify socket: {e}")),
            }
        } else {
            None
        };
        let since = self.hub.last_seq();
        self.spawn_seq.insert(unit.clone(), since);
        let (cgroup, procs) = self.contain.prepare(&unit).unzip();
        let mut sp = match process::spawn_unit(&self.reaper, &spec, notify_path.as_deref(), procs) {
            Ok(sp) => sp,
            Err(e) => {
                self.contain.spawned(None, cgroup);
                return fail(e.to_string());
            }
        };
        let pid = sp.child.id() as i32;
        self.contain.spawned(Some(pid), cgroup);
        let src = Arc::new(crate::logs::Source {
            unit: spec.base.as_str().into(),
            instance: spec.instance,
            name: unit.clone(),
            channel: spec.log.channel.as_str().into(),
            json: spec.log.format != crate::unit::LogFormat::Text,
        });
        let mut captures = vec![];
        if let Some(out) = sp.child.stdout.take() {
            captures.push(tokio::spawn(self.hub.clone().capture(
                src.clone(),
                crate::control::protocol::Stream::Stdout,
                out.into(),
            )));
        }
        if let Some(err) = sp.child.stderr.take() {
            captures.push(tokio::spawn(self.hub.clone().capture(
                src.clone(),
                crate::control::protocol::Stream::Stderr,
                err.into(),
            )));
        }
        let (tx, hub, name) = (self.ev_tx.clone(), self.hub.clone(), unit.clone());
        tokio::spawn(async move {
            let exit = sp
                .exit
                .await
                .unwrap_or(crate::control::protocol::ExitInfo::Code(-1));
            // Drain the final lines; a grandchild holding the pipe must not delay the exit.
            for c in captures {
                let _ = tokio::time::timeout(Duration::from_millis(250), c).await;
            }
            let last_lines = hub.tail_since(&name, since, 20);
            let _ = tx.send(Event::Exited {
                pid,
                exit,
                last_lines,
            });
        });
        Event::Spawned { unit, inc, pid }
    }

    fn notify_socket(&mut self, unit: &str) -> std::io::Result<PathBuf> {
        if let Some((p, _)) = self.notify.get(unit) {
            return Ok(p.clone());
        }
        let (path, task) = notify::listen(
            &self.cfg.runtime_dir.join("notify"),
            unit,
            self.ev_tx.clone(),
        )?;
        self.notify.insert(unit.to_string(), (path.clone(), task));
        Ok(path)
    }

    fn announce_ready(&self, core: &Core) {
        let ms = self.started.elapsed().as_millis();
        tracing::info!(elapsed_ms = ms as u64, "all units ready after {ms}ms");
        for name in core.names() {
            let Some(u) = core.unit(&name) else { continue };
            if u.state == crate::control::protocol::State::Ready && !u.spec.listen.is_empty() {
                let addrs: Vec<String> = u.spec.listen.iter().map(|a| a.to_string()).collect();
                tracing::info!(unit = %name, "listens on {}", addrs.join(", "));
            }
        }
        for name in core.names() {
            if let Some(u) = core
                .unit(&name)
                .filter(|u| u.state == crate::control::protocol::State::Ready)
            {
                for line in &u.spec.announce {
                    tracing::info!(unit = %name, "{line}");
                }
            }
        }
        tracing::info!(
            "control: tmidb-cli --home {} status",
            self.cfg.home.display()
        );
        match notify::notify_parent("READY=1\nSTATUS=all units ready") {
            Ok(true) => tracing::debug!("sent READY=1 to our parent"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot notify our parent: {e}"),
        }
    }

    /// Validates the whole new set; applies the difference only if all of it is valid.
    fn reload(&mut self, core: &mut Core, dry_run: bool, source: &str) -> Response {
        let reject = |message: String| {
            tracing::error!("reload ({source}) rejected; running units are unchanged:\n{message}");
            Response::Error {
                kind: ErrorKind::InvalidUnits,
                message,
            }
        };
        let cfg = match Config::load(&self.cfg.home) {
            Ok(c) => c,
            Err(e) => return reject(e.to_string()),
        };
        let set = match load_dir(&self.units_dir, &cfg.vars()) {
            Ok(s) => s,
            Err(e) => return reject(e.to_string()),
        };
        let plan = reload::plan(&core.specs(), &set.units);
        if dry_run {
            return Response::Reload {
                plan,
                applied: false,
            };
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &plan {
            *counts
                .entry(match e.action {
                    PlanAction::Start => "start",
                    PlanAction::Stop => "stop",
                    PlanAction::Restart => "restart",
                    PlanAction::Update => "update",
                    PlanAction::Unchanged => "unchanged",
                })
                .or_default() += 1;
            if e.action != PlanAction::Unchanged {
                tracing::info!(unit = %e.unit, "reload: {:?} ({})", e.action, e.why);
            }
        }
        tracing::info!(?counts, "reload ({source}) applied");
        self.cfg = cfg;
        self.declare_channels(&set.units);
        self.rewatch(&set);
        self.feed(
            core,
            Event::Reload {
                units: set.units.clone(),
                plan: plan.clone(),
            },
        );
        Response::Reload {
            plan,
            applied: true,
        }
    }

    /// (Re)creates the file watcher: the unit directory, tmidb.toml, and every unit's
    /// `watch` paths. Changes are debounced before they become one input.
    fn rewatch(&mut self, set: &UnitSet) {
        use ::notify::Watcher;
        let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
        let watcher =
            ::notify::recommended_watcher(move |res: ::notify::Result<::notify::Event>| {
                if let Ok(ev) = res
                    && !matches!(ev.kind, ::notify::EventKind::Access(_))
                {
                    for p in ev.paths {
                        let _ = tx.send(p);
                    }
                }
            });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "cannot watch files ({e}); reload with SIGHUP or `tmidb-cli reload`"
                );
                return;
            }
        };
        let mut paths = vec![self.units_dir.clone(), self.cfg.home.clone()];
        // The settings file's directory, when it is not the home (`--config`, /etc/tmidb).
        if let Some(dir) = self
            .cfg
            .file
            .parent()
            .filter(|d| *d != self.cfg.home && d.is_dir())
        {
            paths.push(dir.to_path_buf());
        }
        paths.extend(set.units.iter().flat_map(|u| u.watch.iter().cloned()));
        if self.watch_programs {
            // The directory, not the file: a build replaces a program by a new link, which
            // an inotify watch on the old file would never report.
            let mut dirs: Vec<PathBuf> = set
                .units
                .iter()
                .filter_map(|u| {
                    Path::new(u.command.first()?)
                        .parent()
                        .map(Path::to_path_buf)
                })
                .filter(|d| d.is_absolute())
                .collect();
            dirs.sort();
            dirs.dedup();
            paths.extend(dirs);
        }
        for p in paths {
            if let Err(e) = watcher.watch(&p, ::notify::RecursiveMode::NonRecursive) {
                tracing::warn!(path = %p.display(), "cannot watch: {e}");
            }
        }
        self.watcher = Some(watcher);
        let in_tx = self.in_tx.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                // Debounce: an editor's save is several events within a few ms.
                while let Ok(Some(p)) =
                    tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
                {
                    batch.push(p);
                }
                batch.sort();
                batch.dedup();
                if in_tx.send(Input::FilesChanged(batch)).is_err() {
                    return;
                }
            }
        });
    }

    fn files_changed(&mut self, core: &mut Core, paths: Vec<PathBuf>) {
        let is_unit_file = |p: &Path| {
            p.parent() == Some(self.units_dir.as_path())
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(".unit.toml") && !n.starts_with('.'))
        };
        let is_config = |p: &Path| p == self.cfg.file;
        if paths.iter().any(|p| is_unit_file(p) || is_config(p)) {
            self.reload(core, false, "file change");
        }
        let specs = core.specs();
        let touched: Vec<String> = specs
            .iter()
            .filter(|u| {
                u.watch
                    .iter()
                    .any(|w| paths.iter().any(|p| p.starts_with(w) || w.starts_with(p)))
                    || (self.watch_programs
                        && paths
                            .iter()
                            .any(|p| u.command.first().is_some_and(|c| p == Path::new(c)))
                        // A finished oneshot is not run again (the init units run the
                        // supervisor's own program: re-running them would restart
                        // everything that requires them).
                        && core.unit(&u.name).is_some_and(|s| s.pid.is_some()))
            })
            .map(|u| u.name.clone())
            .collect();
        if !touched.is_empty() {
            tracing::info!(units = ?touched, "watched paths changed: restarting");
            self.feed(core, Event::Restart(touched));
        }
    }
}
