//! Spend caps (`genq.budgets`) and what was spent against them
//! (`genq.budget_status`). What a cap means is [`crate::budget`]'s.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::budget::{Budget, Period, Scope};
use crate::cost::Usd;

/// A budget, its window and its spend, as `genq.budget_status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetStatus {
    pub scope: Scope,
    pub name: String,
    pub period: Period,
    pub cap_usd: Usd,
    pub spent_usd: Usd,
    /// A queue's running jobs at the window's average cost per request.
    pub in_flight_usd: Usd,
    pub window_start: DateTime<Utc>,
    pub resets_at: DateTime<Utc>,
    pub resets_in_secs: f64,
    /// Spent (and in flight) has reached the cap: work stops until it resets.
    pub exhausted: bool,
    pub reason: String,
}

/// Sets each budget's cap (new ones are added; caps not named are kept).
pub async fn set(pool: &PgPool, budgets: &[Budget]) -> Result<(), StoreError> {
    let scopes: Vec<Scope> = budgets.iter().map(|b| b.scope).collect();
    let names: Vec<String> = budgets.iter().map(|b| b.name.clone()).collect();
    let periods: Vec<Period> = budgets.iter().map(|b| b.period).collect();
    let caps: Vec<i64> = budgets.iter().map(|b| b.cap.nanos()).collect();
    sqlx::query!(
        r#"INSERT INTO genq.budgets AS b (scope, name, period, cap_usd)
           SELECT scope, name, period, cap::numeric / 1000000000
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) AS t(scope, name, period, cap)
           ON CONFLICT (scope, name, period) DO UPDATE
              SET cap_usd = excluded.cap_usd, updated_at = now()
            WHERE b.cap_usd <> excluded.cap_usd"#,
        &scopes as &[Scope],
        &names,
        &periods as &[Period],
        &caps,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes one budget; false if there was none.
pub async fn remove(
    pool: &PgPool,
    scope: Scope,
    name: &str,
    period: Period,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "DELETE FROM genq.budgets WHERE scope = $1 AND name = $2 AND period = $3",
        scope as Scope,
        name,
        period as Period,
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether any budget is set (so a worker with none reads no spend).
pub async fn any(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM genq.budgets) AS "any!""#)
            .fetch_one(pool)
            .await?,
    )
}

/// Every budget with its spend.
pub async fn status(pool: &PgPool) -> Result<Vec<BudgetStatus>, StoreError> {
    read(pool, false).await
}

/// The budgets used up now.
pub async fn exhausted(pool: &PgPool) -> Result<Vec<BudgetStatus>, StoreError> {
    read(pool, true).await
}

async fn read(pool: &PgPool, only_exhausted: bool) -> Result<Vec<BudgetStatus>, StoreError> {
    Ok(sqlx::query_file_as!(
        BudgetStatus,
        "src/store/sql/budgets/status.sql",
        only_exhausted
    )
    .fetch_all(pool)
    .await?)
}

/// Why queue `queue`'s jobs wait for its budget, if they do.
pub async fn queue_reason(pool: &PgPool, queue: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT 'waiting: ' || reason AS "reason!" FROM genq.budget_status
            WHERE scope = 'queue' AND name = $1 AND exhausted
            ORDER BY period LIMIT 1"#,
        queue
    )
    .fetch_optional(pool)
    .await?)
}
