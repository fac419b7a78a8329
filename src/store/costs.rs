//! What billed calls cost, totalled per queue, model and key (`genq.costs`,
//! from the `genq.spend` rows that outlive job retention).

use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;
use crate::cost::Usd;

/// The total of one (queue, model, key).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CostTotal {
    pub queue: String,
    pub model: String,
    pub key_id: String,
    /// Billed requests.
    pub requests: i64,
    /// Billed requests whose model has no price (not in `cost_usd`).
    pub unpriced_requests: i64,
    pub cost_usd: Usd,
}

/// Every (queue, model, key) total.
pub async fn totals(pool: &PgPool) -> Result<Vec<CostTotal>, StoreError> {
    Ok(sqlx::query_as!(
        CostTotal,
        r#"SELECT queue AS "queue!", model AS "model!", key_id AS "key_id!",
                  requests AS "requests!", unpriced_requests AS "unpriced_requests!",
                  (cost_usd * 1000000000)::int8 AS "cost_usd!: Usd"
             FROM genq.costs ORDER BY queue, model, key_id"#
    )
    .fetch_all(pool)
    .await?)
}

/// What job `id`'s billed attempts cost, if the job exists.
pub async fn of_job(pool: &PgPool, id: Uuid) -> Result<Option<Usd>, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT (cost_usd * 1000000000)::int8 AS "cost!: Usd" FROM genq.jobs WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?)
}
