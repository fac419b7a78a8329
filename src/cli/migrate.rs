//! `genq migrate`: bring the schema up to date (idempotent; safe from many replicas at once).

use anyhow::Result;

use super::db::{DbArgs, connect_migrated};

/// Applies the migrations.
pub async fn run(db: &DbArgs) -> Result<()> {
    connect_migrated(&db.database_url, 2).await?;
    eprintln!("migrations applied");
    Ok(())
}
