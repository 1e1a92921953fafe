//! The data-manager: takes records from sources, transforms them per source, validates
//! them against the category's current schema (the model's one validator), gives each a
//! content id and publishes valid batches to JetStream (`tmidb.data.{category}`);
//! records that fail go to the dead letters (`tmidb.dead.{category}`).
//!
//! Sources ([`sources`]): `http_push` (`POST /ingest/{category}` on the `ingest` port,
//! Bearer token allowed to write the category; a JSON array, NDJSON or CSV), `nats`
//! (`tmidb.ingest.{category}`), `http_poll`, `file` and `exec`. Sources are defined
//! through the api and picked up without a restart (LISTEN `tmidb_sources`). Every
//! source reads its records with [`payload::read`], so a record that cannot be read is
//! a dead letter wherever it comes from.

pub mod http;
pub mod payload;
pub mod sources;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

use crate::config::Config;
use crate::db::categories::{CategoryError, SchemaCache};
use crate::model::access::{Denied, Principal};
use crate::model::schema::{Problem, Schema};
use crate::model::source::{Source, SourceKind};
use crate::model::transform::Transform;
use crate::model::wire::{Batch, DeadBatch, DeadLetter, WireRecord};
use crate::pipeline::{DEAD_PREFIX, SUBJECT_PREFIX};
use crate::web::error::Issue;
use crate::web::intake::InsertResult;
use payload::Item;

/// The data-manager's state.
pub struct Manager {
    /// Database (schemas, sources, token checks).
    pub pool: PgPool,
    /// Effective settings.
    pub cfg: Config,
    /// Current category schemas.
    pub schemas: SchemaCache,
    /// JetStream.
    pub js: async_nats::jetstream::Context,
    /// Pushes in flight (`ingest.max_inflight`).
    pub inflight: tokio::sync::Semaphore,
    /// The defined source (if any) whose transformation applies to pushes and NATS
    /// messages of a category; cleared when sources change.
    implicit: Mutex<HashMap<(String, SourceKind), Option<Source>>>,
}

/// Records transformed and validated, ready to publish.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The source the records came from.
    pub source: String,
    /// Schema version used.
    pub schema_version: i32,
    /// Valid records.
    pub records: Vec<WireRecord>,
    /// Invalid ones.
    pub dead: Vec<DeadLetter>,
    /// Why each invalid one was rejected, by item index.
    pub errors: Vec<Issue>,
}

impl Prepared {
    /// The answer to whoever sent the records.
    pub fn result(&self) -> InsertResult {
        InsertResult {
            accepted: self.records.len() as u64,
            rejected: self.dead.len() as u64,
            schema_version: self.schema_version,
            errors: self.errors.clone(),
        }
    }
}

/// Why records were not taken. What a source does next is decided on the variant
/// ([`PushError::is_transient`]: hold the input and retry); the push endpoint answers
/// each with its own status.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// `ingest.max_inflight` pushes are in flight already.
    #[error("{0} pushes are in flight already; retry in 1 s")]
    Busy(usize),
    /// The pipeline's backlog is full (`ingest.max_backlog_bytes`).
    #[error(
        "the pipeline is saturated: {0} bytes wait for the data-consumers (ingest.max_backlog_bytes); retry in 1 s"
    )]
    Saturated(i64),
    /// NATS did not take or acknowledge the records.
    #[error("{0}")]
    Unavailable(String),
    /// The category is unknown (or PostgreSQL could not say).
    #[error(transparent)]
    Category(#[from] CategoryError),
    /// PostgreSQL (looking up sources).
    #[error("PostgreSQL: {0}")]
    Db(#[from] sqlx::Error),
    /// The caller may not write the category.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The payload cannot be split into records.
    #[error(transparent)]
    Malformed(#[from] payload::Malformed),
    /// Every record was rejected (all kept as dead letters).
    #[error("all {rejected} records were rejected (kept as dead letters)")]
    AllRejected {
        /// How many.
        rejected: u64,
        /// Why, by index.
        errors: Vec<Issue>,
    },
}

impl PushError {
    /// Whether retrying the same records later can succeed: the pipeline is busy or
    /// full, or NATS or PostgreSQL is away.
    pub fn is_transient(&self) -> bool {
        match self {
            PushError::Busy(_) | PushError::Saturated(_) | PushError::Unavailable(_) => true,
            PushError::Db(e) | PushError::Category(CategoryError::Sql(e)) => {
                crate::db::is_outage(e)
            }
            _ => false,
        }
    }
}

impl Manager {
    /// A manager over `pool` publishing to `js`.
    pub fn new(pool: PgPool, cfg: Config, js: async_nats::jetstream::Context) -> Manager {
        let inflight = tokio::sync::Semaphore::new(cfg.ingest_max_inflight);
        Manager {
            pool,
            cfg,
            schemas: SchemaCache::default(),
            js,
            inflight,
            implicit: Mutex::default(),
        }
    }

    /// The current schema of `category` (cached).
    pub async fn schema(&self, category: &str) -> Result<Arc<Schema>, PushError> {
        Ok(self.schemas.get(&self.pool, category).await?)
    }

    /// The enabled source of `kind` defined for `category`, if any (cached).
    pub async fn implicit_source(
        &self,
        category: &str,
        kind: SourceKind,
    ) -> Result<Option<Source>, PushError> {
        let key = (category.to_string(), kind);
        if let Some(s) = self.implicit.lock().expect("lock").get(&key) {
            return Ok(s.clone());
        }
        let s = crate::db::sources::implicit(&self.pool, category, kind).await?;
        self.implicit.lock().expect("lock").insert(key, s.clone());
        Ok(s)
    }

    /// Forgets cached sources (they changed).
    pub fn sources_changed(&self) {
        self.implicit.lock().expect("lock").clear();
    }

    /// Reads `body` laid out as `format` ([`payload::read`], positions under
    /// `label`), then [`Manager::submit`]s its records.
    pub async fn take(
        &self,
        category: &str,
        source: &str,
        transform: &Transform,
        format: payload::Format,
        body: &[u8],
        label: &str,
    ) -> Result<Prepared, PushError> {
        let schema = self.schema(category).await?;
        let items = payload::read(format, body, label, &schema, transform)?;
        let p = prepare(&schema, source, transform, items);
        publish(&self.js, &self.cfg, category, &p).await?;
        Ok(p)
    }

    /// [`prepare`] against the current schema, then [`publish`].
    pub async fn submit(
        &self,
        category: &str,
        source: &str,
        transform: &Transform,
        items: Vec<Item>,
    ) -> Result<Prepared, PushError> {
        let schema = self.schema(category).await?;
        let p = prepare(&schema, source, transform, items);
        publish(&self.js, &self.cfg, category, &p).await?;
        Ok(p)
    }
}

/// Transforms and validates items against `schema`: each valid one gets its content
/// id, each invalid or unreadable one becomes a dead letter naming why.
pub fn prepare(schema: &Schema, source: &str, transform: &Transform, items: Vec<Item>) -> Prepared {
    let category = schema.category.as_str();
    let now = chrono::Utc::now();
    let mut out = Prepared {
        source: source.to_string(),
        schema_version: schema.version,
        ..Default::default()
    };
    let declared = |f: &str| schema.fields.iter().any(|x| x.name == f);
    for (i, item) in items.into_iter().enumerate() {
        let checked = match item.unreadable {
            Some(why) => Err(vec![Problem {
                field: None,
                reason: why,
            }]),
            None => transform
                .apply(&item.raw, declared)
                .and_then(|v| schema.validate(&v, now)),
        };
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
    out
}

/// Publishes prepared records and dead letters, chunked into messages, and waits
/// for every JetStream acknowledgement, retrying through a leader election
/// ([`crate::pipeline::publish_all`]): Ok means all of it is stored in JetStream.
/// An error after some chunks were taken leaves those stored; publishing the same
/// records again is safe (content ids, `Nats-Msg-Id`).
pub async fn publish(
    js: &async_nats::jetstream::Context,
    cfg: &Config,
    category: &str,
    p: &Prepared,
) -> Result<(), PushError> {
    let mut messages = vec![];
    for chunk in p.records.chunks(crate::pipeline::MAX_RECORDS_PER_MESSAGE) {
        let batch = Batch {
            category: category.to_string(),
            schema_version: p.schema_version,
            source: Some(p.source.clone()),
            records: chunk.to_vec(),
        };
        let payload = serde_json::to_vec(&batch).expect("json");
        messages.push((
            format!("{SUBJECT_PREFIX}{category}"),
            batch.msg_id(),
            payload.into(),
        ));
    }
    for chunk in p.dead.chunks(crate::pipeline::MAX_RECORDS_PER_MESSAGE) {
        let batch = DeadBatch {
            category: category.to_string(),
            letters: chunk.to_vec(),
        };
        let payload = serde_json::to_vec(&batch).expect("json");
        messages.push((
            format!("{DEAD_PREFIX}{category}"),
            batch.msg_id(),
            payload.into(),
        ));
    }
    crate::pipeline::publish_all(js, &messages)
        .await
        .map_err(|e| match e.full {
            true => PushError::Saturated(cfg.ingest_max_backlog_bytes),
            false => PushError::Unavailable(format!("JetStream did not take the batch: {e}")),
        })?;
    crate::metrics::count_ingest(category, &p.source, p.records.len(), p.dead.len());
    Ok(())
}

/// Transforms, validates and publishes one pushed body.
pub async fn push_batch(
    m: &Manager,
    p: &Principal,
    category: &str,
    content_type: &str,
    body: &[u8],
) -> Result<InsertResult, PushError> {
    let _permit = m
        .inflight
        .try_acquire()
        .map_err(|_| PushError::Busy(m.cfg.ingest_max_inflight))?;
    p.require_write(category)?;
    let source = m.implicit_source(category, SourceKind::HttpPush).await?;
    let (name, transform) = match &source {
        Some(s) => (s.name.as_str(), s.transform.clone()),
        None => ("http_push", Transform::default()),
    };
    let format = payload::Format::of_content_type(content_type);
    let prepared = m
        .take(category, name, &transform, format, body, "push")
        .await?;
    let rejected = prepared.dead.len() as u64;
    if prepared.records.is_empty() && rejected > 0 {
        return Err(PushError::AllRejected {
            rejected,
            errors: prepared.errors,
        });
    }
    Ok(prepared.result())
}

/// Runs the data-manager of `home` until SIGTERM.
pub async fn run(home: &std::path::Path) -> Result<(), crate::service::StartError> {
    let cfg = Config::load(home)?;
    let pool = crate::db::connect(&cfg, 8).await?;
    let (_client, js, _stream) = crate::pipeline::connect(&cfg, "data-manager").await?;
    let ingest = crate::pipeline::ingest_consumer(&js, cfg.ingest_ack_wait).await?;
    let listener = crate::db::listen(&cfg, &[crate::db::sources::CHANNEL]).await?;
    let port = cfg.ports["ingest"];
    let (address, host) = (cfg.listen_address, cfg.connect_host());
    let m = Arc::new(Manager::new(pool, cfg, js));
    let follower = m.clone();
    tokio::spawn(async move { follower.schemas.follow(&follower.cfg).await });
    tokio::spawn(sources::nats::run(m.clone(), ingest));
    tokio::spawn(sources::supervise(m.clone(), listener));
    let app = http::app(m);
    crate::service::serve_http(
        address,
        port,
        app,
        "accepting pushes",
        &format!("data-manager accepting pushes on http://{host}:{port}/ingest/CATEGORY"),
    )
    .await
}
