//! Connecting to Postgres: one pool per process, sized for the worker's
//! concurrency, and the private cluster when no `DATABASE_URL` is given.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// Opens a pool of at most `max` connections to `url`.
pub async fn connect(url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}
