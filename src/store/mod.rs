//! All SQL lives here. The rest of genq calls named functions, never builds SQL.
//!
//! - [`jobs`]: enqueue, claim, heartbeat, complete, reap, release, inspect.
//! - [`inspect`]: list, cancel, retry, queue statistics (for the CLI and HTTP API).
//! - [`keys`]: API key health, cooldowns, enable/disable/reset, listing.
//! - [`buckets`]: the shared GCRA buckets per (account or key, model).
//! - [`migrate`]: the embedded migrations.

pub mod buckets;
pub mod inspect;
pub mod jobs;
pub mod keys;
pub mod migrate;

/// Answers if the database does (`SELECT 1`).
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// A database failure. Callers branch on whether a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Input the database refused (a CHECK, a bad value): fix the input.
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with what is stored (an idempotency key reused
    /// for a different job): the text says what differs.
    #[error("{0}")]
    Conflict(String),
    /// The database could not be reached or the statement failed: try again later.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// Turns constraint violations into [`StoreError::Invalid`] with the
    /// database's own message (it names the constraint), keeping the rest.
    pub(crate) fn classify(err: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &err
            && (db.is_check_violation() || db.code().as_deref() == Some("22P02"))
        {
            return StoreError::Invalid(db.message().to_string());
        }
        StoreError::Db(err)
    }
}
