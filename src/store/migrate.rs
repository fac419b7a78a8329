//! Applies the migrations embedded from `migrations/`.
//!
//! sqlx's migrator takes a Postgres advisory lock while it runs, so replicas
//! that all run `genq migrate` at start-up apply each migration exactly once.

use sqlx::PgPool;

/// The migrations compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Brings the schema up to date. Idempotent.
pub async fn run(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
