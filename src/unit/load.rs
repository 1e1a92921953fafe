//! Step two: validate parsed unit files and resolve them into [`UnitSpec`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::{ProbeKind, ProbeSection, ServiceType, Str, UnitFile};
use super::{
    Condition, Dep, Liveness, Location, LogSpec, ProbeSpec, Readiness, Restart, UnitError,
    UnitErrors, UnitSet, UnitSpec, line_col,
};

/// A unit file using every key: the format's documentation, parsed in a test.
pub const SAMPLE_UNIT: &str = include_str!("sample.unit.toml");

const SUFFIX: &str = ".unit.toml";

/// One file's text plus where it lives, for error locations.
struct Source<'a> {
    path: Arc<Path>,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, offset: usize) -> Location {
        let (line, col) = line_col(self.text, offset);
        Location {
            path: self.path.clone(),
            line,
            col,
        }
    }

    fn err(&self, offset: usize, message: impl Into<String>, hint: Option<String>) -> UnitError {
        UnitError {
            at: self.at(offset),
            message: message.into(),
            hint,
        }
    }
}

/// Parses one unit file's text (step one): syntax, unknown keys, wrong types.
pub fn parse_unit(path: &Path, text: &str) -> Result<UnitFile, UnitError> {
    toml::from_str::<UnitFile>(text).map_err(|e| {
        let src = Source {
            path: Arc::from(path),
            text,
        };
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let message = e.message().trim().to_string();
        let hint = if message.starts_with("unknown field") {
            Some("remove the key or fix its spelling; see tmidb.unit(5) for every key".into())
        } else if message.contains("missing field `service`") {
            Some("every unit needs a [service] section with a `command`".into())
        } else {
            None
        };
        src.err(offset, message, hint)
    })
}

/// Loads, validates and resolves every `*.unit.toml` in `dir`.
///
/// `vars` is the `${var}` namespace (see [`crate::config::Config::vars`]); names not found
/// there are looked up in the environment. All errors of all files are returned together.
pub fn load_dir(dir: &Path, vars: &BTreeMap<String, String>) -> Result<UnitSet, UnitErrors> {
    let dir_loc = |message: String| {
        UnitErrors(vec![UnitError {
            at: Location {
                path: Arc::from(dir),
                line: 1,
                col: 1,
            },
            message,
            hint: None,
        }])
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| dir_loc(format!("cannot read unit directory: {e}")))?;
    let mut errors = vec![];
    let mut files: Vec<PathBuf> = vec![];
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        use std::os::unix::ffi::OsStrExt;
        let name = path.file_name().unwrap_or_default();
        if !name.as_bytes().ends_with(SUFFIX.as_bytes()) || name.as_bytes().starts_with(b".") {
            continue;
        }
        if name.to_str().is_none() {
            errors.push(UnitError {
                at: Location {
                    path: Arc::from(path.as_path()),
                    line: 1,
                    col: 1,
                },
                message: "the file name is not valid UTF-8".into(),
                hint: Some(
                    "rename it: NAME.unit.toml, NAME of lowercase letters, digits, `-` and `_`"
                        .into(),
                ),
            });
            continue;
        }
        files.push(path);
    }
    files.sort();

    let mut texts = vec![];
    for path in &files {
        match read_unit(path) {
            Ok(t) => texts.push((path.clone(), t)),
            Err(e) => errors.push(e),
        }
    }

    // Step one: parse every file.
    let mut parsed = vec![];
    for (path, text) in &texts {
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SUFFIX))
            .unwrap_or_default()
            .to_string();
        let src = Source {
            path: Arc::from(path.as_path()),
            text,
        };
        if !valid_name(&base) {
            errors.push(src.err(
                0,
                format!("`{base}` is not a valid unit name"),
                Some("use lowercase letters, digits, `-` and `_`, starting with a letter or digit (the file is NAME.unit.toml)".into()),
            ));
            continue;
        }
        match parse_unit(path, text) {
            Ok(f) => parsed.push((base, src, f)),
            Err(e) => errors.push(e),
        }
    }

    // Step two: resolve each file into instances.
    let instances: BTreeMap<String, u32> = parsed
        .iter()
        .map(|(b, _, f)| {
            (
                b.clone(),
                f.unit.instances.as_ref().map(|i| *i.get_ref()).unwrap_or(0),
            )
        })
        .collect();
    let mut units = vec![];
    for (base, src, file) in &parsed {
        match resolve(base, src, file, vars, &instances) {
            Ok(mut specs) => units.append(&mut specs),
            Err(mut e) => errors.append(&mut e),
        }
    }

    // Cross-unit check: cycles over every ordering edge, reported before anything starts.
    if errors.is_empty() {
        let edges: BTreeMap<String, Vec<Dep>> = parsed
            .iter()
            .filter_map(|(base, _, _)| {
                units.iter().find(|u: &&UnitSpec| &u.base == base).map(|u| {
                    let deps = u
                        .requires
                        .iter()
                        .chain(&u.wants)
                        .chain(&u.after)
                        .map(|d| Dep {
                            name: base_of(&d.name).to_string(),
                            at: d.at.clone(),
                        })
                        .collect();
                    (base.clone(), deps)
                })
            })
            .collect();
        if let Some(cycle) = crate::unit::graph::find_cycle(&edges) {
            let first = &edges[&cycle[0]]
                .iter()
                .find(|d| d.name == cycle[1])
                .expect("cycle edge exists")
                .at;
            errors.push(UnitError {
                at: first.clone(),
                message: format!("dependency cycle: {}", cycle.join(" → ")),
                hint: Some(
                    "remove one of these dependencies (use `after` only where order matters)"
                        .into(),
                ),
            });
        }
    }

    if errors.is_empty() {
        Ok(UnitSet {
            units: units.into_iter().map(Arc::new).collect(),
            dir: dir.to_path_buf(),
        })
    } else {
        Err(UnitErrors(errors))
    }
}

/// How long a oneshot may run before its start has failed, unless `start_timeout` says.
pub(crate) const ONESHOT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// Largest unit file read: a unit is a few hundred bytes; this bounds a mistake.
pub(crate) const MAX_UNIT_BYTES: u64 = 1 << 20;

/// Reads one unit file: a regular file (opened without blocking, so a FIFO of that
/// name cannot hang a check or a reload), at most [`MAX_UNIT_BYTES`], UTF-8 (an error
/// names the line and column of the first bad byte).
fn read_unit(path: &Path) -> Result<String, UnitError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let at = |line, col| Location {
        path: Arc::from(path),
        line,
        col,
    };
    let fail = |message: String, hint: Option<&str>| UnitError {
        at: at(1, 1),
        message,
        hint: hint.map(str::to_string),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| fail(format!("cannot read: {e}"), None))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read: {e}"), None))?;
    if !meta.is_file() {
        return Err(fail(
            "not a regular file (a directory, FIFO, socket or device)".into(),
            Some(
                "unit files are plain files; remove it or rename it so it does not end in .unit.toml",
            ),
        ));
    }
    let mut bytes = vec![];
    file.take(MAX_UNIT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}"), None))?;
    if bytes.len() as u64 > MAX_UNIT_BYTES {
        return Err(fail(
            format!("larger than {MAX_UNIT_BYTES} bytes"),
            Some("a unit file is a few hundred bytes; is this the right file?"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..good]);
        let (line, col) = line_col(&text, good);
        UnitError {
            at: at(line, col),
            message: "not valid UTF-8".into(),
            hint: Some("unit files are UTF-8 text; re-save the file as UTF-8".into()),
        }
    })
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && n.len() <= 64
}

/// `worker@2` → `worker`.
pub(crate) fn base_of(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Expands `${var}` in spanned strings, collecting errors.
struct Expander<'a> {
    src: &'a Source<'a>,
    vars: &'a BTreeMap<String, String>,
    errors: Vec<UnitError>,
}

impl Expander<'_> {
    fn expand(&mut self, s: &Str) -> String {
        let raw = s.get_ref();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                match body.find('}') {
                    Some(end) => {
                        let name = &body[..end];
                        match self.lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => self.unknown(s, name),
                        }
                        rest = &body[end + 1..];
                    }
                    None => {
                        let at = self.offset_of(s, "${");
                        self.errors.push(self.src.err(
                            at,
                            "unterminated `${`",
                            Some("close it with `}` (write `$$` for a literal `$`)".into()),
                        ));
                        rest = "";
                    }
                }
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        // Every expanded string becomes a program argument, a path or an environment
        // value, none of which can hold a NUL.
        if out.contains('\0') {
            let at = self.offset_of(s, "\0");
            self.err(
                at,
                "contains a NUL character, which no argument, path or environment value can hold",
                Some("remove it (written `\\u0000` in TOML, or coming from a variable)"),
            );
        }
        out
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    fn offset_of(&self, s: &Str, needle: &str) -> usize {
        let span = s.span();
        self.src
            .text
            .get(span.clone())
            .and_then(|raw| raw.find(needle))
            .map(|i| span.start + i)
            .unwrap_or(span.start)
    }

    fn unknown(&mut self, s: &Str, name: &str) {
        let at = self.offset_of(s, &format!("${{{name}}}"));
        let best = self
            .vars
            .keys()
            .map(|k| (strsim::jaro_winkler(k, name), k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.clone());
        let hint = match best {
            Some(k) => format!("did you mean `${{{k}}}`? (`tmidb-cli config get` lists the keys)"),
            None if name == "instance" => {
                "`${instance}` is defined only for units with `instances = N`".into()
            }
            None => "define it in tmidb.toml or the environment; keys: home, paths.*, ports.*, bin.*, unit, instance".into(),
        };
        self.errors.push(
            self.src
                .err(at, format!("unknown variable `${{{name}}}`"), Some(hint)),
        );
    }

    fn err(&mut self, offset: usize, message: impl Into<String>, hint: Option<&str>) {
        self.errors
            .push(self.src.err(offset, message, hint.map(str::to_string)));
    }
}

fn resolve(
    base: &str,
    src: &Source<'_>,
    f: &UnitFile,
    global: &BTreeMap<String, String>,
    instances: &BTreeMap<String, u32>,
) -> Result<Vec<UnitSpec>, Vec<UnitError>> {
    let count = f.unit.instances.as_ref().map(|i| *i.get_ref());
    if let Some(i) = &f.unit.instances
        && (*i.get_ref() == 0 || *i.get_ref() > 1000)
    {
        return Err(vec![src.err(
            i.span().start,
            format!("instances = {} is out of range", i.get_ref()),
            Some("use 1..1000".into()),
        )]);
    }
    let numbers: Vec<Option<u32>> = match count {
        Some(n) => (1..=n).map(Some).collect(),
        None => vec![None],
    };
    let mut specs = vec![];
    let mut errors = vec![];
    for inst in numbers {
        let name = match inst {
            Some(i) => format!("{base}@{i}"),
            None => base.to_string(),
        };
        let mut vars = global.clone();
        vars.insert("unit".into(), name.clone());
        if let Some(i) = inst {
            vars.insert("instance".into(), i.to_string());
        }
        let mut x = Expander {
            src,
            vars: &vars,
            errors: vec![],
        };
        let spec = resolve_one(&mut x, base, &name, inst, f, instances);
        if x.errors.is_empty() {
            specs.push(spec);
        } else {
            // Instances share their text: report each problem once.
            for e in x.errors {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

fn resolve_one(
    x: &mut Expander<'_>,
    base: &str,
    name: &str,
    inst: Option<u32>,
    f: &UnitFile,
    instances: &BTreeMap<String, u32>,
) -> UnitSpec {
    let deps = |x: &mut Expander<'_>, list: &[Str]| -> Vec<Dep> {
        let mut out = vec![];
        for d in list {
            let target = x.expand(d);
            let at = x.src.at(d.span().start);
            let (tb, ti) = match target.split_once('@') {
                Some((b, i)) => (b, i.parse::<u32>().ok()),
                None => (target.as_str(), None),
            };
            match instances.get(tb) {
                None => {
                    let best = instances
                        .keys()
                        .map(|k| (strsim::jaro_winkler(k, tb), k))
                        .filter(|(s, _)| *s > 0.8)
                        .max_by(|a, b| a.0.total_cmp(&b.0));
                    let hint = match best {
                        Some((_, k)) => format!("did you mean `{k}`?"),
                        None => format!(
                            "no file {tb}.unit.toml in this directory; known units: {}",
                            instances.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    x.err(
                        d.span().start,
                        format!("unknown unit `{target}`"),
                        Some(&hint),
                    );
                    continue;
                }
                Some(n) if target.contains('@') && ti.is_none_or(|i| i == 0 || i > *n) => {
                    x.err(
                        d.span().start,
                        format!("`{target}` is not an instance of `{tb}` ({n} instances)"),
                        Some("name an instance 1..N, or the unit alone for all of them"),
                    );
                    continue;
                }
                _ => {}
            }
            if tb == base {
                x.err(
                    d.span().start,
                    format!("unit `{base}` depends on itself"),
                    Some("remove this entry"),
                );
                continue;
            }
            out.push(Dep { name: target, at });
        }
        out
    };
    let requires = deps(x, &f.unit.requires);
    let wants = deps(x, &f.unit.wants);
    let after = deps(x, &f.unit.after);

    let conditions = f
        .unit
        .condition_path_exists
        .iter()
        .map(|c| {
            let v = x.expand(c);
            match v.strip_prefix('!') {
                Some(p) => Condition {
                    path: PathBuf::from(p),
                    negate: true,
                },
                None => Condition {
                    path: PathBuf::from(v),
                    negate: false,
                },
            }
        })
        .collect();

    let svc = &f.service;
    let command: Vec<String> = match (&svc.command, svc.kind) {
        (Some(c), ServiceType::External) => {
            x.err(
                c.span().start,
                "an external unit runs nothing here; it takes no `command`",
                Some("remove `command`, or use type = \"simple\" to run a program"),
            );
            vec![]
        }
        (None, ServiceType::External) => vec![],
        (None, _) => {
            let at = x.src.text.find("[service]").unwrap_or(0);
            x.err(
                at,
                "[service] needs `command`",
                Some("give the program and its arguments, e.g. command = [\"/usr/bin/sleep\", \"10\"]; or type = \"external\" for a service that runs elsewhere"),
            );
            vec![]
        }
        (Some(c), _) => {
            let command: Vec<String> = c.get_ref().iter().map(|c| x.expand(c)).collect();
            if command.first().is_none_or(|c| c.is_empty()) {
                x.err(
                    c.span().start,
                    "`command` is empty",
                    Some("give the program and its arguments, e.g. [\"/usr/bin/sleep\", \"10\"]"),
                );
            }
            command
        }
    };
    if svc.kind == ServiceType::External {
        let runs = [
            ("user", svc.user.as_ref().map(|s| s.span().start)),
            ("group", svc.group.as_ref().map(|s| s.span().start)),
            (
                "state_directory",
                svc.state_directory.as_ref().map(|s| s.span().start),
            ),
            (
                "working_dir",
                svc.working_dir.as_ref().map(|s| s.span().start),
            ),
            (
                "stop_signal",
                svc.stop_signal.as_ref().map(|s| s.span().start),
            ),
            ("pid_file", svc.pid_file.as_ref().map(|s| s.span().start)),
            ("listen", svc.listen.first().map(|s| s.span().start)),
            ("watch", svc.watch.first().map(|s| s.span().start)),
        ];
        for (key, at) in runs {
            if let Some(at) = at {
                x.err(
                    at,
                    format!("`{key}` is about a process, and an external unit runs none"),
                    Some("remove it; an external unit has a readiness probe and, optionally, a liveness probe"),
                );
            }
        }
        if f.readiness.is_none() {
            let at = x.src.text.find("external").unwrap_or(0);
            x.err(
                at,
                "an external unit needs a [readiness] probe (tcp, http or exec): without one, depending on it would mean nothing",
                Some("e.g. [readiness] probe = \"tcp\", address = \"db.example:5432\""),
            );
        }
    }
    let data_dir = x.vars.get("paths.data_dir").cloned().unwrap_or_default();
    let state_directory = svc.state_directory.as_ref().map(|s| {
        let v = x.expand(s);
        if v.is_empty() || v.contains("..") || v.starts_with('/') {
            x.err(
                s.span().start,
                format!("state_directory `{v}` must be a relative name inside the data directory"),
                Some("write e.g. \"postgresql\"; it becomes ${paths.data_dir}/postgresql"),
            );
        }
        Path::new(&data_dir).join(v)
    });
    let stop_signal = match &svc.stop_signal {
        None => nix::sys::signal::Signal::SIGTERM,
        Some(s) => {
            let raw = s.get_ref().to_uppercase();
            let full = if raw.starts_with("SIG") {
                raw
            } else {
                format!("SIG{raw}")
            };
            full.parse().unwrap_or_else(|_| {
                x.err(
                    s.span().start,
                    format!("unknown signal `{}`", s.get_ref()),
                    Some("use a name such as SIGTERM, SIGINT, SIGQUIT"),
                );
                nix::sys::signal::Signal::SIGTERM
            })
        }
    };
    if let Some(t) = &svc.start_timeout
        && svc.kind != ServiceType::Oneshot
    {
        x.err(
            t.span().start,
            "`start_timeout` bounds a oneshot unit's run",
            Some("for other types the start is bounded by `timeout` in [readiness]"),
        );
    }
    let start_timeout = svc
        .start_timeout
        .as_ref()
        .map(|d| d.get_ref().0)
        .unwrap_or(ONESHOT_START_TIMEOUT);
    let listen = svc
        .listen
        .iter()
        .filter_map(|l| addr(x, l))
        .collect::<Vec<_>>();

    let readiness = match (&f.readiness, svc.kind) {
        (Some(r), kind) => {
            if kind == ServiceType::Oneshot {
                x.err(
                    r.probe.span().start,
                    "a oneshot unit is ready when it exits 0; it takes no [readiness] probe",
                    Some("remove the [readiness] section"),
                );
            }
            if kind == ServiceType::External
                && matches!(r.probe.get_ref(), ProbeKind::Log | ProbeKind::Notify)
            {
                x.err(
                    r.probe.span().start,
                    "an external unit has no output and sends no READY=1",
                    Some("use a tcp, http or exec probe"),
                );
            } else if *r.probe.get_ref() == ProbeKind::Notify && kind != ServiceType::Notify {
                x.err(
                    r.probe.span().start,
                    "probe = \"notify\" needs `type = \"notify\"` in [service]",
                    None,
                );
            }
            probe(x, r, true).map(|p| Readiness {
                probe: p,
                interval: r
                    .interval
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_millis(100)),
                timeout: r.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
            })
        }
        (None, ServiceType::Notify) => Some(Readiness {
            probe: ProbeSpec::Notify,
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(60),
        }),
        (None, _) => None,
    };
    let liveness = f.liveness.as_ref().and_then(|l| {
        if *l.probe.get_ref() == ProbeKind::Log {
            x.err(
                l.probe.span().start,
                "a log probe can only detect readiness",
                Some("use tcp, http, exec or notify for [liveness]"),
            );
        } else if *l.probe.get_ref() == ProbeKind::Notify && svc.kind == ServiceType::External {
            x.err(
                l.probe.span().start,
                "an external unit sends no WATCHDOG=1",
                Some("use a tcp, http or exec probe"),
            );
        }
        probe(x, l, false).map(|p| Liveness {
            probe: p,
            interval: l.interval.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            timeout: l.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
            failure_threshold: l.failure_threshold.map(|n| n.get()).unwrap_or(3),
        })
    });

    let r = &f.restart;
    let restart = Restart {
        policy: r.policy,
        delay: r.delay.map(|d| d.0).unwrap_or(Duration::from_millis(200)),
        max_delay: r.max_delay.map(|d| d.0).unwrap_or(Duration::from_secs(30)),
        burst: r.burst.map(|n| n.get()).unwrap_or(5),
        interval: r.interval.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
        reset_after: r
            .reset_after
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
    };

    UnitSpec {
        name: name.to_string(),
        base: base.to_string(),
        instance: inst,
        source: x.src.path.to_path_buf(),
        description: f.unit.description.clone().unwrap_or_default(),
        requires,
        wants,
        after,
        conditions,
        announce: f.unit.announce.iter().map(|a| x.expand(a)).collect(),
        kind: svc.kind,
        command,
        user: svc.user.as_ref().map(|u| x.expand(u)),
        group: svc.group.as_ref().map(|g| x.expand(g)),
        state_directory,
        working_dir: svc.working_dir.as_ref().map(|w| PathBuf::from(x.expand(w))),
        environment: svc
            .environment
            .iter()
            .map(|(k, v)| {
                if k.is_empty() || k.contains(['=', '\0']) {
                    x.err(
                        v.span().start,
                        format!(
                            "environment variable name `{}` is not usable",
                            k.escape_debug()
                        ),
                        Some("a name is not empty and holds no `=` or NUL, e.g. LC_ALL"),
                    );
                }
                (k.clone(), x.expand(v))
            })
            .collect(),
        environment_files: svc
            .environment_files
            .iter()
            .map(|e| {
                let v = x.expand(e);
                match v.strip_prefix('-') {
                    Some(p) => (PathBuf::from(p), true),
                    None => (PathBuf::from(v), false),
                }
            })
            .collect(),
        stop_signal,
        stop_timeout: svc
            .stop_timeout
            .as_ref()
            .map(|d| d.get_ref().0)
            .unwrap_or(Duration::from_secs(10)),
        start_timeout,
        watch: svc
            .watch
            .iter()
            .map(|w| PathBuf::from(x.expand(w)))
            .collect(),
        listen,
        pid_file: svc.pid_file.as_ref().map(|p| PathBuf::from(x.expand(p))),
        readiness,
        liveness,
        restart,
        log: LogSpec {
            channel: f.log.channel.clone().unwrap_or_else(|| base.to_string()),
            enabled: f.log.enabled.unwrap_or(true),
            format: f.log.format,
        },
    }
}

fn addr(x: &mut Expander<'_>, s: &Str) -> Option<SocketAddr> {
    let v = x.expand(s);
    match v.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => Some(a),
        None => {
            x.err(
                s.span().start,
                format!("`{v}` is not a host:port address"),
                Some("write e.g. \"127.0.0.1:${ports.nats}\""),
            );
            None
        }
    }
}

/// A probe's `host:port`: checked for form only, since the host may be a name that
/// resolves only where (and when) the service runs.
fn host_port(x: &mut Expander<'_>, s: &Str) -> Option<String> {
    let v = x.expand(s);
    let ok = v.rsplit_once(':').is_some_and(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Some(v)
    } else {
        x.err(
            s.span().start,
            format!("`{v}` is not a host:port address"),
            Some("write e.g. \"127.0.0.1:${ports.nats}\" or \"db.example.net:5432\""),
        );
        None
    }
}

fn probe(x: &mut Expander<'_>, p: &ProbeSection, readiness: bool) -> Option<ProbeSpec> {
    let kind = *p.probe.get_ref();
    let at = p.probe.span().start;
    let needs = |x: &mut Expander<'_>, what: &str, have: bool| {
        if !have {
            x.err(
                at,
                format!("probe = \"{}\" needs `{what}`", kind_name(kind)),
                None,
            );
        }
        have
    };
    // Keys that belong to another probe kind are mistakes, not decoration.
    let stray: Vec<&str> = [
        ("address", p.address.is_some(), ProbeKind::Tcp),
        ("url", p.url.is_some(), ProbeKind::Http),
        ("expect_status", p.expect_status.is_some(), ProbeKind::Http),
        ("command", p.command.is_some(), ProbeKind::Exec),
        ("pattern", p.pattern.is_some(), ProbeKind::Log),
    ]
    .into_iter()
    .filter(|(_, set, owner)| *set && *owner != kind)
    .map(|(k, _, _)| k)
    .collect();
    if !stray.is_empty() {
        x.err(
            at,
            format!(
                "`{}` does not apply to probe = \"{}\"",
                stray.join("`, `"),
                kind_name(kind)
            ),
            Some("remove it or change `probe`"),
        );
    }
    if readiness && p.failure_threshold.is_some() {
        x.err(
            at,
            "`failure_threshold` applies to [liveness] only",
            Some("readiness gives up after `timeout`"),
        );
    }
    match kind {
        ProbeKind::Tcp => {
            if !needs(x, "address", p.address.is_some()) {
                return None;
            }
            host_port(x, p.address.as_ref()?).map(ProbeSpec::Tcp)
        }
        ProbeKind::Http => {
            if !needs(x, "url", p.url.is_some()) {
                return None;
            }
            let u = p.url.as_ref()?;
            let v = x.expand(u);
            let Some(rest) = v.strip_prefix("http://") else {
                x.err(
                    u.span().start,
                    format!("`{v}` is not an http:// URL"),
                    Some("probes speak plain HTTP on loopback, e.g. \"http://127.0.0.1:8222/healthz\""),
                );
                return None;
            };
            let (hostport, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let spanned = Spanned::new(u.span(), hostport.to_string());
            let a = host_port(x, &spanned)?;
            Some(ProbeSpec::Http {
                addr: a,
                host: hostport.to_string(),
                path: path.to_string(),
                expect: p.expect_status,
            })
        }
        ProbeKind::Exec => {
            if !needs(
                x,
                "command",
                p.command.as_ref().is_some_and(|c| !c.is_empty()),
            ) {
                return None;
            }
            Some(ProbeSpec::Exec(
                p.command.as_ref()?.iter().map(|c| x.expand(c)).collect(),
            ))
        }
        ProbeKind::Log => {
            if !needs(x, "pattern", p.pattern.is_some()) {
                return None;
            }
            let pat = p.pattern.as_ref()?;
            let v = x.expand(pat);
            match regex::Regex::new(&v) {
                Ok(_) => Some(ProbeSpec::Log(v)),
                Err(e) => {
                    x.err(pat.span().start, format!("invalid pattern: {e}"), None);
                    None
                }
            }
        }
        ProbeKind::Notify => Some(ProbeSpec::Notify),
    }
}

fn kind_name(k: ProbeKind) -> &'static str {
    match k {
        ProbeKind::Tcp => "tcp",
        ProbeKind::Http => "http",
        ProbeKind::Exec => "exec",
        ProbeKind::Log => "log",
        ProbeKind::Notify => "notify",
    }
}

/// Names of every instance `dep` refers to (`worker` → `worker@1..N`).
pub(crate) fn expand_dep(dep: &str, all: &[Arc<UnitSpec>]) -> Vec<String> {
    if dep.contains('@') {
        return vec![dep.to_string()];
    }
    all.iter()
        .filter(|u| u.base == dep)
        .map(|u| u.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert("paths.data_dir".into(), "/data".into());
        v.insert("ports.nats".into(), "4222".into());
        v.insert("home".into(), "/h".into());
        v
    }

    fn load(files: &[(&str, &str)]) -> Result<UnitSet, UnitErrors> {
        crate::unit::load_files(files, &vars())
    }

    fn one_error(files: &[(&str, &str)]) -> String {
        let e = load(files).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        e.to_string()
    }

    #[test]
    fn sample_unit_parses_and_resolves() {
        let s = load(&[
            ("sample", SAMPLE_UNIT),
            ("other", "[service]\ncommand=[\"/bin/true\"]\n"),
        ])
        .unwrap();
        let u = s.get("sample").unwrap();
        assert_eq!(u.requires[0].name, "other");
        assert_eq!(
            u.state_directory.as_deref(),
            Some(Path::new("/data/sample"))
        );
    }

    #[test]
    fn external_units_take_a_probe_and_nothing_about_a_process() {
        let ok = "[service]\ntype = \"external\"\n[readiness]\nprobe = \"tcp\"\naddress = \"db.example.net:5432\"\n";
        let s = load(&[("db", ok)]).unwrap();
        let u = s.get("db").unwrap();
        assert!(u.command.is_empty());
        assert_eq!(
            u.readiness.as_ref().unwrap().probe,
            ProbeSpec::Tcp("db.example.net:5432".into())
        );
        let e = one_error(&[("db", "[service]\ntype = \"external\"\n")]);
        assert!(
            e.contains("db.unit.toml:2:9: an external unit needs a [readiness] probe"),
            "{e}"
        );
        let e = one_error(&[(
            "db",
            &ok.replace("[readiness]", "command = [\"x\"]\n[readiness]"),
        )]);
        assert!(
            e.contains("db.unit.toml:3:11: an external unit runs nothing here"),
            "{e}"
        );
        let e = one_error(&[(
            "db",
            &ok.replace("[readiness]", "user = \"postgres\"\n[readiness]"),
        )]);
        assert!(
            e.contains("db.unit.toml:3:8: `user` is about a process"),
            "{e}"
        );
        let e = one_error(&[(
            "db",
            &ok.replace("\"tcp\"", "\"log\"\npattern = \"x\"")
                .replace("address = \"db.example.net:5432\"\n", ""),
        )]);
        assert!(e.contains("no output"), "{e}");
        let e = one_error(&[("db", &ok.replace(":5432", ""))]);
        assert!(
            e.contains("`db.example.net` is not a host:port address"),
            "{e}"
        );
        let e = one_error(&[("a", "[service]\nuser = \"x\"\n")]);
        assert!(
            e.contains("a.unit.toml:1:1: [service] needs `command`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = one_error(&[("a", "[unit]\nrequries = []\n[service]\ncommand = [\"x\"]\n")]);
        assert!(
            e.contains("a.unit.toml:2:1: unknown field `requries`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_column() {
        let e = one_error(&[("a", "[service]\ncommand = \"sleep 1\"\n")]);
        assert!(e.contains("a.unit.toml:2:11"), "{e}");
    }

    #[test]
    fn bad_duration_is_explained() {
        let e = one_error(&[(
            "a",
            "[service]\ncommand=[\"x\"]\nstop_timeout = \"5 parsecs\"\n",
        )]);
        assert!(e.contains(":3:16") && e.contains("e.g. \"100ms\""), "{e}");
    }

    #[test]
    fn unknown_variable_points_at_it_and_suggests() {
        let e = one_error(&[(
            "a",
            "[service]\ncommand = [\"x\", \"--port=${ports.nat}\"]\n",
        )]);
        assert!(
            e.contains("a.unit.toml:2:25: unknown variable `${ports.nat}`"),
            "{e}"
        );
        assert!(e.contains("did you mean `${ports.nats}`"), "{e}");
    }

    #[test]
    fn missing_dependency_is_reported_with_suggestion() {
        let e = one_error(&[
            (
                "a",
                "[unit]\nrequires = [\"postgres\"]\n[service]\ncommand=[\"x\"]\n",
            ),
            ("postgresql", "[service]\ncommand=[\"x\"]\n"),
        ]);
        assert!(
            e.contains("a.unit.toml:2:13: unknown unit `postgres`"),
            "{e}"
        );
        assert!(e.contains("did you mean `postgresql`"), "{e}");
    }

    #[test]
    fn cycle_is_reported_with_its_path() {
        let e = one_error(&[
            (
                "a",
                "[unit]\nrequires = [\"b\"]\n[service]\ncommand=[\"x\"]\n",
            ),
            ("b", "[unit]\nafter = [\"c\"]\n[service]\ncommand=[\"x\"]\n"),
            ("c", "[unit]\nwants = [\"a\"]\n[service]\ncommand=[\"x\"]\n"),
        ]);
        assert!(
            e.contains("a.unit.toml:2:13: dependency cycle: a → b → c → a"),
            "{e}"
        );
    }

    #[test]
    fn instances_expand_names_and_variables() {
        let s = load(&[(
            "w",
            "[unit]\ninstances = 3\n[service]\ncommand = [\"x\", \"${instance}\", \"${unit}\"]\n",
        )])
        .unwrap();
        let names: Vec<_> = s.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["w@1", "w@2", "w@3"]);
        assert_eq!(s.units[1].command, ["x", "2", "w@2"]);
    }

    #[test]
    fn values_that_make_no_sense_are_refused_where_they_stand() {
        let svc = "[service]\ncommand = [\"x\"]\n";
        for (extra, at, says) in [
            (
                "[readiness]\nprobe = \"tcp\"\naddress = \"127.0.0.1:1\"\ninterval = \"0s\"\n",
                ":6:12:",
                "more than 0",
            ),
            (
                "[liveness]\nprobe = \"tcp\"\naddress = \"127.0.0.1:1\"\ntimeout = \"0ms\"\n",
                ":6:11:",
                "more than 0",
            ),
            (
                "[liveness]\nprobe = \"tcp\"\naddress = \"127.0.0.1:1\"\nfailure_threshold = 0\n",
                ":6:21:",
                "at least 1",
            ),
            ("[restart]\ninterval = \"0s\"\n", ":4:12:", "more than 0"),
            ("[restart]\nburst = 0\n", ":4:9:", "at least 1"),
        ] {
            let e = one_error(&[("u", &format!("{svc}{extra}"))]);
            assert!(e.contains(at) && e.contains(says), "{extra}: {e}");
        }
        let e = one_error(&[(
            "u",
            "[service]\ncommand = [\"x\"]\nstart_timeout = \"1m\"\n",
        )]);
        assert!(e.contains(":3:17:") && e.contains("oneshot"), "{e}");
        let e = one_error(&[("u", "[service]\ncommand = [\"x\", \"a\\u0000b\"]\n")]);
        assert!(e.contains(":2:17:") && e.contains("NUL"), "{e}");
        for key in ["\"\"", "\"A=B\""] {
            let text = format!("[service]\ncommand = [\"x\"]\nenvironment = {{ {key} = \"v\" }}\n");
            let e = one_error(&[("u", &text)]);
            assert!(e.contains(":3:") && e.contains("not usable"), "{key}: {e}");
        }
    }

    #[test]
    fn files_that_are_not_unit_text_are_refused_without_blocking() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        nix::unistd::mkfifo(&d.join("fifo.unit.toml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(
            d.join("big.unit.toml"),
            vec![b'#'; MAX_UNIT_BYTES as usize + 1],
        )
        .unwrap();
        std::fs::write(
            d.join("latin.unit.toml"),
            b"[service]\n# caf\xe9\ncommand = [\"x\"]\n",
        )
        .unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.unit.toml");
        std::fs::write(d.join(odd), "[service]\ncommand = [\"x\"]\n").unwrap();
        let e = load_dir(d, &vars()).unwrap_err().to_string();
        for want in [
            "fifo.unit.toml:1:1: not a regular file",
            "big.unit.toml:1:1: larger than 1048576 bytes",
            "latin.unit.toml:2:6: not valid UTF-8",
            "unit.toml:1:1: the file name is not valid UTF-8",
        ] {
            assert!(e.contains(want), "{want} missing from {e}");
        }
    }

    #[test]
    fn every_bad_file_is_reported_not_just_the_first() {
        let e = load(&[
            ("a", "[service]\ncommand = 1\n"),
            ("b", "[service]\nkommand = []\n"),
            ("Bad", "[service]\ncommand=[\"x\"]\n"),
        ])
        .unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
    }

    #[test]
    fn probe_keys_must_fit_the_probe() {
        let e = one_error(&[(
            "a",
            "[service]\ncommand=[\"x\"]\n[readiness]\nprobe = \"tcp\"\nurl = \"http://x\"\naddress=\"127.0.0.1:1\"\n",
        )]);
        assert!(e.contains("`url` does not apply"), "{e}");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        let s = load(&[("a", "[service]\ncommand = [\"echo\", \"$$HOME\"]\n")]).unwrap();
        assert_eq!(s.units[0].command[1], "$HOME");
    }
}

#[cfg(test)]
mod man_page {
    /// Every key the parser accepts is documented in man/tmidb.unit.5. The keys come from
    /// the parser itself: an unknown key's error lists the expected ones.
    #[test]
    fn documents_every_key_the_parser_accepts() {
        let page = include_str!("../../man/tmidb.unit.5");
        let mut missing = vec![];
        for (section, extra) in [
            ("unit", ""),
            ("service", "command = [\"x\"]\n"),
            ("readiness", ""),
            ("restart", ""),
            ("log", ""),
        ] {
            let text = if section == "service" {
                format!("[service]\n{extra}zzz_unknown = 1\n")
            } else if section == "readiness" {
                "[service]\ncommand = [\"x\"]\n[readiness]\nprobe = \"tcp\"\nzzz_unknown = 1\n"
                    .to_string()
            } else {
                format!("[{section}]\nzzz_unknown = 1\n[service]\ncommand = [\"x\"]\n")
            };
            let err = super::parse_unit(std::path::Path::new("x"), &text)
                .unwrap_err()
                .message;
            let expected = err
                .split("expected one of")
                .nth(1)
                .unwrap_or_else(|| panic!("{err}"));
            for key in expected
                .split([','])
                .flat_map(|k| k.split(" or "))
                .map(|k| k.trim().trim_matches('`'))
            {
                let documented = page.lines().filter(|l| l.starts_with(".B")).any(|l| {
                    l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .any(|w| w == key)
                });
                if !documented {
                    missing.push(format!("[{section}] {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "undocumented keys in man/tmidb.unit.5: {missing:?}"
        );
    }
}
