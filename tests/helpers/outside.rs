//! What a test plays of the outside world: a web server (sources, webhooks), a NATS
//! publisher speaking the plain protocol, and psql.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::Sup;

/// A local HTTP server for sources and webhooks: GET answers `body`, POST bodies are
/// kept in `posts` (the first `fail_first` POSTs answer 500, to exercise retries).
pub struct TinyServer {
    /// Its port.
    pub port: u16,
    /// What GET answers.
    pub body: std::sync::Arc<std::sync::Mutex<String>>,
    /// Bodies POSTed, in order.
    pub posts: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// POSTs still to refuse.
    pub fail_first: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TinyServer {
    pub fn start(fail_first: usize) -> TinyServer {
        use std::io::{BufRead, Read, Write};
        use std::sync::{Arc, Mutex, atomic::AtomicUsize, atomic::Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new(String::from("[]")));
        let posts = Arc::new(Mutex::new(vec![]));
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let (b, p, f) = (body.clone(), posts.clone(), fail.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut r = std::io::BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut data = vec![0; len];
                let _ = r.read_exact(&mut data);
                let (status, out) = if line.starts_with("POST") {
                    if f.load(Ordering::SeqCst) > 0 {
                        f.fetch_sub(1, Ordering::SeqCst);
                        (500, String::from("{}"))
                    } else {
                        p.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&data).unwrap_or(Value::Null));
                        (200, String::from("{}"))
                    }
                } else {
                    (200, b.lock().unwrap().clone())
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                    out.len()
                );
            }
        });
        TinyServer {
            port,
            body,
            posts,
            fail_first: fail,
        }
    }
}

/// Publishes on core NATS the way an external system would (plain protocol), with
/// `user` and `password` if given, and waits for the server to have processed it
/// (PING/PONG). Err: the server's `-ERR` line.
pub fn nats_publish(
    port: u16,
    credentials: Option<(&str, &str)>,
    subject: &str,
    payloads: &[&[u8]],
) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut info = String::new();
    r.read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO"), "{info}");
    let mut connect = json!({"verbose": false, "pedantic": false});
    if let Some((user, pass)) = credentials {
        connect["user"] = user.into();
        connect["pass"] = pass.into();
    }
    let mut out = format!("CONNECT {connect}\r\n").into_bytes();
    for p in payloads {
        out.extend_from_slice(format!("PUB {subject} {}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"PING\r\n");
    // The server may close the connection on the way (refused credentials): its
    // answer says why.
    let mut w = s;
    let _ = w.write_all(&out);
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 {
            return Err("connection closed".into());
        }
        if l.starts_with("-ERR") {
            return Err(l.trim_end().to_string());
        }
        if l.starts_with("PONG") {
            return Ok(());
        }
    }
}

/// psql as `postgres` against the `tmidb` database of the stack in `home`; returns
/// trimmed stdout and panics (with stderr) when psql fails.
pub fn psql(home: &Path, sql: &str) -> String {
    let port = Sup::attach(home)
        .cli_ok(&["config", "get", "ports.postgresql"])
        .trim()
        .parse()
        .unwrap();
    let password = std::fs::read_to_string(home.join("secrets/postgresql.password")).unwrap();
    psql_at(port, password.trim(), sql)
}

/// psql as `postgres` with `password` against the `tmidb` database on `port` (a
/// standby, say); as [`psql`].
pub fn psql_at(port: u16, password: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "tmidb",
            "-tAc",
            sql,
        ])
        .args(["-p", &port.to_string()])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
