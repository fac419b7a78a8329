//! Connecting to Postgres: one pool per process, sized by the caller (the
//! worker sizes it for its concurrency). The library never starts a
//! server: the demo's and the tests' private cluster is the `genq-pg`
//! crate's.
//!
//! The first connection is made by hand, with a short timeout: a pool
//! retries refused connections until its acquire timeout and then says only
//! "pool timed out". Made directly, a failure says where genq tried and why.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Duration;

/// How long the first connection may take before genq says why it failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why no pool could be opened. Names the server, never the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DATABASE_URL is not a PostgreSQL URL: {0}")]
    BadUrl(String),
    #[error("cannot reach PostgreSQL at {target}: {cause}")]
    Unreachable { target: String, cause: String },
}

/// Opens a pool of at most `max` connections to `url`, after one direct
/// connection that fails within [`CONNECT_TIMEOUT`] with its cause.
/// Errors later on (the server gone after start-up) come from the pool.
pub async fn connect(url: &str, max: u32) -> Result<PgPool, ConnectError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| ConnectError::BadUrl(crate::cause::chain(&e)))?;
    let unreachable = |cause: String| ConnectError::Unreachable {
        target: target(&options),
        cause,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(first)) => {
            let _ = first.close().await;
        }
        Ok(Err(e)) => return Err(unreachable(crate::cause::chain(&e))),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    }
    // The server answered just now: the pool opens its connections as they
    // are needed, not a second one here.
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options))
}

/// `host:port/database` (or the socket directory), as genq tried it.
fn target(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("(default database)");
    format!("{}:{}/{database}", options.get_host(), options.get_port())
}
