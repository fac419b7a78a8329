//! The one way genq's own code enqueues a job (CLI, HTTP API, library users):
//! validate (job fields, then the model catalogue), then insert. Plain SQL inserts skip this and rely on the table's
//! CHECKs and on the worker's checks at claim time.

use sqlx::PgPool;

use crate::job::NewJob;
use crate::store::{StoreError, jobs};

pub use crate::store::jobs::Enqueued;

/// Validates `job` and enqueues it. With an idempotency key that was seen
/// before, returns the existing job instead of creating a second one.
pub async fn submit(pool: &PgPool, job: &NewJob) -> Result<Enqueued, StoreError> {
    job.validate().map_err(|e| StoreError::Invalid(e.0))?;
    let params = job.params.clone().unwrap_or_else(|| serde_json::json!({}));
    crate::provider::catalog::validate(job.model(), &job.prompt, &params)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    jobs::enqueue(pool, job).await
}
