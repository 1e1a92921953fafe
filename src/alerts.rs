//! Delivery of alert notifications.
//!
//! The `alerts` table is an outbox ([`crate::db::alerts`]): a delivery loop in every
//! data-consumer claims pending rows, publishes them on `tmidb.alerts.{category}` (and
//! `tmidb.live.{category}` for SSE followers) and POSTs them to the rule's webhooks,
//! retrying with exponential backoff (1 s doubling to 5 min ±20 %, 10 attempts) until
//! delivered. Rules and their evaluation are [`crate::model::alert`].

use std::time::Duration;

use sqlx::PgPool;

/// Between delivery attempts of a notification (ten at most).
const DELIVERY: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

/// Delivers pending notifications: claims up to 20, publishes each on NATS and POSTs it
/// to its rule's webhooks; failures are retried later with backoff. Returns how many
/// were delivered.
pub async fn deliver(
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    http: &reqwest::Client,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = crate::db::alerts::claim_pending(&mut tx).await?;
    let mut delivered = 0;
    for (note, attempts, webhooks) in rows {
        let mut error = None;
        let event = crate::model::wire::Event::Alert(note.clone());
        let payload = serde_json::to_vec(&event).expect("json");
        let mut published = Ok(());
        for (prefix, id) in [
            (crate::pipeline::ALERTS_PREFIX, note.id.to_string()),
            (crate::pipeline::LIVE_PREFIX, format!("alert-{}", note.id)),
        ] {
            let r = match crate::pipeline::publish(
                js,
                format!("{prefix}{}", note.category),
                &id,
                payload.clone(),
            )
            .await
            {
                Ok(ack) => tokio::time::timeout(Duration::from_secs(5), ack)
                    .await
                    .map_err(|_| "no JetStream ack within 5 s".to_string())
                    .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            published = published.and(r);
        }
        if let Err(e) = published {
            error = Some(format!("NATS: {e}"));
        }
        for url in &webhooks {
            let sent = http
                .post(url)
                .header("X-Tmidb-Alert-Id", note.id.to_string())
                .json(&note)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => error = Some(format!("{url} answered {}", resp.status())),
                Err(e) => error = Some(format!("{url}: {e}")),
            }
        }
        match error {
            None => {
                crate::db::alerts::delivered(&mut tx, note.id).await?;
                delivered += 1;
                tracing::info!(rule = %note.rule, target = %note.target, state = %note.state, "alert delivered");
            }
            Some(e) => {
                let give_up = attempts + 1 >= 10;
                let delay = DELIVERY
                    .delay(attempts.max(0) as u32, fastrand::f64())
                    .as_secs_f64();
                crate::db::alerts::failed(&mut tx, note.id, &e, give_up, delay).await?;
                if give_up {
                    tracing::error!(rule = %note.rule, target = %note.target, "alert delivery gave up after 10 attempts: {e}");
                } else {
                    tracing::warn!(rule = %note.rule, target = %note.target, attempt = attempts + 1, "alert delivery failed, retrying in {delay:.1} s: {e}");
                }
            }
        }
    }
    tx.commit().await?;
    Ok(delivered)
}
