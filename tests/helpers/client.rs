//! The one HTTP client of the tests and the benchmarks: plain HTTP/1.1 over a
//! `TcpStream` to 127.0.0.1, one request per connection, so a test sees exactly the
//! bytes the server sent (status, headers, body; chunked bodies decoded). The
//! benchmarks include this file by path.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

/// A minimal HTTP/1.1 request to 127.0.0.1: (status, headers, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // The server may answer (and close) before reading the whole body: still read it.
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
    let mut raw = vec![];
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
}

/// A request with an optional JSON body (sent with its Content-Type): (status, headers,
/// the answer as JSON, or null when it is not JSON).
pub fn json(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(b).expect("json"))
        .unwrap_or_default();
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if body.is_some() {
        h.push(("Content-Type", "application/json"));
    }
    let (status, head, raw) = http(port, method, path, &h, &bytes);
    (
        status,
        head,
        serde_json::from_slice(&raw).unwrap_or(Value::Null),
    )
}
