//! All SQL lives here. The rest of genq calls named functions, never builds SQL.
//!
//! - [`jobs`]: enqueue, claim, heartbeat, complete, reap, release, inspect.
//! - [`inspect`]: list, cancel, retry, queue statistics (for the CLI and HTTP API).
//! - [`keys`]: API key health, cooldowns, enable/disable/reset, listing.
//! - [`inputs`]: an edit's input images and mask; uploaded images.
//! - [`buckets`]: the shared GCRA buckets per (account or key, model).
//! - [`costs`]: what billed calls cost, per queue, model and key.
//! - [`budgets`]: spend caps and the spend against them.
//! - [`migrate`]: the embedded migrations.
//! - [`webhooks`]: the completion webhook outbox and default URLs.
//! - `storable`: outside text and JSON made storable (no NUL, bounded).

pub mod buckets;
pub mod budgets;
pub mod costs;
pub mod inputs;
pub mod inspect;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub(crate) mod storable;
mod text_enum;
pub mod webhooks;

pub(crate) use text_enum::text_enum;

/// Answers if the database does (`SELECT 1`).
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), StoreError> {
    sqlx::query!("SELECT 1 AS one").fetch_one(pool).await?;
    Ok(())
}

/// A database failure. Callers branch on whether a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Input the database refused (a CHECK, a bad value): fix the input.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be reached or the statement failed: try again later.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl StoreError {
    /// Turns constraint violations into [`StoreError::Invalid`] with the
    /// database's own message (it names the constraint), keeping the rest.
    pub(crate) fn classify(err: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &err
            && (db.is_check_violation()
                || db.is_foreign_key_violation()
                || db.code().as_deref() == Some("22P02"))
        {
            return StoreError::Invalid(db.message().to_string());
        }
        StoreError::Db(err)
    }

    /// Whether trying the same statement again may succeed: the database was
    /// unreachable, restarting, short of resources or in a conflict. False
    /// when the server refused the statement's data, which fails the same
    /// way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Invalid(_) => false,
            StoreError::Db(sqlx::Error::Database(db)) => {
                db.code().is_none_or(|code| transient_sqlstate(&code))
            }
            StoreError::Db(_) => true,
        }
    }
}

/// SQLSTATE classes that say "not now" rather than "not this": connection
/// (08), transaction rollback (40), resources (53), lock not available
/// (55), operator intervention such as a restart (57), system (58),
/// internal (XX).
fn transient_sqlstate(code: &str) -> bool {
    matches!(
        code.get(..2),
        Some("08" | "40" | "53" | "55" | "57" | "58" | "XX")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlstates_that_may_pass_on_a_retry() {
        let cases = [
            ("57P01", true),  // admin_shutdown: a restart
            ("57P03", true),  // cannot_connect_now
            ("08006", true),  // connection_failure
            ("40001", true),  // serialization_failure
            ("40P01", true),  // deadlock_detected
            ("53300", true),  // too_many_connections
            ("22021", false), // character_not_in_repertoire (a NUL)
            ("22P05", false), // untranslatable_character (\u0000 in jsonb)
            ("23514", false), // check_violation
            ("42P01", false), // undefined_table
        ];
        for (code, want) in cases {
            assert_eq!(super::transient_sqlstate(code), want, "{code}");
        }
    }
}
