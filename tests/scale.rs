//! Past one machine: two homes sharing one PostgreSQL and a 3-node JetStream cluster,
//! the node profile (every service external), and a read replica.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::cluster::NatsCluster;
use crate::helpers::outside::psql_at;
use crate::helpers::{Home, SUPERVISOR, Sup, json as call_json, multipart, secs, try_http};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Writes the node-profile units (`units/node/`, symlinks followed) into `h`, except
/// those in `without`.
fn node_units(h: &Home, without: &[&str]) {
    for e in std::fs::read_dir(Path::new(MANIFEST).join("units/node")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let Some(unit) = name.strip_suffix(".unit.toml") else {
            continue;
        };
        if !without.contains(&unit) {
            h.unit(unit, &std::fs::read_to_string(&p).unwrap());
        }
    }
}

fn append(h: &Home, text: &str) {
    let path = h.path().join("tmidb.toml");
    let toml = std::fs::read_to_string(&path).unwrap();
    std::fs::write(path, format!("{toml}{text}")).unwrap();
}

fn port(sup: &Sup, key: &str) -> u16 {
    sup.cli_ok(&["config", "get", key]).trim().parse().unwrap()
}

fn login(api: u16, password: &str) -> String {
    let (s, _, r) = call_json(
        api,
        "POST",
        "/api/v1/auth/login",
        &[],
        Some(&json!({"username": "admin", "password": password})),
    );
    assert_eq!(s, 200, "login on {api}: {r}");
    r["token"].as_str().unwrap().to_string()
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn two_homes_on_a_jetstream_cluster_store_200k_records_once_through_leader_and_service_kills() {
    // The first home: PostgreSQL, SeaweedFS, the api and the pipeline; NATS is the
    // cluster the test runs (external), with the credentials this home generates.
    let h1 = Home::new();
    let out = std::process::Command::new(SUPERVISOR)
        .args(["setup", "nats", "--home"])
        .arg(h1.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let auth = std::fs::read_to_string(h1.path().join("secrets/nats.conf")).unwrap();
    let mut cluster = NatsCluster::start(&auth);
    let servers = format!("{:?}", cluster.servers());
    let shared =
        format!("[nats]\nservers = {servers}\nreplicas = 3\n[ingest]\nack_wait = \"3s\"\n");
    append(&h1, &shared);
    h1.default_units(
        &[
            "postgresql-init",
            "postgresql",
            "migrate",
            "nats-init",
            "seaweedfs-init",
            "seaweedfs",
            "api",
            "data-manager",
            "data-consumer",
        ],
        true,
    );
    h1.unit(
        "nats",
        &std::fs::read_to_string(Path::new(MANIFEST).join("units/node/nats.unit.toml")).unwrap(),
    );
    let sup1 = h1.start();
    for u in [
        "api",
        "data-manager",
        "data-consumer@1",
        "data-consumer@2",
        "seaweedfs",
    ] {
        sup1.wait_state(u, "ready", secs(120));
    }
    let (pg, s3) = (
        port(&sup1, "ports.postgresql"),
        port(&sup1, "ports.seaweedfs_s3"),
    );

    // The second home: the node profile, every service external, pointed at the first
    // home's PostgreSQL and SeaweedFS and at the cluster, with copies of its secrets.
    let h2 = Home::new();
    std::fs::create_dir(h2.path().join("secrets")).unwrap();
    for e in std::fs::read_dir(h1.path().join("secrets")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".password") && name != "admin.password" || name.starts_with("s3.") {
            std::fs::copy(&p, h2.path().join("secrets").join(&name)).unwrap();
        }
    }
    append(
        &h2,
        &format!(
            "{shared}[postgresql]\naddress = \"127.0.0.1:{pg}\"\n[s3]\nendpoint = \"http://127.0.0.1:{s3}\"\n"
        ),
    );
    node_units(&h2, &[]);
    let sup2 = h2.start();
    for u in ["api", "data-manager", "data-consumer@1", "data-consumer@2"] {
        sup2.wait_state(u, "ready", secs(120));
    }
    for u in ["postgresql", "nats", "seaweedfs"] {
        let x = sup2.unit(u).unwrap();
        assert_eq!(x["state"], "ready", "{x}");
        assert!(x["pid"].is_null(), "an external unit runs nothing: {x}");
    }

    // Either api answers, on the same data; a file stored through one is read through
    // the other (the second home's S3 is the first's).
    let password = std::fs::read_to_string(h1.path().join("secrets/admin.password")).unwrap();
    let (api1, api2) = (port(&sup1, "ports.api"), port(&sup2, "ports.api"));
    let admin = login(api1, password.trim());
    let token2 = login(api2, password.trim());
    let bearer = format!("Bearer {admin}");
    let (s, _, r) = call_json(
        api1,
        "POST",
        "/api/v1/categories",
        &[("Authorization", &bearer)],
        Some(&json!({"name": "scale", "fields": [{"name": "v", "type": "int", "required": true}]})),
    );
    assert_eq!(s, 201, "{r}");
    let (s, _, r) = call_json(
        api2,
        "GET",
        "/api/v1/categories/scale",
        &[("Authorization", &format!("Bearer {token2}"))],
        None,
    );
    assert_eq!((s, &r["name"]), (200, &json!("scale")), "{r}");
    let (ct, body) = multipart(&[("file", Some(("n.txt", "text/plain")), b"from the node")]);
    let (s, _, raw) = try_http(
        api2,
        "POST",
        "/api/v1/files",
        &[
            ("Authorization", &format!("Bearer {token2}")),
            ("Content-Type", &ct),
        ],
        &body,
    )
    .unwrap();
    let info: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    assert_eq!(s, 201, "{info}");
    let id = info["id"].as_str().unwrap();
    let (s, _, got) = try_http(
        api1,
        "GET",
        &format!("/api/v1/files/{id}"),
        &[("Authorization", &bearer)],
        b"",
    )
    .unwrap();
    assert_eq!((s, got.as_slice()), (200, &b"from the node"[..]));

    // 200k records pushed through both ingest endpoints while the stream leader's
    // nats-server, a data-consumer of each home and a data-manager are SIGKILLed.
    const BATCHES: usize = 100;
    const PER_BATCH: usize = 2000;
    let ingest = [port(&sup1, "ports.ingest"), port(&sup2, "ports.ingest")];
    let pushed = Arc::new(AtomicUsize::new(0));
    let pushers: Vec<_> = (0..2)
        .map(|k| {
            let (pushed, auth) = (pushed.clone(), bearer.clone());
            std::thread::spawn(move || {
                let mut retries = 0;
                for b in (k..BATCHES).step_by(2) {
                    let body: Vec<Value> = (0..PER_BATCH)
                        .map(|i| {
                            let n = b * PER_BATCH + i;
                            json!({"target": format!("t{}", n % 20), "ts": format!("2026-11-21T00:00:00.{:06}Z", n), "v": n})
                        })
                        .collect();
                    let body = serde_json::to_vec(&body).unwrap();
                    // Until answered 202 with every record accepted, as a client would:
                    // refused (429, 503) or cut (a killed data-manager) pushes are sent again.
                    loop {
                        let r = try_http(
                            ingest[k],
                            "POST",
                            "/ingest/scale",
                            &[("Authorization", &auth), ("Content-Type", "application/json")],
                            &body,
                        );
                        match r {
                            Ok((202, _, raw)) => {
                                let r: Value = serde_json::from_slice(&raw).unwrap();
                                assert_eq!(r["accepted"], PER_BATCH, "{r}");
                                break;
                            }
                            Ok((status, _, raw)) => assert!(
                                matches!(status, 429 | 503),
                                "{status}: {}",
                                String::from_utf8_lossy(&raw)
                            ),
                            Err(_) => {}
                        }
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    pushed.fetch_add(1, Ordering::SeqCst);
                }
                retries
            })
        })
        .collect();
    let at = |n: usize| {
        sup1.wait_until(&format!("{n} batches pushed"), secs(600), |_| {
            pushed.load(Ordering::SeqCst) >= n
        });
    };
    at(20);
    let leader = cluster
        .leader_of("TMIDB_DATA")
        .expect("a leader of TMIDB_DATA");
    cluster.kill9(leader);
    eprintln!(
        "killed the TMIDB_DATA leader {}",
        cluster.nodes[leader].name
    );
    at(40);
    kill9(sup1.pid_of("data-consumer@1"));
    kill9(sup2.pid_of("data-consumer@1"));
    cluster.restart(leader);
    at(60);
    kill9(sup1.pid_of("data-manager"));
    let retries: usize = pushers.into_iter().map(|p| p.join().unwrap()).sum();
    eprintln!("{retries} pushes were sent again");

    // Every record of every push answered 202 is stored, once (asked of the second api).
    crate::helpers::assert_stored_exactly_once(&sup2, api2, &token2, "scale", 200_000);
    for (sup, u) in [
        (&sup1, "data-consumer@1"),
        (&sup2, "data-consumer@1"),
        (&sup1, "data-manager"),
    ] {
        assert_eq!(
            sup.unit(u).unwrap()["restarts"],
            1,
            "{u} was killed and restarted once: {}",
            sup.cli_ok(&["failures", u])
        );
    }
    // The external nats unit watched the killed node only if it was the first.
    assert_eq!(sup2.unit("nats").unwrap()["state"], "ready");
    // The killed node, started again, catches up: every stream and consumer current.
    let took = cluster.wait_current(secs(120));
    eprintln!("the cluster was current {took:?} after the checks above");
}

#[test]
fn with_a_read_replica_record_reads_come_from_the_standby_and_writes_go_to_the_primary() {
    let h = Home::new();
    h.default_units(
        &[
            "postgresql-init",
            "postgresql",
            "migrate",
            "nats-init",
            "nats",
            "api",
        ],
        false,
    );
    let sup = h.start();
    sup.wait_state("api", "ready", secs(120));
    let pw = std::fs::read_to_string(h.path().join("secrets/postgresql.password")).unwrap();
    let pw = pw.trim();
    let primary = port(&sup, "ports.postgresql");

    // A streaming standby of the home's PostgreSQL, made the documented way.
    let standby_dir = h.path().join("standby");
    let pg = "/usr/lib/postgresql/15/bin";
    let standby = crate::helpers::free_port_block();
    let as_postgres = |args: &[&str]| {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .args(args)
            .env("PGPASSWORD", pw);
        c
    };
    let dir = standby_dir.to_str().unwrap();
    std::fs::create_dir(&standby_dir).unwrap();
    std::fs::set_permissions(
        &standby_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    nix::unistd::chown(
        &standby_dir,
        Some(
            nix::unistd::User::from_name("postgres")
                .unwrap()
                .unwrap()
                .uid,
        ),
        None,
    )
    .unwrap();
    let out = as_postgres(&[
        &format!("{pg}/pg_basebackup"),
        "-h",
        "127.0.0.1",
        "-p",
        &primary.to_string(),
        "-U",
        "postgres",
        "-D",
        dir,
        "-R",
        "-c",
        "fast",
        "-X",
        "stream",
        "-C",
        "-S",
        "tmidb_standby",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "pg_basebackup: {out:?}");
    let mut standby_proc = as_postgres(&[
        &format!("{pg}/postgres"),
        "-D",
        dir,
        "-p",
        &standby.to_string(),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "hot_standby_feedback=on",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(h.path().join("standby.log")).unwrap())
    .spawn()
    .unwrap();
    let log = h.path().join("standby.log");
    let standby_log = || std::fs::read_to_string(&log).unwrap_or_default();
    sup.wait_until("the standby answers", secs(60), |_| {
        assert!(
            standby_proc.try_wait().unwrap().is_none(),
            "the standby died: {}",
            standby_log()
        );
        std::process::Command::new(format!("{pg}/pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &standby.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert_eq!(psql_at(standby, pw, "SELECT pg_is_in_recovery()"), "t");

    // The api, restarted with read_address, reads records from the standby.
    append(
        &h,
        &format!("[postgresql]\nread_address = \"127.0.0.1:{standby}\"\n"),
    );
    let before = sup.pid_of("api");
    sup.cli_ok(&["restart", "api"]);
    sup.wait_until("api restarted", secs(60), |s| {
        s.state("api") == "ready" && s.pid_of("api") != before
    });
    let api = port(&sup, "ports.api");
    let password = std::fs::read_to_string(h.path().join("secrets/admin.password")).unwrap();
    let auth = format!("Bearer {}", login(api, password.trim()));
    let call = |method: &str, path: &str, body: Option<&Value>| {
        call_json(api, method, path, &[("Authorization", &auth)], body)
    };
    let (s, _, r) = call(
        "POST",
        "/api/v1/categories",
        Some(
            &json!({"name": "replica", "fields": [{"name": "v", "type": "int", "required": true}]}),
        ),
    );
    assert_eq!(s, 201, "{r}");
    let records = |from: usize, to: usize| -> Value {
        (from..to)
            .map(|i| json!({"target": "r", "ts": format!("2026-11-22T00:00:{i:02}Z"), "v": i}))
            .collect()
    };
    let insert = |from, to| {
        let (s, _, r) = call(
            "POST",
            "/api/v1/categories/replica/records",
            Some(&records(from, to)),
        );
        assert!(s == 201 || s == 200, "{s}: {r}");
    };
    let listed = || {
        let (s, _, r) = call("GET", "/api/v1/categories/replica/records?limit=100", None);
        assert_eq!(s, 200, "{r}");
        r["records"].as_array().map(Vec::len).unwrap_or(0)
    };
    insert(0, 10);
    sup.wait_until("10 records readable", secs(30), |_| listed() == 10);
    // Replay paused on the standby: new writes reach the primary (and are answered),
    // the api's reads keep showing the standby's older state.
    psql_at(standby, pw, "SELECT pg_wal_replay_pause()");
    insert(10, 15);
    let count = "SELECT count(*) FROM rec_replica";
    let primary_rows = psql_at(primary, pw, count);
    assert_eq!(primary_rows, "15", "writes go to the primary");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(listed(), 10, "reads come from the (paused) standby");
    let readers = psql_at(
        standby,
        pw,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tmidb-read'",
    );
    assert_ne!(
        readers, "0",
        "the api's read pool is connected to the standby"
    );
    psql_at(standby, pw, "SELECT pg_wal_replay_resume()");
    sup.wait_until("the standby caught up", secs(30), |_| listed() == 15);
    let _ = standby_proc.kill();
    let _ = standby_proc.wait();
}
