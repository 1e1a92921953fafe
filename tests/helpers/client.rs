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
    try_http(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// Like [`http`], for a server that may be down: Err when it cannot be reached or
/// closes without an answer.
pub fn try_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String, Vec<u8>), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
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
        .ok_or("no HTTP head in the answer")?;
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
    Ok((status, head, body))
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

/// A multipart part: name, optional (file name, content type), bytes.
pub type Part<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a [u8]);

/// A multipart/form-data body of `fields`: (its Content-Type, its bytes).
pub fn multipart(fields: &[Part]) -> (String, Vec<u8>) {
    let boundary = "tmidbBoundary7d1f";
    let mut body = vec![];
    for (name, file, data) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some((filename, ct)) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {ct}\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// One Server-Sent Event: (id, event type, data).
pub type Sse = (String, String, Value);

/// Reads SSE events from `path` until `want` returns true or `timeout` passes.
pub fn sse(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    want: impl Fn(&[Sse]) -> bool,
) -> Vec<Sse> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    if !status.contains(" 200 ") {
        use std::io::Read;
        let mut rest = vec![];
        let _ = r.read_to_end(&mut rest);
        panic!("{path}: {status}{}", String::from_utf8_lossy(&rest));
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut events = vec![];
    let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
    let mut in_body = false;
    while std::time::Instant::now() < deadline && !want(&events) {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if !in_body {
            in_body = line.is_empty();
            continue;
        }
        // Chunk-size lines of the chunked encoding are skipped (hex only).
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        } else if line.is_empty() && !data.is_empty() {
            events.push((
                std::mem::take(&mut id),
                std::mem::take(&mut kind),
                serde_json::from_str(&std::mem::take(&mut data)).unwrap_or(Value::Null),
            ));
        }
    }
    events
}
