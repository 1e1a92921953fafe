//! The HTTP layer the api and the data-manager share: error answers ([`error`]),
//! checked names ([`names`]), the boundary that answers every rejection as JSON and
//! holds requests to the document ([`boundary`]), Bearer authentication ([`bearer`]),
//! what taking records answers ([`intake`]), the refinement of generated OpenAPI
//! documents ([`refine`]).
//!
//! It knows the model and the database, never a service: `api` and `ingest` build on
//! it, and it imports neither.

pub mod bearer;
pub mod boundary;
pub mod error;
pub mod intake;
pub mod names;

/// Adds to a generated document what the derives cannot state:
/// - a multipart form takes no fields but its declared ones (`additionalProperties:
///   false`; the forms are `deny_unknown_fields`);
/// - an optional property without a default of a request body takes `null` as
///   "absent" (poem-openapi parses `Option<T>` so): `nullable: true`;
/// - links from each 201 to the operations on what it created, for clients and
///   stateful testers to follow (`link_created`).
pub fn refine(spec: &str) -> String {
    use serde_json::{Value, json};
    let mut doc: Value = serde_json::from_str(spec).expect("poem-openapi writes JSON");
    let mut requested = std::collections::BTreeSet::new();
    for op in operations_mut(&mut doc) {
        if let Some(body) = op.get("requestBody") {
            collect_refs(body, &mut requested);
        }
        if let Some(form) = op
            .pointer_mut("/requestBody/content/multipart~1form-data/schema")
            .and_then(|s| s.as_object_mut())
        {
            form.insert("additionalProperties".into(), false.into());
        }
    }
    // Schemas reachable from a request body, transitively.
    let schemas = doc["components"]["schemas"].clone();
    let mut todo: Vec<String> = requested.iter().cloned().collect();
    while let Some(n) = todo.pop() {
        let mut found = std::collections::BTreeSet::new();
        if let Some(s) = schemas.get(&n) {
            collect_refs(s, &mut found);
        }
        for f in found {
            if requested.insert(f.clone()) {
                todo.push(f);
            }
        }
    }
    for name in &requested {
        let Some(s) = doc.pointer_mut(&format!("/components/schemas/{name}")) else {
            continue;
        };
        let required: Vec<Value> = s
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let properties = s.get_mut("properties").and_then(Value::as_object_mut);
        for (k, p) in properties.into_iter().flatten() {
            if required.contains(&Value::from(k.as_str())) || p.get("default").is_some() {
                continue;
            }
            if let Some(r) = p.get("$ref").cloned() {
                // A $ref takes no siblings in OpenAPI 3.0.
                *p = json!({"allOf": [{"$ref": r}], "nullable": true});
            } else {
                p["nullable"] = true.into();
            }
        }
    }
    stored_media_types(&mut doc);
    link_created(&mut doc);
    serde_json::to_string_pretty(&doc).expect("json")
}

/// A response that sets its own `Content-Type` (a downloaded file has the type it was
/// stored with) is any media type, `*/*`; OpenAPI ignores a declared Content-Type
/// header, so it goes.
fn stored_media_types(doc: &mut serde_json::Value) {
    for r in operations_mut(doc)
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|r| r.values_mut())
    {
        let Some(headers) = r.get_mut("headers").and_then(|h| h.as_object_mut()) else {
            continue;
        };
        let Some(ct) = headers
            .keys()
            .find(|k| k.eq_ignore_ascii_case("content-type"))
            .cloned()
        else {
            continue;
        };
        headers.remove(&ct);
        if let Some(content) = r.get_mut("content").and_then(|c| c.as_object_mut()) {
            let schemas: Vec<serde_json::Value> = content.values().cloned().collect();
            content.clear();
            if let Some(schema) = schemas.into_iter().next() {
                content.insert("*/*".into(), schema);
            }
        }
    }
}

/// Every operation object of the document.
fn operations_mut(doc: &mut serde_json::Value) -> impl Iterator<Item = &mut serde_json::Value> {
    doc.get_mut("paths")
        .and_then(|p| p.as_object_mut())
        .into_iter()
        .flat_map(|p| p.values_mut())
        .filter_map(|p| p.as_object_mut())
        .flat_map(|p| p.values_mut())
}

/// The component schema names `v` refers to.
fn collect_refs(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(|r| r.as_str())
                && let Some(n) = r.strip_prefix("#/components/schemas/")
            {
                out.insert(n.to_string());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// For each `POST C` answering 201, a link to every operation under `C/{p}`: `{p}`
/// is the created object's `name` when the parameter is `name`, else its `id`.
fn link_created(doc: &mut serde_json::Value) {
    let paths: Vec<(String, Vec<(String, String)>)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(p, ops)| {
            let ops = ops
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, op)| {
                    let id = op["operationId"].as_str()?.to_string();
                    Some((id, p.clone()))
                })
                .collect();
            (p.clone(), ops)
        })
        .collect();
    for (collection, _) in &paths {
        let prefix = format!("{collection}/{{");
        let mut links = serde_json::Map::new();
        for (path, ops) in &paths {
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            let param = rest.split('}').next().unwrap_or_default();
            let field = if param == "name" { "name" } else { "id" };
            for (op_id, _) in ops {
                links.insert(
                    op_id.clone(),
                    serde_json::json!({
                        "operationId": op_id,
                        "parameters": {param: format!("$response.body#/{field}")},
                    }),
                );
            }
        }
        if links.is_empty() {
            continue;
        }
        let pointer = format!(
            "/paths/{}/post/responses/201",
            collection.replace('/', "~1")
        );
        if let Some(created) = doc.pointer_mut(&pointer).and_then(|r| r.as_object_mut()) {
            created.insert("links".into(), links.into());
        }
    }
}
