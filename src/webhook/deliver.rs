//! The delivery loop every worker runs: take due deliveries (SKIP LOCKED,
//! under a lease), POST each job's JSON signed, record the answer.

use futures::future::join_all;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::WebhookConfig;
use crate::input::address;
use crate::store::{inspect, webhooks};

/// Deliveries taken at once.
const BATCH: i64 = 32;

/// Delivers until `stop` is cancelled.
pub async fn run(pool: PgPool, cfg: WebhookConfig, stop: CancellationToken) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut l) => match l.listen("genq_webhooks").await {
            Ok(()) => Some(l),
            Err(_) => None,
        },
        Err(_) => None,
    };
    while !stop.is_cancelled() {
        let due = match webhooks::claim(&pool, BATCH, cfg.timeout * 3).await {
            Ok(due) => due,
            Err(err) => {
                tracing::warn!(error = %err, "taking due webhooks failed");
                Vec::new()
            }
        };
        let full = due.len() as i64 == BATCH;
        join_all(due.into_iter().map(|d| send(&pool, &cfg, d))).await;
        if full {
            continue;
        }
        let wait = tokio::time::sleep(cfg.poll);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wait => {}
            _ = async {
                match listener.as_mut() {
                    Some(l) => { let _ = l.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

/// Sends one delivery and records what came of it.
async fn send(pool: &PgPool, cfg: &WebhookConfig, d: webhooks::Delivery) {
    let (status, error) = match attempt(pool, cfg, &d).await {
        Ok(status) if (200..300).contains(&status) => {
            if let Err(err) = webhooks::delivered(pool, d.id, status).await {
                tracing::warn!(error = %err, "recording a delivered webhook failed; it is sent again");
            }
            return;
        }
        Ok(status) => (Some(status), format!("the receiver answered HTTP {status}")),
        Err(error) => (None, error),
    };
    let retry_in = cfg
        .backoff
        .delay(d.attempts.max(1) as u32, &mut rand::rng());
    match webhooks::failed(pool, d.id, status, &error, retry_in, cfg.give_up_after).await {
        Ok(true) => {
            tracing::warn!(event = "webhook_given_up", job_id = %d.job_id, attempts = d.attempts, error = %error, "webhook given up")
        }
        Ok(false) => {
            tracing::info!(event = "webhook_retry", job_id = %d.job_id, attempts = d.attempts, retry_in_ms = retry_in.as_millis() as u64, error = %error, "webhook not delivered; trying again")
        }
        Err(err) => tracing::warn!(error = %err, "recording a webhook failure failed"),
    }
}

/// One POST: the receiver's status, or why there was none.
async fn attempt(
    pool: &PgPool,
    cfg: &WebhookConfig,
    d: &webhooks::Delivery,
) -> Result<u16, String> {
    let detail = inspect::detail(pool, d.job_id)
        .await
        .map_err(|e| format!("reading the job: {e}"))?
        .ok_or_else(|| "the job no longer exists".to_string())?;
    let body = serde_json::to_vec(&detail).map_err(|e| e.to_string())?;
    let url = address::parse(&d.url).map_err(|e| format!("the URL {e}"))?;
    let client = address::pinned_client(&url, cfg.urls, cfg.timeout)
        .await
        .map_err(|e| format!("the URL {e}"))?;
    let id = d.event_id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = cfg.secret.sign(&id, timestamp, &body);
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| crate::cause::chain(&e.without_url()))?;
    Ok(response.status().as_u16())
}
