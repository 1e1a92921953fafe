//! The `api` service: REST API (poem-openapi, spec at `/api/openapi.json`, Swagger UI at
//! `/api/docs`), sessions and Bearer tokens, categories, records and files.
//!
//! [`build_app`] assembles routes over an [`AppState`]; [`serve`] binds, tells the
//! supervisor it is ready (sd_notify) and runs until SIGTERM. The OpenAPI document is
//! generated from the route definitions; `openapi/tmidb.json` is its committed copy.

pub mod auth;
pub mod boundary;
pub mod error;
pub mod export;
pub mod files;
pub mod live;
pub mod names;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use poem::listener::TcpListener;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;

use crate::config::Config;
use crate::db::{DbError, Storage};

/// Shared state of every request.
pub struct AppState {
    /// Database pool.
    pub pool: sqlx::PgPool,
    /// Effective settings.
    pub cfg: Config,
    /// Time-series storage in use.
    pub storage: Storage,
    /// Failed logins per user name (5 per 5 minutes).
    pub throttle_user: auth::Throttle,
    /// Failed logins per client address (50 per 5 minutes: many users share one).
    pub throttle_addr: auth::Throttle,
    /// Record-table partitions known to exist.
    pub partitions: crate::db::categories::PartitionCache,
    /// Current category schemas.
    pub schemas: crate::db::categories::SchemaCache,
    /// SeaweedFS file storage (None: not configured).
    pub files: Option<files::FileStore>,
    /// JetStream (replaying dead letters, live streams, integrity); None in the
    /// data-manager, which holds its own.
    pub nats: Option<async_nats::jetstream::Context>,
}

impl AppState {
    /// JetStream, or 503 when this process has none.
    pub fn jetstream(&self) -> error::ApiResult<&async_nats::jetstream::Context> {
        self.nats
            .as_ref()
            .ok_or_else(|| error::ApiError::unavailable("NATS is not connected"))
    }
}

/// Title and version of the OpenAPI document.
pub const TITLE: &str = "tmiDB API";

/// The OpenAPI service (routes + document), without state: the spec does not need one.
pub fn service() -> OpenApiService<routes::Api, ()> {
    OpenApiService::new(routes::api(), TITLE, env!("CARGO_PKG_VERSION"))
        .description(
            "REST API of tmiDB-Core: auth, users, categories, records, files and system control. Every error is `ErrorBody` JSON; a 405 carries `Allow`, a 429 or 503 `Retry-After`. Strings must not contain NUL (`\\u0000`, `%00`): PostgreSQL cannot store one, so such a request is 400.",
        )
        .server("/")
}

/// The OpenAPI document as served at `/api/openapi.json` and committed in
/// `openapi/tmidb.json`: poem-openapi's, with what its derives cannot say added by
/// [`refine`].
pub fn spec_json() -> String {
    static SPEC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| refine(&service().spec())).clone()
}

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

/// What the api's document promises, as its boundary enforces it.
fn contract() -> &'static boundary::Contract {
    static CONTRACT: std::sync::OnceLock<boundary::Contract> = std::sync::OnceLock::new();
    CONTRACT.get_or_init(|| boundary::Contract::new(&spec_json()))
}

/// Swagger UI's page, which embeds the document it shows: the refined one.
fn docs_html(api: &OpenApiService<routes::Api, ()>) -> String {
    api.swagger_ui_html().replacen(&api.spec(), &spec_json(), 1)
}

/// The whole HTTP application over `state`.
pub fn build_app(state: Arc<AppState>) -> impl poem::Endpoint {
    let api = service();
    let docs = docs_html(&api);
    // Compile the body validators now: a document they cannot read fails the start,
    // not the first request.
    contract();
    Route::new()
        .nest("/", api)
        .at(
            "/api/docs",
            poem::endpoint::make_sync(move |_| poem::web::Html(docs.clone())),
        )
        .at(
            "/api/openapi.json",
            poem::endpoint::make_sync(|_| {
                poem::Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(spec_json())
            }),
        )
        .data(state)
        .around(|ep, req| boundary::guard(ep, req, contract()))
        .with(poem::middleware::CatchPanic::new().with_handler(|_| {
            error::ErrorBody::new("internal", "internal error; the log has the details")
                .response(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
        }))
}

/// Why the api could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// tmidb.toml is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database is unreachable.
    #[error(transparent)]
    Db(#[from] DbError),
    /// NATS is unreachable.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen {
        /// Port.
        port: u16,
        /// Cause.
        source: std::io::Error,
    },
}

/// Runs the api of `home` until SIGTERM or SIGINT.
pub async fn serve(home: &std::path::Path) -> Result<(), ServeError> {
    let cfg = Config::load(home)?;
    let pool = crate::db::connect(&cfg, 16).await?;
    let storage = crate::db::storage(&pool).await;
    let port = cfg.ports["api"];
    let max_body = cfg.max_upload_bytes + (1 << 20);
    let files = files::FileStore::new(&cfg);
    let (_nats, js, _) = crate::pipeline::connect(&cfg, "api").await?;
    let state = Arc::new(AppState {
        pool,
        cfg,
        storage,
        throttle_user: auth::Throttle::new(5, Duration::from_secs(300)),
        throttle_addr: auth::Throttle::new(50, Duration::from_secs(300)),
        partitions: Default::default(),
        schemas: Default::default(),
        files,
        nats: Some(js),
    });
    // Schema changes made through another api instance reach this one's cache too.
    tokio::spawn(forget_changed_schemas(state.clone()));
    if let Err(e) = auth::bootstrap_admin(&state).await {
        tracing::error!("cannot create the first admin: {e:?}");
    }
    let app = build_app(state).around(move |ep, req| async move {
        // Refuse oversized uploads from their Content-Length, before a byte is spooled.
        let len = req
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        if req.method() == poem::http::Method::POST
            && req.uri().path() == "/api/v1/files"
            && len.is_some_and(|l| l > max_body)
        {
            let e = error::ApiError::too_large(format!(
                "the upload is larger than api.max_upload_bytes ({} bytes)",
                max_body - (1 << 20)
            ));
            return Ok(poem::IntoResponse::into_response(e));
        }
        ep.call(req).await.map(poem::IntoResponse::into_response)
    });
    let acceptor = poem::listener::Listener::into_acceptor(TcpListener::bind(("127.0.0.1", port)))
        .await
        .map_err(|source| ServeError::Listen { port, source })?;
    tracing::info!(
        port,
        "api listening on http://127.0.0.1:{port} (docs: /api/docs)"
    );
    let _ = crate::supervisor::notify::notify_parent("READY=1\nSTATUS=serving");
    poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown_signal(), Some(Duration::from_secs(5)))
        .await
        .map_err(|source| ServeError::Listen { port, source })
}

async fn forget_changed_schemas(state: Arc<AppState>) {
    let Ok(mut l) = crate::db::listen(&state.cfg, &[crate::db::categories::CHANNEL]).await else {
        return;
    };
    while let Ok(n) = l.recv().await {
        state.schemas.forget(n.payload());
    }
}

/// Resolves on SIGTERM or SIGINT (then tells the supervisor STOPPING=1).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = crate::supervisor::notify::notify_parent("STOPPING=1");
}

/// `file` (relative to the package) holds `spec`; with `TMIDB_WRITE_OPENAPI` set
/// (`make openapi`), writes it there instead.
#[cfg(test)]
pub(crate) fn assert_committed(file: &str, spec: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if std::env::var_os("TMIDB_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, spec).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == spec,
        "{file} differs from the code; run `make openapi` and commit it"
    );
}

#[cfg(test)]
mod tests {
    /// The committed spec is what the code generates; `TMIDB_WRITE_OPENAPI=1` (what
    /// `make openapi` sets) rewrites it.
    #[test]
    fn swagger_ui_shows_the_refined_document() {
        let html = super::docs_html(&super::service());
        assert!(html.contains(&super::spec_json()));
        assert!(super::spec_json().contains("\"additionalProperties\": false"));
    }

    #[test]
    fn committed_openapi_spec_matches_the_code() {
        super::assert_committed("openapi/tmidb.json", &super::spec_json());
    }
}
