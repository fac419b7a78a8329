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
