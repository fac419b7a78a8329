//! The one way genq's own code enqueues a job (CLI, HTTP API, library users):
//! validate (the job's fields, its params against the model catalogue, an
//! edit's inputs and what they name), then insert the job with its inputs.
//! Plain SQL inserts skip this and rely on the table's CHECKs and on the
//! worker's checks at claim time.

use sqlx::PgPool;

use crate::input::address::{self, UrlError};
use crate::input::{Input, UrlPolicy};
use crate::job::{InvalidJob, NewJob, Operation};
use crate::store::StoreError;
use crate::store::jobs::{self, Inserted};
use crate::validation::{self, InputError, ParamError};
use uuid::Uuid;

pub use crate::store::jobs::Enqueued;

/// Why a job was not enqueued. All but `Store` are the producer's to fix,
/// and nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A job field is empty or out of range.
    #[error(transparent)]
    Field(#[from] InvalidJob),
    /// The params do not suit the model (or a fallback model).
    #[error(transparent)]
    Params(#[from] ParamError),
    /// An edit's inputs do not fit: the operation, their count, a source
    /// that does not exist, a URL genq will not fetch.
    #[error(transparent)]
    Input(#[from] InputError),
    /// `callback_url` is not an http(s) URL genq will call.
    #[error("callback_url {0}")]
    CallbackUrl(UrlError),
    /// The idempotency key was used before for a different job; `fields`
    /// are the ones that differ. Resend the same job to get it back, or use
    /// a new key for a new job.
    #[error(
        "idempotency_key {key:?} was already used for job {existing} with a different {}; \
         resend exactly the same job to get it back, or use a new key for a new job",
        fields.join(", ")
    )]
    IdempotencyConflict {
        key: String,
        existing: Uuid,
        fields: Vec<&'static str>,
    },
    /// The database refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything [`submit`] checks before it writes, for callers that want to
/// refuse a job before they even connect.
pub fn validate(job: &NewJob) -> Result<(), SubmitError> {
    checked(job).map(drop)
}

/// [`validate`], giving the job's inputs as rows.
fn checked(job: &NewJob) -> Result<Vec<Input>, SubmitError> {
    validation::fields::check(job)?;
    let no_params = serde_json::json!({});
    let params = job.params.as_ref().unwrap_or(&no_params);
    validation::params::validate(job.model(), &job.prompt, params)?;
    let inputs = validation::inputs::check(job)?;
    if let Some(url) = &job.callback_url {
        address::parse(url).map_err(SubmitError::CallbackUrl)?;
    }
    Ok(inputs)
}

/// Validates `job` and enqueues it. With an idempotency key that was seen
/// before, returns that job if it is the same one (`created: false`), and
/// refuses a different one. Input URLs must have public hosts
/// ([`submit_with`] may allow private ones).
pub async fn submit(pool: &PgPool, job: &NewJob) -> Result<Enqueued, SubmitError> {
    submit_with(pool, job, UrlPolicy::default()).await
}

/// [`submit`], with the policy for input URLs given.
pub async fn submit_with(
    pool: &PgPool,
    job: &NewJob,
    urls: UrlPolicy,
) -> Result<Enqueued, SubmitError> {
    let inputs = checked(job)?;
    validation::inputs::check_sources(pool, &inputs, urls).await??;
    if let Some(url) = &job.callback_url {
        address::check_at_submit(url, urls)
            .await
            .map_err(SubmitError::CallbackUrl)?;
    }
    match jobs::enqueue(pool, job).await? {
        Inserted::New(enqueued) => Ok(enqueued),
        Inserted::Existing(existing) => {
            let mut fields = job.differences(&existing);
            // Only an edit has inputs (a differing operation is named already).
            if existing.operation == Operation::Edit
                && crate::store::inputs::for_job(pool, existing.id).await? != inputs
            {
                fields.push("inputs");
            }
            if !fields.is_empty() {
                return Err(SubmitError::IdempotencyConflict {
                    key: job.idempotency_key.clone().unwrap_or_default(),
                    existing: existing.id,
                    fields,
                });
            }
            Ok(Enqueued {
                id: existing.id,
                state: existing.state,
                created: false,
            })
        }
    }
}
