//! What the stack benchmarks share: a temp home with a subset of the default units, the
//! supervisor (dying with the bench), an HTTP helper and an admin login.

#![allow(dead_code)]

#[path = "../../tests/helpers/client.rs"]
pub mod client;
#[path = "../../tests/helpers/cluster.rs"]
pub mod cluster;

#[path = "../../tests/helpers/ports.rs"]
pub mod ports;

pub use client::try_http;
/// Ports for a stack or the benchmark's own processes: a free block below the ephemeral
/// range (the tests' allocator).
pub use ports::free_port_block;

/// How a benchmark binary was asked to run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// `cargo bench` (`--bench`): full sizes, each figure the median of 3 runs.
    Full,
    /// `cargo test --benches -- --quick` (`make test`): small sizes, one run each, so
    /// every benchmark's stack and code path is exercised in CI.
    Quick,
}

impl Mode {
    /// The mode from the arguments; `None` when neither flag is given (a plain
    /// `cargo test --all-targets` runs nothing).
    pub fn from_args() -> Option<Mode> {
        let args: Vec<String> = std::env::args().collect();
        if args.iter().any(|a| a == "--bench") {
            Some(Mode::Full)
        } else if args.iter().any(|a| a == "--quick") {
            Some(Mode::Quick)
        } else {
            None
        }
    }

    /// `full` in a full run, `quick` otherwise.
    pub fn size<T>(self, full: T, quick: T) -> T {
        match self {
            Mode::Full => full,
            Mode::Quick => quick,
        }
    }

    /// Runs of each figure: 3 (the median is printed, with the spread), 1 when quick.
    pub fn runs(self) -> usize {
        self.size(3, 1)
    }
}

/// The machine's load averages (1, 5, 15 min), printed before each figure so a reader
/// can tell a busy machine from a slower build.
pub fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let f: Vec<&str> = l.split_whitespace().take(3).collect();
    format!("[load {}]", f.join(" "))
}

/// Runs `f` `mode.runs()` times (printing the load before each) and returns the
/// median of its results and all of them, for figures printed as "median (runs a, b,
/// c)".
pub fn median_of(mode: Mode, what: &str, mut f: impl FnMut() -> f64) -> (f64, Vec<f64>) {
    let mut all = vec![];
    for i in 0..mode.runs() {
        println!("{} {what}: run {}", load(), i + 1);
        all.push(f());
    }
    (median(all.clone()), all)
}

/// Rows stored in `category`, from the ledger (a row per message, written in the same
/// transaction as the rows). Benchmarks wait on this rather than on count(*) of the
/// table: polling a scan of up to 1M rows every few ms made PostgreSQL carry a load
/// the raw COPY beside it did not.
pub fn stored(rt: &tokio::runtime::Runtime, pool: &sqlx::PgPool, category: &str) -> i64 {
    rt.block_on(
        sqlx::query_scalar(
            "SELECT coalesce(sum(new_rows), 0)::bigint FROM ingest_batches WHERE category = $1",
        )
        .bind(category)
        .fetch_one(pool),
    )
    .unwrap()
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `a, b, c` with `digits` decimals: the runs behind a median.
pub fn runs(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The default units an api needs (PostgreSQL, NATS, the migrations and the api).
pub const API_UNITS: &[&str] = &[
    "postgresql-init",
    "postgresql",
    "migrate",
    "nats-init",
    "nats",
    "api",
];

/// A running stack in a temp home, on a free port block.
pub struct Stack {
    dir: tempfile::TempDir,
    sup: Child,
    /// Admin session token.
    pub token: String,
    /// `[ports] base`.
    pub base: u16,
}

impl Stack {
    /// Starts `units` (from `units/`, without the api's soft dependency on SeaweedFS) on
    /// a free port block; returns once the api (and the ingest port, with a
    /// data-manager) accepts and the admin is logged in.
    pub fn start(prefix: &str, units: &[&str]) -> Stack {
        Stack::start_with(prefix, units, "", None)
    }

    /// Like [`Stack::start`], with `extra` appended to tmidb.toml, and the secrets of
    /// `secrets_from` (a home) copied in first. A unit name `node/NAME` is taken from
    /// `units/node/`.
    pub fn start_with(
        prefix: &str,
        units: &[&str],
        extra: &str,
        secrets_from: Option<&Path>,
    ) -> Stack {
        let base = free_port_block();
        let mut wait = vec![base + 11];
        if units.contains(&"data-manager") {
            wait.push(base + 12);
        }
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let home = dir.path();
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            home.join("tmidb.toml"),
            format!("[ports]\nbase = {base}\n{extra}"),
        )
        .unwrap();
        std::fs::create_dir(home.join("units")).unwrap();
        if let Some(from) = secrets_from {
            std::fs::create_dir(home.join("secrets")).unwrap();
            for e in std::fs::read_dir(from.join("secrets")).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, home.join("secrets").join(p.file_name().unwrap())).unwrap();
            }
        }
        for u in units {
            let text = std::fs::read_to_string(format!(
                "{}/units/{u}.unit.toml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            let name = u.rsplit('/').next().unwrap();
            std::fs::write(
                home.join(format!("units/{name}.unit.toml")),
                text.replace("wants = [\"seaweedfs\"]", ""),
            )
            .unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tmidb-supervisor"));
        // SAFETY: prctl only, between fork and exec: the stack stops if the bench dies.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let sup = cmd
            .arg("--home")
            .arg(home)
            .arg("--units")
            .arg(home.join("units"))
            .env("TMIDB_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while wait
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
            || !home.join("secrets/admin.password").exists()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the stack never came up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        let pw = std::fs::read_to_string(home.join("secrets/admin.password")).unwrap();
        let login = format!("{{\"username\":\"admin\",\"password\":\"{}\"}}", pw.trim());
        let (_, body) = http(
            base + 11,
            "POST",
            "/api/v1/auth/login",
            "",
            login.as_bytes(),
        );
        let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        Stack {
            dir,
            sup,
            token,
            base,
        }
    }

    /// The api's port.
    pub fn api(&self) -> u16 {
        self.base + 11
    }

    /// The data-manager's ingest port.
    pub fn ingest(&self) -> u16 {
        self.base + 12
    }

    /// The home.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// A runtime and a small pool on the stack's database, for loading data by SQL.
    pub fn db(&self) -> (tokio::runtime::Runtime, sqlx::PgPool) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = tmidb::config::Config::load(self.home()).unwrap();
        let pool = rt.block_on(tmidb::db::connect(&cfg, 2)).unwrap();
        (rt, pool)
    }

    /// Creates category `bench` (`v` float, `n` int) through the api on `port` and
    /// loads `rows` records into it by SQL: 100 targets `t0`..`t99`, one record per
    /// target every 10 s from 2026-01-01 (5M rows: ~5.8 days); with `rollups`, also
    /// the 1-minute and 1-hour rollups the writers would have kept. Prints how long
    /// it took.
    pub fn load_bench(
        &self,
        port: u16,
        rows: i64,
        rollups: bool,
    ) -> (tokio::runtime::Runtime, sqlx::PgPool) {
        let def =
            br#"{"name":"bench","fields":[{"name":"v","type":"float"},{"name":"n","type":"int"}]}"#;
        assert_eq!(
            http(port, "POST", "/api/v1/categories", &self.token, def).0,
            201
        );
        // One record through the api creates the January 2026 partition the load goes into.
        let first = br#"[{"target":"t0","ts":"2026-01-01T00:00:00Z","v":0.5,"n":0}]"#;
        let path = "/api/v1/categories/bench/records";
        assert_eq!(http(port, "POST", path, &self.token, first).0, 201);
        let (rt, pool) = self.db();
        let load = Instant::now();
        rt.block_on(async {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO rec_bench (target, ts, schema_version, v, n) SELECT 't' || (g % 100), \
                 TIMESTAMPTZ '2026-01-01 00:00:10+00' + (g / 100) * INTERVAL '10 seconds', 1, random() * 100, g \
                 FROM generate_series(0, {}) g",
                rows - 2
            )))
            .execute(&pool)
            .await
            .unwrap();
            if rollups {
                // The rollup rows the writers keep: one per target, width and bucket, each
                // field at its slot (`rollup_fields`).
                let slots: Vec<String> = sqlx::query_scalar(
                    "SELECT field FROM rollup_fields WHERE category = 'bench' ORDER BY slot",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                let agg = |f: &str| -> String {
                    slots
                        .iter()
                        .map(|c| format!("{f}({c})::{}", if f == "count" { "bigint" } else { "float8" }))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                sqlx::query(
                    "INSERT INTO rollup_series (category, target) \
                     SELECT DISTINCT 'bench', target FROM rec_bench ORDER BY 2 ON CONFLICT DO NOTHING",
                )
                .execute(&pool)
                .await
                .unwrap();
                for secs in [60, 3600] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO rollups (series, width, bucket, count, min, max, sum) \
                         SELECT s.id, {secs}, date_bin(make_interval(secs => {secs}), r.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b, \
                         ARRAY[{}], ARRAY[{}], ARRAY[{}], ARRAY[{}] \
                         FROM rec_bench r JOIN rollup_series s ON s.category = 'bench' AND s.target = r.target GROUP BY s.id, b \
                         ON CONFLICT (series, width, bucket) DO UPDATE SET \
                         count = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) FROM unnest(rollups.count, excluded.count) AS u(a, b)), \
                         min = ARRAY(SELECT least(a, b) FROM unnest(rollups.min, excluded.min) AS u(a, b)), \
                         max = ARRAY(SELECT greatest(a, b) FROM unnest(rollups.max, excluded.max) AS u(a, b)), \
                         sum = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) FROM unnest(rollups.sum, excluded.sum) AS u(a, b))",
                        agg("count"),
                        agg("min"),
                        agg("max"),
                        agg("sum")
                    )))
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            }
            sqlx::query("ANALYZE rec_bench").execute(&pool).await.unwrap();
        });
        println!(
            "loaded {rows} rows by SQL in {:.1} s",
            load.elapsed().as_secs_f64()
        );
        (rt, pool)
    }

    /// Orderly stop.
    pub fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.sup.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.sup.wait();
    }
}

/// A request with a Bearer token and a JSON body: (status, body).
pub fn http(port: u16, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, _, body) = client::http(port, method, path, &headers, body);
    (status, body)
}
