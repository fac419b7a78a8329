//! The database flag every verb takes, and the connections one-shot verbs open.

use anyhow::{Context, Result};
use clap::Args;
use sqlx::PgPool;

#[derive(Args, Clone)]
pub struct DbArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

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
