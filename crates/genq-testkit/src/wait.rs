//! Waiting for outcomes and counting jobs: what a test asserts on.

use sqlx::PgPool;
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns true; panics after `timeout` with `what`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Number of jobs in `state`.
pub async fn count_state(pool: &PgPool, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Inserts `n` jobs with plain SQL, as a producer would.
pub async fn insert_jobs(pool: &PgPool, n: i32, params: serde_json::Value) {
    sqlx::query("INSERT INTO genq.jobs (prompt, params) SELECT 'job ' || i, $2 FROM generate_series(1, $1) i")
        .bind(n)
        .bind(params)
        .execute(pool)
        .await
        .unwrap();
}
