//! A worker's side of inputs: the bytes of each image an edit sends, read
//! when the job runs (an upload from `genq.uploads`, a URL fetched within
//! its checks, another job's stored image), each checked to be an image the
//! API accepts.

use sqlx::PgPool;
use uuid::Uuid;

use super::fetch::{self, FetchError};
use super::{EditImage, EditInputs, ImageFormat, Input, MAX_INPUT_BYTES, Role, Source, UrlPolicy};
use crate::job::JobState;
use crate::output::OutputStore;
use crate::store::{StoreError, inputs as store_inputs, jobs as store_jobs};

/// Why a job's inputs could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// They never will be: the job fails with this reason.
    #[error("{0}")]
    Refused(String),
    /// An input job has not succeeded yet: the job goes back in line.
    #[error("{0}")]
    NotReady(String),
    /// Perhaps later (a fetch or the database failed): retry with backoff.
    #[error("{0}")]
    Transient(String),
}

impl From<StoreError> for ResolveError {
    fn from(err: StoreError) -> Self {
        ResolveError::Transient(format!("reading the inputs: {err}"))
    }
}

/// The images and mask `job_id` sends.
pub async fn resolve(
    pool: &PgPool,
    output: &OutputStore,
    job_id: Uuid,
    urls: UrlPolicy,
) -> Result<EditInputs, ResolveError> {
    let inputs = store_inputs::for_job(pool, job_id).await?;
    let mut resolved = EditInputs::default();
    for input in &inputs {
        let bytes = read(pool, output, input, urls).await?;
        let label = input.label();
        let format = ImageFormat::sniff(&bytes).ok_or_else(|| {
            ResolveError::Refused(format!(
                "{label} is {}, not a PNG, JPEG or WebP image",
                super::format::describe_unaccepted(&bytes)
            ))
        })?;
        match input.role {
            Role::Image => resolved.images.push(EditImage {
                file_name: format!("input-{}.{}", input.position, format.extension()),
                bytes,
            }),
            Role::Mask if format != ImageFormat::Png => {
                return Err(ResolveError::Refused(format!(
                    "the mask must be a PNG (its transparent pixels mark what to change), not {}",
                    format.content_type()
                )));
            }
            Role::Mask => {
                resolved.mask = Some(EditImage {
                    file_name: "mask.png".into(),
                    bytes,
                })
            }
        }
    }
    if resolved.images.is_empty() {
        return Err(ResolveError::Refused(
            "an edit needs at least one input image: add rows to genq.inputs (role 'image') \
             in the transaction that inserts the job"
                .into(),
        ));
    }
    Ok(resolved)
}

async fn read(
    pool: &PgPool,
    output: &OutputStore,
    input: &Input,
    urls: UrlPolicy,
) -> Result<bytes::Bytes, ResolveError> {
    let label = input.label();
    match &input.source {
        Source::Upload(id) => store_inputs::upload_data(pool, *id)
            .await?
            .ok_or_else(|| ResolveError::Refused(format!("{label}: upload {id} no longer exists"))),
        Source::Url(url) => fetch::fetch(url, urls, MAX_INPUT_BYTES as u64)
            .await
            .map_err(|err| match err {
                FetchError::Refused(why) => ResolveError::Refused(format!("{label} URL {why}")),
                FetchError::Transient(why) => {
                    ResolveError::Transient(format!("{label} URL: {why}"))
                }
            }),
        Source::FromJob { job, index } => {
            let source = store_jobs::get(pool, *job).await?.ok_or_else(|| {
                ResolveError::Refused(format!("{label}: input job {job} no longer exists"))
            })?;
            match source.state {
                JobState::Succeeded => {}
                JobState::Failed | JobState::Cancelled => {
                    return Err(ResolveError::Refused(format!(
                        "input job {job} {}: {}",
                        source.state,
                        source.last_error.as_deref().unwrap_or("no reason recorded")
                    )));
                }
                JobState::Queued | JobState::Running => {
                    return Err(ResolveError::NotReady(format!(
                        "waiting for input job {job} ({})",
                        source.state
                    )));
                }
            }
            let key = source
                .images()
                .get(*index as usize)
                .and_then(|i| i.get("key"))
                .and_then(|k| k.as_str())
                .ok_or_else(|| {
                    ResolveError::Refused(format!("{label}: job {job} has no stored image {index}"))
                })?;
            output
                .read(key, MAX_INPUT_BYTES as u64)
                .await
                .map_err(|err| match err {
                    err @ crate::output::ImageError::Read(_) => {
                        ResolveError::Transient(format!("{label}: reading image {key}: {err}"))
                    }
                    other => ResolveError::Refused(format!(
                        "{label}: image {index} of job {job}: {other}"
                    )),
                })
        }
    }
}
