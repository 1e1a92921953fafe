//! What every HTTP request of the api and the data-manager passes through, around the
//! routes: one mechanism for input hygiene and for the error shape, instead of checks
//! scattered over the routes.
//!
//! - Before a route: a NUL character (`\u0000` in JSON, `%00` in the query) is refused
//!   with 400 naming where it is. PostgreSQL text and jsonb cannot hold one, so a
//!   request carrying it could never be stored; refusing it here means no route can
//!   fail on it later with a 500.
//! - Before a route: a JSON body is checked against its operation's schema in the
//!   served OpenAPI document ([`Contract`]), so the server takes exactly what the
//!   document says: poem-openapi alone would turn `false` into the string "false",
//!   take `null` for an optional or defaulted property, and a missing `Value` as null.
//! - After a route: every error poem or poem-openapi produced itself (an unknown path,
//!   an undeclared method, a body that does not parse, a missing `Content-Type`) is
//!   rewritten into the one JSON error shape ([`ErrorBody`]); a 405 carries `Allow`.
//!   Errors the routes return are already in that shape and pass unchanged.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use serde_json::Value;

use super::error::{ErrorBody, Issue};

/// The largest JSON body the NUL check buffers; larger bodies (file uploads are not
/// JSON) pass unchecked to the route, whose own size limits apply.
const MAX_CHECKED_BODY: usize = 64 << 20;

/// Runs `ep` with the hygiene check before and the error rewrite after; `allow` gives
/// the methods declared for a path (for 405's `Allow`).
pub async fn guard<E: Endpoint>(
    ep: E,
    mut req: Request,
    contract: &'static Contract,
) -> poem::Result<Response> {
    if let Some(problem) = nul_in_query(&req) {
        return Ok(ErrorBody::new("bad_request", problem).response(StatusCode::BAD_REQUEST));
    }
    if is_textual(&req) {
        let bytes = req.take_body().into_bytes().await?;
        if bytes.len() <= MAX_CHECKED_BODY
            && let Some(problem) = nul_in_body(&bytes)
        {
            return Ok(ErrorBody::new("bad_request", problem).response(StatusCode::BAD_REQUEST));
        }
        if is_json(&req)
            && let Ok(body) = serde_json::from_slice::<Value>(&bytes)
            && let Some((secured, issues)) =
                contract.check_body(req.method().as_str(), req.uri().path(), &body)
        {
            let refusal = BodyRefused(issues);
            if !secured {
                return Ok(refusal.error().into_response());
            }
            // Who asks comes first: a caller without credentials learns 401, not how
            // the body is wrong. The route's authentication answers with this once it
            // has accepted the credentials.
            req.extensions_mut().insert(refusal);
        }
        req.set_body(bytes);
    }
    json_errors(ep, req, contract).await
}

/// Runs `ep` and rewrites poem's own errors into the JSON error shape (what [`guard`]
/// does after the route; the data-manager's push endpoint uses it alone, because there
/// a NUL is one record's problem: that record becomes a dead letter, the rest is
/// stored).
pub async fn json_errors<E: Endpoint>(
    ep: E,
    req: Request,
    contract: &'static Contract,
) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    match ep.call(req).await {
        Ok(r) => Ok(r.into_response()),
        Err(e) if e.is_from_response() => Ok(e.into_response()),
        Err(e) => Ok(rewrite(e, &path, contract)),
    }
}

/// A JSON body that breaks its operation's schema, refused once the caller is
/// authenticated (see [`guard`]).
#[derive(Clone, Debug)]
pub struct BodyRefused(Vec<Issue>);

impl BodyRefused {
    /// The 400 it answers with; the message names the first problem.
    pub fn error(&self) -> super::error::ApiError {
        let first = self
            .0
            .first()
            .map(|i| format!(": {} {}", i.field.as_deref().unwrap_or("/"), i.reason))
            .unwrap_or_default();
        super::error::ApiError::invalid(
            format!(
                "the body does not match the operation's schema in the OpenAPI document{first}"
            ),
            self.0.clone(),
        )
    }
}

fn is_json(req: &Request) -> bool {
    req.header(header::CONTENT_TYPE)
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("json")
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
fn rewrite(e: poem::Error, path: &str, contract: &Contract) -> Response {
    let allow = |p: &str| contract.methods(p);
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
    let mut r = ErrorBody::new(code, message).response(status);
    if status == StatusCode::METHOD_NOT_ALLOWED
        && let Ok(v) = HeaderValue::from_str(&allow(path).join(", "))
    {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

/// What a served OpenAPI document promises, as the boundary enforces it: the methods
/// of each path (for 405's `Allow`) and the schema of each JSON request body.
pub struct Contract {
    spec: Value,
    /// (method, path template, whether it needs credentials, validator of its JSON
    /// body).
    bodies: Vec<(String, String, bool, jsonschema::Validator)>,
}

impl Contract {
    /// The contract of the document `spec` (JSON text).
    pub fn new(spec: &str) -> Contract {
        let spec: Value = serde_json::from_str(spec).expect("the document is JSON");
        let components = json_schema(&spec["components"]);
        let mut bodies = vec![];
        for (template, ops) in spec["paths"].as_object().into_iter().flatten() {
            for (method, op) in ops.as_object().into_iter().flatten() {
                let Some(media) = op["requestBody"]["content"].as_object() else {
                    continue;
                };
                let Some((_, m)) = media.iter().find(|(ct, _)| ct.contains("json")) else {
                    continue;
                };
                // The body's schema, with the document's components to resolve `$ref`s in.
                let root = serde_json::json!({
                    "allOf": [json_schema(&m["schema"])],
                    "components": components,
                });
                let v = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft4)
                    .should_validate_formats(false)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("{method} {template}: {e}"));
                let secured = op.get("security").is_some();
                bodies.push((method.to_uppercase(), template.clone(), secured, v));
            }
        }
        Contract { spec, bodies }
    }

    /// The methods declared for the concrete `path` (HEAD goes with GET, as poem
    /// serves it).
    pub fn methods(&self, path: &str) -> Vec<&'static str> {
        declared_methods(&self.spec, path)
    }

    /// Where and why `body` breaks the schema of `method path`'s request body, and
    /// whether the operation needs credentials; None when the body fits, or the
    /// operation takes no JSON.
    pub fn check_body(&self, method: &str, path: &str, body: &Value) -> Option<(bool, Vec<Issue>)> {
        let t = best_template(self.bodies.iter().map(|(_, t, _, _)| t.as_str()), path)?;
        let (_, _, secured, v) = self
            .bodies
            .iter()
            .find(|(m, tt, _, _)| m == method && tt == t)?;
        let issues: Vec<Issue> = v
            .iter_errors(body)
            .take(20)
            .map(|e| {
                let at = e.instance_path().to_string();
                Issue {
                    index: None,
                    field: Some(if at.is_empty() { "/".into() } else { at }),
                    reason: e.to_string(),
                }
            })
            .collect();
        (!issues.is_empty()).then_some((*secured, issues))
    }
}

/// An OpenAPI 3.0 schema as JSON Schema (draft 4): `nullable: true` becomes a `null`
/// alternative, and a `readOnly` property is not required of a request.
fn json_schema(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(json_schema).collect()),
        Value::Object(m) => {
            let mut out: serde_json::Map<String, Value> =
                m.iter().map(|(k, x)| (k.clone(), json_schema(x))).collect();
            if let (Some(Value::Array(req)), Some(Value::Object(props))) =
                (m.get("required"), m.get("properties"))
            {
                let keep: Vec<Value> = req
                    .iter()
                    .filter(|r| {
                        r.as_str()
                            .and_then(|r| props.get(r))
                            .is_none_or(|p| p.get("readOnly") != Some(&Value::Bool(true)))
                    })
                    .cloned()
                    .collect();
                out.insert("required".into(), Value::Array(keep));
            }
            if out.remove("nullable") == Some(Value::Bool(true)) {
                return match out.remove("type") {
                    Some(Value::String(t)) => {
                        out.insert("type".into(), serde_json::json!([t, "null"]));
                        Value::Object(out)
                    }
                    _ => serde_json::json!({"anyOf": [{"type": "null"}, Value::Object(out)]}),
                };
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Of the `templates` that match the concrete `path` (`{x}` matches one segment), the
/// most literal one, as the router picks it.
fn best_template<'a>(templates: impl Iterator<Item = &'a str>, path: &str) -> Option<&'a str> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    templates
        .filter_map(|template| {
            let t: Vec<&str> = template.trim_end_matches('/').split('/').collect();
            let literal = t.iter().filter(|a| !a.starts_with('{')).count();
            (t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(a, b)| a.starts_with('{') || a == b))
            .then_some((literal, template))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, t)| t)
}

/// The methods `spec` declares for the concrete `path` (see `best_template`); HEAD
/// goes with GET, as poem serves it.
pub fn declared_methods(spec: &Value, path: &str) -> Vec<&'static str> {
    const ALL: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let paths = spec["paths"].as_object();
    let best = best_template(
        paths.into_iter().flat_map(|p| p.keys().map(String::as_str)),
        path,
    )
    .and_then(|t| paths.and_then(|p| p.get(t)));
    let declared: Vec<String> = best
        .and_then(|ops| ops.as_object())
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
    fn bodies_are_held_to_the_document() {
        let spec = serde_json::json!({
            "paths": {"/things/{id}": {"put": {"requestBody": {"content": {
                "application/json; charset=utf-8": {"schema": {"$ref": "#/components/schemas/Thing"}}
            }}}}},
            "components": {"schemas": {"Thing": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {
                    "id": {"type": "string", "readOnly": true},
                    "name": {"type": "string"},
                    "note": {"type": "string", "nullable": true},
                    "kind": {"allOf": [{"$ref": "#/components/schemas/Kind"}], "nullable": true},
                },
            }, "Kind": {"type": "string", "enum": ["a", "b"]}}},
        });
        let c = Contract::new(&spec.to_string());
        let check = |b: Value| {
            c.check_body("PUT", "/things/7", &b)
                .map(|(_, i)| i)
                .unwrap_or_default()
        };
        assert!(check(serde_json::json!({"name": "x", "note": null, "kind": null})).is_empty());
        assert!(check(serde_json::json!({"name": "x", "kind": "a"})).is_empty());
        let i = check(serde_json::json!({"name": false}));
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].field.as_deref(), Some("/name"));
        assert!(i[0].reason.contains("string"), "{i:?}");
        assert_eq!(
            check(serde_json::json!({"note": "x"}))[0].field.as_deref(),
            Some("/")
        );
        assert!(!check(serde_json::json!({"name": "x", "kind": "c"})).is_empty());
        assert!(
            c.check_body("POST", "/things/7", &serde_json::json!(1))
                .is_none()
        );
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
