//! The one way genq's own code enqueues a job (CLI, HTTP API, library users):
//! validate (the job's fields, then its params against the model catalogue),
//! then insert. Plain SQL inserts skip this and rely on the table's CHECKs
//! and on the worker's checks at claim time.

use sqlx::PgPool;

use crate::job::{InvalidJob, NewJob};
use crate::store::{StoreError, jobs};
use crate::validation::{self, ParamError};

pub use crate::store::jobs::Enqueued;

/// Why a job was not enqueued. The first two are the producer's to fix and
/// nothing was written; callers answer them as a bad request.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A job field is empty or out of range.
    #[error(transparent)]
    Field(#[from] InvalidJob),
    /// The params do not suit the model (or a fallback model).
    #[error(transparent)]
    Params(#[from] ParamError),
    /// The database refused or failed; [`StoreError::Conflict`] is an
    /// idempotency key reused for a different job.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything [`submit`] checks before it writes, for callers that want to
/// refuse a job before they even connect.
pub fn validate(job: &NewJob) -> Result<(), SubmitError> {
    validation::fields::check(job)?;
    let no_params = serde_json::json!({});
    let params = job.params.as_ref().unwrap_or(&no_params);
    validation::params::validate(job.model(), &job.prompt, params)?;
    Ok(())
}

/// Validates `job` and enqueues it. With an idempotency key that was seen
/// before, returns the existing job instead of creating a second one.
pub async fn submit(pool: &PgPool, job: &NewJob) -> Result<Enqueued, SubmitError> {
    validate(job)?;
    Ok(jobs::enqueue(pool, job).await?)
}
