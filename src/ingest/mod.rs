//! The data-manager: takes records from sources, transforms them per source, validates
//! them against the category's current schema (the api's validator), gives each a
//! content id and publishes valid batches to JetStream (`tmidb.data.{category}`);
//! records that fail go to the dead letters (`tmidb.dead.{category}`).
//!
//! Sources ([`sources`]): `http_push` (`POST /ingest/{category}` on the `ingest` port,
//! Bearer token allowed to write the category; a JSON array, NDJSON or CSV), `nats`
//! (`tmidb.ingest.{category}`), `http_poll`, `file` and `exec`. Sources are defined
//! through the api and picked up without a restart (LISTEN `tmidb_sources`).

pub mod http;
pub mod sources;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::api::AppState;
use crate::api::error::{ApiError, Issue};
use crate::api::routes::categories::InsertResult;
use crate::config::Config;
use crate::db::sources::{Source, SourceKind};
use crate::model::transform::Transform;
use crate::model::wire::{Batch, DeadBatch, DeadLetter, WireRecord};
use crate::pipeline::{DEAD_PREFIX, SUBJECT_PREFIX};

/// The data-manager's state.
pub struct Manager {
    /// Database, schemas and token checks (shared with the api's code).
    pub state: Arc<AppState>,
    /// JetStream.
    pub js: async_nats::jetstream::Context,
    /// Pushes in flight (`ingest.max_inflight`).
    pub inflight: tokio::sync::Semaphore,
    /// The defined source (if any) whose transformation applies to pushes and NATS
    /// messages of a category; cleared when sources change.
    implicit: Mutex<HashMap<(String, SourceKind), Option<Source>>>,
}

/// One raw record and where it came from.
#[derive(Debug, Clone)]
pub struct Item {
    /// Line, index or sequence, for dead letters.
    pub position: String,
    /// The record as received.
    pub raw: Value,
}

/// Records transformed and validated, ready to publish.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Schema version used.
    pub schema_version: i32,
    /// Valid records.
    pub records: Vec<WireRecord>,
    /// Invalid ones.
    pub dead: Vec<DeadLetter>,
    /// Why each invalid one was rejected, by item index.
    pub errors: Vec<Issue>,
}

/// Why the data-manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// tmidb.toml.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// PostgreSQL.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// NATS.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The port.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen {
        /// Port.
        port: u16,
        /// Cause.
        source: std::io::Error,
    },
}

impl Manager {
    /// A manager over `state` publishing to `js`.
    pub fn new(state: Arc<AppState>, js: async_nats::jetstream::Context) -> Manager {
        let inflight = tokio::sync::Semaphore::new(state.cfg.ingest_max_inflight);
        Manager {
            state,
            js,
            inflight,
            implicit: Mutex::default(),
        }
    }

    /// The enabled source of `kind` defined for `category`, if any (cached).
    pub async fn implicit_source(
        &self,
        category: &str,
        kind: SourceKind,
    ) -> Result<Option<Source>, ApiError> {
        let key = (category.to_string(), kind);
        if let Some(s) = self.implicit.lock().expect("lock").get(&key) {
            return Ok(s.clone());
        }
        let s = crate::db::sources::implicit(&self.state.pool, category, kind).await?;
        self.implicit.lock().expect("lock").insert(key, s.clone());
        Ok(s)
    }

    /// Forgets cached sources (they changed).
    pub fn sources_changed(&self) {
        self.implicit.lock().expect("lock").clear();
    }

    /// [`prepare`] then [`publish`]; the answer of a push.
    pub async fn submit(
        &self,
        category: &str,
        source: &str,
        transform: &Transform,
        items: Vec<Item>,
    ) -> Result<InsertResult, ApiError> {
        let p = prepare(&self.state, category, source, transform, items).await?;
        publish(&self.js, &self.state.cfg, category, &p).await?;
        Ok(InsertResult {
            accepted: p.records.len() as u64,
            rejected: p.dead.len() as u64,
            schema_version: p.schema_version,
            errors: p.errors,
        })
    }
}

/// Transforms and validates items against the current schema of `category`.
pub async fn prepare(
    state: &AppState,
    category: &str,
    source: &str,
    transform: &Transform,
    items: Vec<Item>,
) -> Result<Prepared, ApiError> {
    let schema = state.schemas.get(&state.pool, category).await?;
    let now = chrono::Utc::now();
    let mut out = Prepared {
        schema_version: schema.version,
        ..Default::default()
    };
    let declared = |f: &str| schema.fields.iter().any(|x| x.name == f);
    for (i, item) in items.into_iter().enumerate() {
        let checked = transform
            .apply(&item.raw, declared)
            .and_then(|v| schema.validate(&v, now));
        match checked {
            Ok(r) => out.records.push(WireRecord {
                id: r.content_id(category),
                target: r.target,
                ts: r.ts,
                values: r.values,
            }),
            Err(ps) => {
                out.errors
                    .extend(ps.iter().map(|p| Issue::at(i, p.clone())));
                out.dead.push(DeadLetter {
                    id: DeadLetter::id_for(category, source, &item.raw),
                    category: category.to_string(),
                    source: source.to_string(),
                    position: item.position,
                    raw: item.raw,
                    reasons: ps,
                    schema_version: schema.version,
                });
            }
        }
    }
    Ok(out)
}

/// Publishes prepared records and dead letters, chunked into messages, and waits
/// for every JetStream acknowledgement: Ok means all of it is stored in JetStream.
/// An error after some chunks were taken leaves those stored; publishing the same
/// records again is safe (content ids, `Nats-Msg-Id`).
pub async fn publish(
    js: &async_nats::jetstream::Context,
    cfg: &Config,
    category: &str,
    p: &Prepared,
) -> Result<(), ApiError> {
    let mut acks = vec![];
    for chunk in p.records.chunks(crate::pipeline::MAX_RECORDS_PER_MESSAGE) {
        let batch = Batch {
            category: category.to_string(),
            schema_version: p.schema_version,
            records: chunk.to_vec(),
        };
        let payload = serde_json::to_vec(&batch).expect("json");
        acks.push(
            send(
                js,
                format!("{SUBJECT_PREFIX}{category}"),
                &batch.msg_id(),
                payload,
            )
            .await?,
        );
    }
    for chunk in p.dead.chunks(crate::pipeline::MAX_RECORDS_PER_MESSAGE) {
        let batch = DeadBatch {
            category: category.to_string(),
            letters: chunk.to_vec(),
        };
        let payload = serde_json::to_vec(&batch).expect("json");
        acks.push(
            send(
                js,
                format!("{DEAD_PREFIX}{category}"),
                &batch.msg_id(),
                payload,
            )
            .await?,
        );
    }
    for ack in acks {
        tokio::time::timeout(Duration::from_secs(10), ack)
            .await
            .map_err(|_| {
                ApiError::unavailable("JetStream did not acknowledge the batch within 10 s")
            })?
            .map_err(|e| refused(cfg, e))?;
    }
    Ok(())
}

async fn send(
    js: &async_nats::jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Vec<u8>,
) -> Result<async_nats::jetstream::context::PublishAckFuture, ApiError> {
    crate::pipeline::publish(js, subject, msg_id, payload)
        .await
        .map_err(|e| ApiError::unavailable(format!("NATS did not take the batch: {e}")))
}

/// The records of a pushed body: a JSON array (default), NDJSON
/// (`application/x-ndjson`), or CSV with a header row (`text/csv`; cells are typed by
/// the category's fields, empty cells are absent).
pub fn parse_body(
    content_type: &str,
    body: &[u8],
    schema: &crate::model::schema::Schema,
    transform: &Transform,
) -> Result<Vec<serde_json::Value>, ApiError> {
    use serde_json::Value;
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(i, l)| serde_json::from_slice(l).map_err(|e| ApiError::bad_request(format!("NDJSON line {}: {e}", i + 1))))
            .collect(),
        "text/csv" => {
            let mut rd = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(body);
            let header: Vec<String> =
                rd.headers().map_err(|e| ApiError::bad_request(format!("CSV header: {e}")))?.iter().map(str::to_string).collect();
            let mut out = vec![];
            for (i, row) in rd.records().enumerate() {
                let row = row.map_err(|e| ApiError::bad_request(format!("CSV row {}: {e}", i + 2)))?;
                let mut obj = serde_json::Map::new();
                for (k, cell) in header.iter().zip(row.iter()) {
                    if cell.is_empty() {
                        continue;
                    }
                    use crate::model::schema::FieldType as T;
                    // Typed by the field the column becomes once renamed.
                    let name = transform.rename.get(k).unwrap_or(k);
                    let kind = schema.fields.iter().find(|f| f.name == *name).map(|f| f.kind);
                    // Cells that do not parse stay text, so validation names the field.
                    let v = match kind {
                        Some(T::Int) => cell.parse::<i64>().map(Value::from).unwrap_or_else(|_| cell.into()),
                        Some(T::Float) => cell.parse::<f64>().map(Value::from).unwrap_or_else(|_| cell.into()),
                        Some(T::Bool) => cell.parse::<bool>().map(Value::from).unwrap_or_else(|_| cell.into()),
                        Some(T::Json) => serde_json::from_str(cell).unwrap_or_else(|_| cell.into()),
                        _ => cell.into(),
                    };
                    obj.insert(k.clone(), v);
                }
                out.push(Value::Object(obj));
            }
            Ok(out)
        }
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body must be a JSON array of records (or NDJSON / CSV with that Content-Type): {e}"))
        }),
    }
}

/// Transforms, validates and publishes one pushed batch.
pub async fn push_batch(
    m: &Manager,
    p: &crate::api::auth::Principal,
    category: &str,
    content_type: &str,
    body: &[u8],
) -> Result<InsertResult, ApiError> {
    let _permit = m.inflight.try_acquire().map_err(|_| {
        ApiError::too_many(
            format!(
                "{} pushes are in flight already; retry in 1 s",
                m.state.cfg.ingest_max_inflight
            ),
            1,
        )
    })?;
    p.require_write(category)?;
    let schema = m.state.schemas.get(&m.state.pool, category).await?;
    let source = m.implicit_source(category, SourceKind::HttpPush).await?;
    let (name, transform) = match &source {
        Some(s) => (s.name.as_str(), s.transform.clone()),
        None => ("http_push", Transform::default()),
    };
    let values = parse_body(content_type, body, &schema, &transform)?;
    let line_based = !content_type.starts_with("application/json");
    let items = values
        .into_iter()
        .enumerate()
        .map(|(i, raw)| Item {
            position: if line_based {
                format!("push item {}", i + 1)
            } else {
                format!("push index {i}")
            },
            raw,
        })
        .collect();
    let prepared = prepare(&m.state, category, name, &transform, items).await?;
    publish(&m.js, &m.state.cfg, category, &prepared).await?;
    let rejected = prepared.dead.len() as u64;
    if prepared.records.is_empty() && rejected > 0 {
        return Err(ApiError::invalid(
            format!("all {rejected} records were rejected (kept as dead letters)"),
            prepared.errors,
        ));
    }
    Ok(InsertResult {
        accepted: prepared.records.len() as u64,
        rejected,
        schema_version: prepared.schema_version,
        errors: prepared.errors,
    })
}

/// A refused publish: a full backlog is 429 (the client retries; nothing was accepted),
/// anything else 503.
fn refused(cfg: &Config, e: impl std::fmt::Display) -> ApiError {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("maximum") {
        ApiError::too_many(
            format!(
                "the pipeline is saturated: {} bytes wait for the data-consumers (ingest.max_backlog_bytes); retry in 1 s",
                cfg.ingest_max_backlog_bytes
            ),
            1,
        )
    } else {
        ApiError::unavailable(format!("JetStream refused the batch: {text}"))
    }
}

/// Runs the data-manager of `home` until SIGTERM.
pub async fn run(home: &std::path::Path) -> Result<(), IngestError> {
    let cfg = Config::load(home)?;
    let pool = crate::db::connect(&cfg, 8).await?;
    let storage = crate::db::storage(&pool).await;
    let (_client, js, _stream) = crate::pipeline::connect(&cfg, "data-manager").await?;
    let ingest = crate::pipeline::ingest_consumer(&js).await?;
    let listener = crate::db::listen(
        &cfg,
        &[crate::db::sources::CHANNEL, crate::db::categories::CHANNEL],
    )
    .await?;
    let port = cfg.ports["ingest"];
    let state = Arc::new(AppState {
        pool,
        cfg,
        storage,
        throttle_user: crate::api::auth::Throttle::new(5, Duration::from_secs(300)),
        throttle_addr: crate::api::auth::Throttle::new(50, Duration::from_secs(300)),
        partitions: Default::default(),
        schemas: Default::default(),
        files: None,
        nats: None,
    });
    let m = Arc::new(Manager::new(state, js));
    tokio::spawn(sources::run_nats(m.clone(), ingest));
    tokio::spawn(sources::supervise(m.clone(), listener));
    let app = http::app(m);
    let acceptor = poem::listener::Listener::into_acceptor(poem::listener::TcpListener::bind((
        "127.0.0.1",
        port,
    )))
    .await
    .map_err(|source| IngestError::Listen { port, source })?;
    tracing::info!(
        port,
        "data-manager accepting pushes on http://127.0.0.1:{port}/ingest/CATEGORY"
    );
    let _ = crate::supervisor::notify::notify_parent("READY=1\nSTATUS=accepting pushes");
    poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            app,
            crate::api::shutdown_signal(),
            Some(Duration::from_secs(5)),
        )
        .await
        .map_err(|source| IngestError::Listen { port, source })
}

#[cfg(test)]
mod tests {
    use super::parse_body;
    use crate::model::schema::{Field, FieldType, Schema};
    use crate::model::transform::Transform;
    use serde_json::json;

    fn schema() -> Schema {
        let f = |n: &str, k| Field {
            name: n.into(),
            kind: k,
            required: false,
            min: None,
            max: None,
            enum_values: None,
            max_length: None,
            unit: None,
            description: None,
        };
        Schema {
            category: "s".into(),
            version: 1,
            fields: vec![
                f("n", FieldType::Int),
                f("v", FieldType::Float),
                f("ok", FieldType::Bool),
                f("note", FieldType::Text),
            ],
        }
    }

    #[test]
    fn csv_cells_are_typed_by_the_schema_and_ndjson_lines_parsed() {
        let csv = b"target,ts,n,v,ok,note\nd1,2026-01-01T00:00:00Z,3,1.5,true,\"a, b\"\nd2,,x,,,\n";
        let rows = parse_body(
            "text/csv; charset=utf-8",
            csv,
            &schema(),
            &Transform::default(),
        )
        .unwrap();
        assert_eq!(
            rows[0],
            json!({"target": "d1", "ts": "2026-01-01T00:00:00Z", "n": 3, "v": 1.5, "ok": true, "note": "a, b"})
        );
        assert_eq!(
            rows[1],
            json!({"target": "d2", "n": "x"}),
            "an unparsable cell stays text for validation to name"
        );
        let nd = b"{\"target\":\"a\"}\n\n{\"target\":\"b\"}\n";
        assert_eq!(
            parse_body("application/x-ndjson", nd, &schema(), &Transform::default())
                .unwrap()
                .len(),
            2
        );
        let e = parse_body(
            "application/x-ndjson",
            b"{\"target\":1}\n{oops\n",
            &schema(),
            &Transform::default(),
        )
        .unwrap_err();
        assert!(format!("{e:?}").contains("NDJSON line 2"), "{e:?}");
        assert!(
            parse_body(
                "application/json",
                b"{\"not\":\"an array\"}",
                &schema(),
                &Transform::default()
            )
            .is_err()
        );
    }
}
