//! What every HTTP request of the api and the data-manager passes through, around the
//! routes: one mechanism for input hygiene and for the error shape, instead of checks
//! scattered over the routes.
//!
//! - Before a route: a NUL character (`\u0000` in JSON, `%00` in the query) is refused
//!   with 400 naming where it is. PostgreSQL text and jsonb cannot hold one, so a
//!   request carrying it could never be stored; refusing it here means no route can
//!   fail on it later with a 500.
//! - After a route: every error poem or poem-openapi produced itself (an unknown path,
//!   an undeclared method, a body that does not parse, a missing `Content-Type`) is
//!   rewritten into the one JSON error shape ([`ErrorBody`]); a 405 carries `Allow`.
//!   Errors the routes return are already in that shape and pass unchanged.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::types::ToJSON;
use serde_json::Value;

use super::error::ErrorBody;

/// The largest JSON body the NUL check buffers; larger bodies (file uploads are not
/// JSON) pass unchecked to the route, whose own size limits apply.
const MAX_CHECKED_BODY: usize = 64 << 20;

/// Runs `ep` with the hygiene check before and the error rewrite after; `allow` gives
/// the methods declared for a path (for 405's `Allow`).
pub async fn guard<E: Endpoint>(
    ep: E,
    mut req: Request,
    allow: fn(&str) -> Vec<&'static str>,
) -> poem::Result<Response> {
    if let Some(problem) = nul_in_query(&req) {
        return Ok(error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            problem,
        ));
    }
    if is_textual(&req) {
        let bytes = req.take_body().into_bytes().await?;
        if bytes.len() <= MAX_CHECKED_BODY
            && let Some(problem) = nul_in_body(&bytes)
        {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                problem,
            ));
        }
        req.set_body(bytes);
    }
    json_errors(ep, req, allow).await
}

/// Runs `ep` and rewrites poem's own errors into the JSON error shape (what [`guard`]
/// does after the route; the data-manager's push endpoint uses it alone, because there
/// a NUL is one record's problem: that record becomes a dead letter, the rest is
/// stored).
pub async fn json_errors<E: Endpoint>(
    ep: E,
    req: Request,
    allow: fn(&str) -> Vec<&'static str>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    match ep.call(req).await {
        Ok(r) => Ok(r.into_response()),
        Err(e) if e.is_from_response() => Ok(e.into_response()),
        Err(e) => Ok(rewrite(e, &path, allow)),
    }
}

/// Whether the body is text the check reads (JSON, NDJSON, CSV): everything our JSON
/// and ingest routes take.
fn is_textual(req: &Request) -> bool {
    let ct = req
        .header(header::CONTENT_TYPE)
        .unwrap_or_default()
        .to_ascii_lowercase();
    ct.contains("json") || ct.starts_with("text/")
}

fn nul_in_query(req: &Request) -> Option<String> {
    let q = req.uri().query()?;
    let decoded = percent_decode(q);
    decoded.contains('\0').then(|| {
        "the query string holds a NUL character (%00); no stored value can contain one".into()
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds a NUL in a JSON (or other text) body: a raw 0 byte, or a `\u0000` escape (a
/// `\` preceded by an even number of backslashes). The fast scan is all a clean body
/// costs; only a body that has one is parsed, to say where.
pub fn nul_in_body(b: &[u8]) -> Option<String> {
    let at = first_nul(b)?;
    let place = serde_json::from_slice::<Value>(b)
        .ok()
        .and_then(|v| nul_pointer(&v, String::new()))
        .map(|p| {
            if p.is_empty() {
                "the body".to_string()
            } else {
                format!("`{p}`")
            }
        })
        .unwrap_or_else(|| format!("byte {at} of the body"));
    Some(format!(
        "{place} holds a NUL character (\\u0000); PostgreSQL text cannot store one: remove it"
    ))
}

fn first_nul(b: &[u8]) -> Option<usize> {
    let mut backslashes = 0usize;
    for (i, &c) in b.iter().enumerate() {
        if c == 0 {
            return Some(i);
        }
        if c == b'\\' {
            backslashes += 1;
            continue;
        }
        if c == b'u'
            && backslashes % 2 == 1
            && b.get(i + 1..i + 5)
                .is_some_and(|h| h.iter().all(|&x| x == b'0'))
        {
            return Some(i - 1);
        }
        backslashes = 0;
    }
    None
}

/// The JSON pointer of the first string (value or key) holding a NUL.
fn nul_pointer(v: &Value, at: String) -> Option<String> {
    let esc = |k: &str| {
        k.replace('~', "~0")
            .replace('/', "~1")
            .replace('\0', "\\u0000")
    };
    match v {
        Value::String(s) if s.contains('\0') => Some(at),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_pointer(x, format!("{at}/{i}"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let here = format!("{at}/{}", esc(k));
            if k.contains('\0') {
                Some(here)
            } else {
                nul_pointer(x, here)
            }
        }),
        _ => None,
    }
}

/// An error of poem's own as the JSON error shape.
fn rewrite(e: poem::Error, path: &str, allow: fn(&str) -> Vec<&'static str>) -> Response {
    let status = e.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", format!("no such route: {path}")),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!("{path} takes {}", allow(path).join(", ")),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            format!("{e}; send the body as `Content-Type: application/json`"),
        ),
        StatusCode::UNAUTHORIZED => ("unauthorized", e.to_string()),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", e.to_string()),
        s if s.is_server_error() => {
            tracing::error!("internal error: {e}");
            ("internal", "internal error; the log has the details".into())
        }
        _ => ("bad_request", e.to_string()),
    };
    let mut r = error_response(status, code, message);
    if status == StatusCode::METHOD_NOT_ALLOWED
        && let Ok(v) = HeaderValue::from_str(&allow(path).join(", "))
    {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

/// A response in the JSON error shape.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        code: code.into(),
        message: message.into(),
        errors: vec![],
    };
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(body.to_json_string())
}

/// The methods `spec` declares for the concrete `path`: of the templates that match
/// (`{x}` matches one segment), the most literal one, as the router picks it; HEAD goes
/// with GET, as poem serves it.
pub fn declared_methods(spec: &Value, path: &str) -> Vec<&'static str> {
    const ALL: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let best = spec["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(template, ops)| {
            let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
            let literal = t.iter().filter(|a| !a.starts_with('{')).count();
            (t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(a, b)| a.starts_with('{') || a == b))
            .then_some((literal, ops))
        })
        .max_by_key(|(literal, _)| *literal);
    let declared: Vec<String> = best
        .and_then(|(_, ops)| ops.as_object())
        .into_iter()
        .flatten()
        .map(|(m, _)| m.to_uppercase())
        .collect();
    ALL.iter()
        .copied()
        .filter(|m| {
            declared
                .iter()
                .any(|d| d == m || (*m == "HEAD" && d == "GET"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_and_located_but_escaped_backslashes_are_not() {
        assert!(
            nul_in_body(br#"{"a":"x\\u0000"}"#).is_none(),
            "\\\\u0000 is text"
        );
        let p = nul_in_body(br#"[{"target":"t"},{"target":"a\u0000b"}]"#).unwrap();
        assert!(p.contains("`/1/target`"), "{p}");
        let p = nul_in_body(br#"{"k\u0000":1}"#).unwrap();
        assert!(p.contains("`/k\\u0000`"), "{p}");
        assert!(nul_in_body(b"a,b\n\0,c").unwrap().contains("byte 4"));
        assert!(nul_in_body(br#"{"a":"\\\u0000"}"#).is_some());
        assert!(nul_in_body(br#"{"a":"\u00001"}"#).is_some());
        assert!(nul_in_body(br#"{"a":"\u0001"}"#).is_none());
    }

    #[test]
    fn declared_methods_follow_the_spec_templates() {
        let spec = serde_json::json!({"paths": {
            "/api/v1/users/{id}": {"get": {}, "delete": {}},
            "/api/v1/users/me": {"get": {}},
        }});
        assert_eq!(
            declared_methods(&spec, "/api/v1/users/x"),
            ["GET", "HEAD", "DELETE"]
        );
        assert_eq!(declared_methods(&spec, "/api/v1/users/me"), ["GET", "HEAD"]);
        assert!(declared_methods(&spec, "/api/v1/nope").is_empty());
        assert_eq!(percent_decode("a=%00b"), "a=\0b");
    }
}
