//! SQL for the webhook outbox (`genq.webhook_deliveries`, written by a
//! trigger when a job ends) and the default URLs (`genq.webhook_defaults`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

use super::StoreError;

/// Replaces the default webhook URLs: `(queue, url)`, `*` for every queue.
pub async fn set_defaults(pool: &PgPool, defaults: &[(String, String)]) -> Result<(), StoreError> {
    let (queues, urls): (Vec<String>, Vec<String>) = defaults.iter().cloned().unzip();
    let mut tx = pool.begin().await?;
    sqlx::query!("DELETE FROM genq.webhook_defaults")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO genq.webhook_defaults (queue, url) SELECT * FROM unnest($1::text[], $2::text[])",
        &queues,
        &urls
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::classify)?;
    tx.commit().await?;
    Ok(())
}

/// A delivery a worker has taken to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub event_id: Uuid,
    pub job_id: Uuid,
    pub url: String,
    /// Sends so far, this one included.
    pub attempts: i32,
}

/// Takes up to `limit` due deliveries, each hidden from other workers for
/// `lease` (if this worker dies mid-send, another sends it after that).
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Delivery>, StoreError> {
    Ok(sqlx::query_as!(
        Delivery,
        "UPDATE genq.webhook_deliveries d
            SET attempts = d.attempts + 1, next_at = now() + make_interval(secs => $2)
          WHERE d.id IN (SELECT id FROM genq.webhook_deliveries
                          WHERE state = 'pending' AND next_at <= now()
                          ORDER BY next_at LIMIT $1
                            FOR UPDATE SKIP LOCKED)
          RETURNING d.id, d.event_id, d.job_id, d.url, d.attempts",
        limit,
        lease.as_secs_f64()
    )
    .fetch_all(pool)
    .await?)
}

/// Records a 2xx answer.
pub async fn delivered(pool: &PgPool, id: i64, status: u16) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE genq.webhook_deliveries
            SET state = 'delivered', delivered_at = now(), last_status = $2, last_error = NULL
          WHERE id = $1",
        id,
        status as i32
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed send: tried again after `retry_in`, or given up (state
/// `failed`) once the delivery is older than `give_up_after`. True if given up.
pub async fn failed(
    pool: &PgPool,
    id: i64,
    status: Option<u16>,
    error: &str,
    retry_in: Duration,
    give_up_after: Duration,
) -> Result<bool, StoreError> {
    let state = sqlx::query_scalar!(
        "UPDATE genq.webhook_deliveries
            SET last_status = $2, last_error = $3,
                next_at = now() + make_interval(secs => $4),
                state = CASE WHEN created_at + make_interval(secs => $5) <= now()
                             THEN 'failed' ELSE 'pending' END
          WHERE id = $1
          RETURNING state",
        id,
        status.map(i32::from),
        super::storable::message(error),
        retry_in.as_secs_f64(),
        give_up_after.as_secs_f64()
    )
    .fetch_optional(pool)
    .await?;
    Ok(state.as_deref() == Some("failed"))
}

/// A job's webhook deliveries, as `GET /v1/jobs/{id}` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryStatus {
    pub event_id: Uuid,
    pub url: String,
    pub job_state: String,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The deliveries of `job_id`, oldest first.
pub async fn for_job(pool: &PgPool, job_id: Uuid) -> Result<Vec<DeliveryStatus>, StoreError> {
    Ok(sqlx::query_as!(
        DeliveryStatus,
        "SELECT event_id, url, job_state, state, attempts, last_status, last_error,
                created_at, next_at, delivered_at
           FROM genq.webhook_deliveries WHERE job_id = $1 ORDER BY id",
        job_id
    )
    .fetch_all(pool)
    .await?)
}
