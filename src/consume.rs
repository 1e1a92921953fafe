//! The data-consumer: pulls batches from the shared durable JetStream consumer and
//! writes them to PostgreSQL, one transaction per fetch, acknowledging only after the
//! commit. Records carry content ids and conflicts are skipped, so a redelivery (after
//! a crash between commit and ack) stores nothing twice: effectively once, with any
//! number of instances.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::api::schema::{Record, Schema};
use crate::config::Config;
use crate::pipeline::Batch;

/// Why the data-consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// tmidb.toml.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// PostgreSQL.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// NATS.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
}

/// Schemas by (category, version): versions never change, so they are kept.
#[derive(Default)]
pub struct Versions(HashMap<(String, i32), Arc<Schema>>);

impl Versions {
    async fn get(
        &mut self,
        pool: &sqlx::PgPool,
        category: &str,
        version: i32,
    ) -> Result<Arc<Schema>, String> {
        if let Some(s) = self.0.get(&(category.to_string(), version)) {
            return Ok(s.clone());
        }
        let c = crate::db::categories::get(pool, category, Some(version))
            .await
            .map_err(|e| e.to_string())?;
        let s = Arc::new(Schema {
            category: c.name,
            version: c.version,
            fields: c.fields,
        });
        self.0.insert((category.to_string(), version), s.clone());
        Ok(s)
    }
}

/// Writes decoded batches in one transaction; returns how many records were new.
pub async fn write(
    pool: &sqlx::PgPool,
    storage: crate::db::Storage,
    versions: &mut Versions,
    partitions: &crate::db::categories::PartitionCache,
    batches: &[Batch],
) -> Result<u64, String> {
    let mut groups: HashMap<(String, i32), Vec<(uuid::Uuid, Record)>> = HashMap::new();
    for b in batches {
        let g = groups
            .entry((b.category.clone(), b.schema_version))
            .or_default();
        for r in &b.records {
            let values = r
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            g.push((
                r.id,
                Record {
                    target: r.target.clone(),
                    ts: r.ts,
                    values,
                },
            ));
        }
    }
    for ((cat, _), recs) in &groups {
        crate::db::categories::ensure_partitions(
            pool,
            storage,
            partitions,
            cat,
            recs.iter().map(|r| r.1.ts),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let mut new = 0;
    for ((cat, version), recs) in &groups {
        let schema = versions.get(pool, cat, *version).await?;
        new += crate::db::categories::insert_idempotent(&mut tx, &schema, recs)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(new)
}

/// Runs a data-consumer of `home` until SIGTERM.
pub async fn run(home: &std::path::Path) -> Result<(), ConsumeError> {
    let cfg = Config::load(home)?;
    let pool = crate::db::connect(&cfg, 4).await?;
    let (_client, _js, stream) = crate::pipeline::connect(&cfg).await?;
    let consumer = crate::pipeline::consumer(&stream).await?;
    let storage = crate::db::storage(&pool).await;
    let mut versions = Versions::default();
    let partitions = crate::db::categories::PartitionCache::default();
    let _ = crate::supervisor::notify::notify_parent("READY=1\nSTATUS=consuming");
    tracing::info!("data-consumer pulling from {}", crate::pipeline::CONSUMER);
    let mut stop = std::pin::pin!(crate::api::shutdown_signal());
    // A continuous pull stream, not fetch-and-expire: messages handed to an expired fetch
    // wait for ack_wait before redelivery, which stalled writes by 30 s.
    let mut incoming = consumer
        .messages()
        .await
        .map_err(|e| crate::pipeline::PipelineError::JetStream(e.to_string()))?;
    loop {
        let first = tokio::select! {
            _ = &mut stop => break,
            m = incoming.next() => m,
        };
        let mut taken = vec![];
        match first {
            Some(Ok(m)) => taken.push(m),
            Some(Err(e)) => {
                tracing::warn!("pull failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => break,
        }
        // Whatever else is already there, up to 50 messages (≤ 50 000 records) per
        // transaction.
        while taken.len() < 50 {
            match tokio::time::timeout(Duration::from_millis(20), incoming.next()).await {
                Ok(Some(Ok(m))) => taken.push(m),
                Ok(Some(Err(e))) => tracing::warn!("message error: {e}"),
                _ => break,
            }
        }
        let mut batches = vec![];
        let mut good = vec![];
        for m in taken {
            match serde_json::from_slice::<Batch>(&m.payload) {
                Ok(b) => {
                    batches.push(b);
                    good.push(m);
                }
                Err(e) => {
                    tracing::error!(subject = %m.subject, "undecodable message dropped: {e}");
                    let _ = m.ack_with(async_nats::jetstream::AckKind::Term).await;
                }
            }
        }
        match write(&pool, storage, &mut versions, &partitions, &batches).await {
            Ok(new) => {
                for m in &good {
                    if let Err(e) = m.ack().await {
                        tracing::warn!(
                            "ack failed (the batch will be redelivered and skipped): {e}"
                        );
                    }
                }
                tracing::debug!(messages = good.len(), new, "batch committed");
            }
            Err(e) => {
                // Not acked: redelivered after ack_wait; back off meanwhile.
                tracing::error!(messages = good.len(), "write failed, will retry: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::info!("data-consumer stopping");
    Ok(())
}
