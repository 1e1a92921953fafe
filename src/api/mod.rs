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
pub mod routes;
pub mod schema;

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
            "REST API of tmiDB-Core: auth, users, categories, records, files and system control.",
        )
        .server("/")
}

/// The OpenAPI document as committed in `openapi/tmidb.json`.
pub fn spec_json() -> String {
    service().spec()
}

/// The methods the api declares for a concrete path (the `Allow` of a 405).
fn allowed_methods(path: &str) -> Vec<&'static str> {
    static SPEC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let spec = SPEC.get_or_init(|| serde_json::from_str(&spec_json()).expect("spec"));
    boundary::declared_methods(spec, path)
}

/// The whole HTTP application over `state`.
pub fn build_app(state: Arc<AppState>) -> impl poem::Endpoint {
    let api = service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    Route::new()
        .nest("/", api)
        .nest("/api/docs", docs)
        .at("/api/openapi.json", spec)
        .data(state)
        .around(|ep, req| boundary::guard(ep, req, allowed_methods))
        .with(poem::middleware::CatchPanic::new().with_handler(|_| {
            boundary::error_response(
                poem::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the log has the details",
            )
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
    let (_nats, js, _) = crate::pipeline::connect(&cfg).await?;
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
            return Ok(boundary::error_response(
                poem::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the upload is larger than api.max_upload_bytes ({} bytes)",
                    max_body - (1 << 20)
                ),
            ));
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

#[cfg(test)]
mod tests {
    /// The committed spec is what the code generates; `TMIDB_WRITE_OPENAPI=1` (what
    /// `make openapi` sets) rewrites it.
    #[test]
    fn committed_openapi_spec_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/tmidb.json");
        let spec = super::spec_json();
        if std::env::var_os("TMIDB_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &spec).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == spec,
            "openapi/tmidb.json differs from the code; run `make openapi` and commit it"
        );
    }
}
