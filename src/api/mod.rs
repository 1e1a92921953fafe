//! The `api` service: two front-ends over one domain. The REST API ([`routes`],
//! poem-openapi, spec at `/api/openapi.json`, Swagger UI at `/api/docs`) and the web
//! console ([`console`]) both call the modules that own each resource and check the
//! caller's principal: [`records`], [`categories`], [`dead_letters`], [`sources`],
//! [`alerts`], [`files`], [`users`], [`session`], [`tokens`], [`units`] (the
//! supervisor's) and [`overview`] (the dashboard's figures).
//!
//! [`build_app`] assembles routes over an [`AppState`]; [`serve`] binds, tells the
//! supervisor it is ready (sd_notify) and runs until SIGTERM. The OpenAPI document is
//! generated from the route definitions; `openapi/tmidb.json` is its committed copy.

pub mod alerts;
pub mod auth;
pub mod categories;
pub mod console;
pub mod dead_letters;
pub mod export;
pub mod files;
pub mod live;
pub mod overview;
pub mod records;
pub mod routes;
pub mod session;
pub mod sources;
pub mod tokens;
pub mod units;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;

use crate::config::Config;
use crate::db::Storage;
use crate::web::{boundary, error, refine};

/// Shared state of every request.
pub struct AppState {
    /// Database pool.
    pub pool: sqlx::PgPool,
    /// Record reads (pages, newest, latest, aggregation, export): the standby of
    /// `[postgresql] read_address` when set (it may lag by the replication delay), else
    /// `pool`.
    pub reads: sqlx::PgPool,
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

/// What the api's document promises, as its boundary enforces it.
fn contract() -> &'static boundary::Contract {
    static CONTRACT: std::sync::OnceLock<boundary::Contract> = std::sync::OnceLock::new();
    CONTRACT.get_or_init(|| boundary::Contract::new(&spec_json()))
}

/// Swagger UI's page, which embeds the document it shows: the refined one.
fn docs_html(api: &OpenApiService<routes::Api, ()>) -> String {
    api.swagger_ui_html().replacen(&api.spec(), &spec_json(), 1)
}

/// Whether `path` is the REST API's (its document's paths, Swagger UI): everything
/// else is the console's.
fn is_rest(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/healthz" || path == "/readyz"
}

/// The REST API and the console side by side, chosen by path ([`is_rest`]): each keeps
/// its own error shape (JSON for the API, HTML pages for the console).
struct Split<R, C, M> {
    rest: R,
    console: C,
    /// `GET /metrics` (Prometheus; no credentials, like the probes).
    metrics: M,
}

impl<R: Endpoint, C: Endpoint, M: Endpoint> Endpoint for Split<R, C, M> {
    type Output = poem::Response;

    async fn call(&self, req: poem::Request) -> poem::Result<poem::Response> {
        if req.uri().path() == "/metrics" {
            self.metrics
                .call(req)
                .await
                .map(poem::IntoResponse::into_response)
        } else if is_rest(req.uri().path()) {
            self.rest
                .call(req)
                .await
                .map(poem::IntoResponse::into_response)
        } else {
            self.console
                .call(req)
                .await
                .map(poem::IntoResponse::into_response)
        }
    }
}

/// The whole HTTP application over `state`: the REST API under `/api` (and the probes),
/// the web console everywhere else.
pub fn build_app(state: Arc<AppState>) -> impl poem::Endpoint {
    let api = service();
    let docs = docs_html(&api);
    // Compile the body validators now: a document they cannot read fails the start,
    // not the first request.
    contract();
    let rest = Route::new()
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
        .around(|ep, req| boundary::guard(ep, req, contract()));
    let metrics = crate::metrics::endpoint(state.pool.clone(), None);
    Split {
        rest,
        console: console::routes(),
        metrics,
    }
    .around(crate::metrics::track_http)
    .data(state.pool.clone())
    .data(state)
    .with(poem::middleware::CatchPanic::new().with_handler(|_| {
        error::ErrorBody::new("internal", "internal error; the log has the details")
            .response(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
    }))
}

/// Runs the api of `home` until SIGTERM or SIGINT.
pub async fn serve(home: &std::path::Path) -> Result<(), crate::service::StartError> {
    let cfg = Config::load(home)?;
    let pool = crate::db::connect(&cfg, 16).await?;
    let storage = crate::db::storage(&pool).await;
    let port = cfg.ports["api"];
    let (address, host) = (cfg.listen_address, cfg.connect_host());
    let max_body = cfg.max_upload_bytes + (1 << 20);
    let files = files::FileStore::new(&cfg);
    let (_nats, js, _) = crate::pipeline::connect(&cfg, "api").await?;
    let reads = match crate::db::connect_read(&cfg, 16).await? {
        Some(standby) => {
            tracing::info!(standby = ?cfg.endpoints.postgresql_read, "record reads go to the standby");
            standby
        }
        None => pool.clone(),
    };
    let state = Arc::new(AppState {
        reads,
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
    let follower = state.clone();
    tokio::spawn(async move { follower.schemas.follow(&follower.cfg).await });
    if let Err(e) = auth::bootstrap_admin(&state).await {
        tracing::error!("cannot create the first admin: {e:?}");
    }
    let app = build_app(state).around(move |ep, req| async move {
        // Refuse oversized uploads from their Content-Length, before a byte is spooled.
        let len = req
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        let uploads = ["/api/v1/files", "/files"];
        if req.method() == poem::http::Method::POST
            && uploads.contains(&req.uri().path())
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
    crate::service::serve_http(
        address,
        port,
        app,
        "serving",
        &format!("api listening on http://{host}:{port} (docs: /api/docs)"),
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn swagger_ui_shows_the_refined_document() {
        let html = super::docs_html(&super::service());
        assert!(html.contains(&super::spec_json()));
        assert!(super::spec_json().contains("\"additionalProperties\": false"));
    }

    /// The committed spec is what the code generates; `TMIDB_BLESS=1` (what
    /// `make openapi` sets) rewrites it.
    #[test]
    fn committed_openapi_spec_matches_the_code() {
        crate::golden::assert(
            "openapi/tmidb.json",
            super::spec_json().as_bytes(),
            "run `make openapi` and commit it",
        );
    }
}
