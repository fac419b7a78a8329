//! An edit's inputs, checked before the job is written: the operation
//! fits what is given, at most 16 images, each naming one source; then,
//! with the database, every upload and input job exists, and every URL's
//! host is public (unless `GENQ_ALLOW_PRIVATE_URLS`).

use sqlx::PgPool;
use uuid::Uuid;

use crate::input::address::{self, UrlError, UrlPolicy};
use crate::input::{self, Input, MAX_INPUT_IMAGES, Source};
use crate::job::{JobState, NewJob, Operation};
use crate::store::{StoreError, inputs as store_inputs};

/// Why an edit's inputs were refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("inputs and mask are for edits; set \"operation\": \"edit\" or remove them")]
    InputsOnGenerate,
    #[error("input_fidelity applies to edits; remove it from params or make the job an edit")]
    FidelityOnGenerate,
    #[error(
        "moderation applies to generations; the edit endpoint has no such parameter, remove it"
    )]
    ModerationOnEdit,
    #[error(
        "an edit needs at least one input image: give inputs, e.g. \
         [{{\"upload\": \"<id from POST /v1/uploads>\"}}]"
    )]
    NoImages,
    #[error("{count} input images; an edit takes at most {MAX_INPUT_IMAGES}")]
    TooMany { count: usize },
    #[error("{label} {why}")]
    Source { label: String, why: String },
    #[error("{label} URL {error}")]
    Url { label: String, error: UrlError },
    #[error(
        "{label} names upload {id}, which does not exist (or was pruned); upload the image \
         with POST /v1/uploads and use the id it returns"
    )]
    UnknownUpload { label: String, id: Uuid },
    #[error("{label} names job {id}, which does not exist")]
    UnknownJob { label: String, id: Uuid },
    #[error(
        "{label} asks for image {index} of job {job}, which has {count} image(s): use 0 to {}",
        count.saturating_sub(1)
    )]
    NoSuchImage {
        label: String,
        job: Uuid,
        index: u32,
        count: i32,
    },
}

/// The job's inputs as rows, if they fit its operation (no database).
pub fn check(job: &NewJob) -> Result<Vec<Input>, InputError> {
    let inputs = input::rows(&job.inputs, job.mask.as_ref())
        .map_err(|(label, why)| InputError::Source { label, why })?;
    if let Some(params) = &job.params {
        operation_params(job.operation(), params)?;
    }
    match job.operation() {
        Operation::Generate => {
            if !inputs.is_empty() {
                return Err(InputError::InputsOnGenerate);
            }
        }
        Operation::Edit => {
            let images = job.inputs.len();
            if images == 0 {
                return Err(InputError::NoImages);
            }
            if images > MAX_INPUT_IMAGES {
                return Err(InputError::TooMany { count: images });
            }
        }
    }
    for input in &inputs {
        if let Source::Url(url) = &input.source {
            address::parse(url).map_err(|error| InputError::Url {
                label: input.label(),
                error,
            })?;
        }
    }
    Ok(inputs)
}

/// Refuses params only the other operation takes (`input_fidelity` on a
/// generation, `moderation` on an edit), which its request could not carry.
/// Submit checks it, and the worker again for rows inserted with plain SQL.
pub fn operation_params(
    operation: Operation,
    params: &serde_json::Value,
) -> Result<(), InputError> {
    let given = |key: &str| params.get(key).is_some_and(|v| !v.is_null());
    match operation {
        Operation::Generate if given("input_fidelity") => Err(InputError::FidelityOnGenerate),
        Operation::Edit if given("moderation") => Err(InputError::ModerationOnEdit),
        _ => Ok(()),
    }
}

/// Checks what the inputs name: uploads and jobs exist (an input job's
/// image exists once it has succeeded), URL hosts are public unless
/// `policy` allows private ones.
pub async fn check_sources(
    pool: &PgPool,
    inputs: &[Input],
    policy: UrlPolicy,
) -> Result<Result<(), InputError>, StoreError> {
    let uploads: Vec<Uuid> = inputs
        .iter()
        .filter_map(|i| match i.source {
            Source::Upload(id) => Some(id),
            _ => None,
        })
        .collect();
    let jobs: Vec<Uuid> = inputs
        .iter()
        .filter_map(|i| match i.source {
            Source::FromJob { job, .. } => Some(job),
            _ => None,
        })
        .collect();
    let found_uploads = if uploads.is_empty() {
        Vec::new()
    } else {
        store_inputs::existing_uploads(pool, &uploads).await?
    };
    let found_jobs = if jobs.is_empty() {
        Vec::new()
    } else {
        store_inputs::input_jobs(pool, &jobs).await?
    };
    for input in inputs {
        let label = input.label();
        match &input.source {
            Source::Upload(id) if !found_uploads.contains(id) => {
                return Ok(Err(InputError::UnknownUpload { label, id: *id }));
            }
            Source::FromJob { job, index } => match found_jobs.iter().find(|j| j.id == *job) {
                None => return Ok(Err(InputError::UnknownJob { label, id: *job })),
                Some(found) if found.state == JobState::Succeeded => {
                    let count = found.images.unwrap_or(0);
                    if *index as i64 >= count as i64 {
                        return Ok(Err(InputError::NoSuchImage {
                            label,
                            job: *job,
                            index: *index,
                            count,
                        }));
                    }
                }
                Some(_) => {}
            },
            Source::Url(url) => {
                if let Err(error) = address::check_at_submit(url, policy).await {
                    return Ok(Err(InputError::Url { label, error }));
                }
            }
            Source::Upload(_) => {}
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputRef;

    #[test]
    fn inputs_must_fit_the_operation() {
        let id = Uuid::nil();
        let edit = |inputs: Vec<InputRef>| NewJob {
            operation: Some(Operation::Edit),
            inputs,
            ..NewJob::new("fox")
        };
        let cases: Vec<(NewJob, Option<&str>)> = vec![
            (NewJob::new("fox"), None),
            (edit(vec![InputRef::upload(id)]), None),
            (
                NewJob {
                    inputs: vec![InputRef::upload(id)],
                    ..NewJob::new("fox")
                },
                None, // inputs without an operation make an edit
            ),
            (
                NewJob {
                    operation: Some(Operation::Generate),
                    inputs: vec![InputRef::upload(id)],
                    ..NewJob::new("fox")
                },
                Some("inputs and mask are for edits"),
            ),
            (
                NewJob {
                    params: Some(serde_json::json!({"input_fidelity": "high"})),
                    ..NewJob::new("fox")
                },
                Some("input_fidelity applies to edits"),
            ),
            (edit(vec![]), Some("an edit needs at least one input image")),
            (
                edit(vec![InputRef::upload(id); 17]),
                Some("17 input images; an edit takes at most 16"),
            ),
            (edit(vec![InputRef::upload(id); 16]), None),
            (
                edit(vec![InputRef::upload(id), InputRef::default()]),
                Some("inputs[1] must name exactly one of upload"),
            ),
            (
                NewJob {
                    params: Some(serde_json::json!({"moderation": "low"})),
                    ..edit(vec![InputRef::upload(id)])
                },
                Some("moderation applies to generations"),
            ),
            (
                NewJob {
                    params: Some(serde_json::json!({"moderation": "low"})),
                    ..NewJob::new("fox")
                },
                None,
            ),
            (
                edit(vec![InputRef::url("ftp://x.test/a.png")]),
                Some("inputs[0] URL is not an http(s) URL"),
            ),
            (
                NewJob {
                    mask: Some(InputRef {
                        index: Some(0),
                        ..InputRef::upload(id)
                    }),
                    ..edit(vec![InputRef::upload(id)])
                },
                Some("mask index goes with from_job"),
            ),
        ];
        for (job, want) in cases {
            match (check(&job), want) {
                (Ok(_), None) => {}
                (Err(err), Some(want)) => assert!(err.to_string().contains(want), "{err}"),
                (got, want) => panic!("{job:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
