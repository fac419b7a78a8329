//! Subcommands whose code outgrew `main.rs`: `serve` and `jobs …`.

pub mod jobs;
pub mod serve;

use anyhow::{Context, Result};
use sqlx::PgPool;

/// A small pool to `url` for one-shot commands.
pub async fn connect(url: &str, max: u32) -> Result<PgPool> {
    genq::db::connect(url, max)
        .await
        .context("connecting to DATABASE_URL")
}

/// [`connect`], then bring the schema up to date (idempotent).
pub async fn connect_migrated(url: &str, max: u32) -> Result<PgPool> {
    let pool = connect(url, max).await?;
    genq::store::migrate::run(&pool)
        .await
        .context("applying migrations")?;
    Ok(pool)
}
