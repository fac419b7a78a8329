//! The fields every job must satisfy, whatever its model: a prompt, a
//! model and queue name, params that are an object, priority and
//! max_attempts in range, a non-blank idempotency key.

use crate::job::{InvalidJob, MAX_MAX_ATTEMPTS, MAX_PRIORITY, NewJob};
use crate::provider::catalog::DEFAULT_MODEL;

/// Checks the fields every job must satisfy, whatever its model.
pub fn check(job: &NewJob) -> Result<(), InvalidJob> {
    let bad = |msg: String| Err(InvalidJob(msg));
    if job.prompt.trim().is_empty() {
        return bad("prompt is empty; give a description of the image to generate".into());
    }
    if job.model().trim().is_empty() {
        return bad(format!(
            "model is empty; omit it for the default ({DEFAULT_MODEL}) or name one"
        ));
    }
    if job.queue().trim().is_empty() {
        return bad("queue is empty; omit it for \"default\" or name one".into());
    }
    if let Some(params) = &job.params
        && !params.is_object()
    {
        return bad(format!(
            "params must be a JSON object such as {{\"size\": \"1024x1024\"}}, not {params}"
        ));
    }
    if let Some(priority) = job.priority
        && !(0..=MAX_PRIORITY).contains(&priority)
    {
        return bad(format!(
            "priority {priority} is out of range; use 0 to {MAX_PRIORITY} (higher runs first)"
        ));
    }
    if let Some(max) = job.max_attempts
        && !(1..=MAX_MAX_ATTEMPTS).contains(&max)
    {
        return bad(format!(
            "max_attempts {max} is out of range; use 1 to {MAX_MAX_ATTEMPTS}"
        ));
    }
    if let Some(key) = &job.idempotency_key
        && key.trim().is_empty()
    {
        return bad("idempotency_key is empty; omit it or give a non-empty key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field_and_the_fix() {
        let cases: &[(NewJob, &str)] = &[
            (NewJob::new("  "), "prompt is empty"),
            (
                NewJob {
                    priority: Some(-1),
                    ..NewJob::new("fox")
                },
                "priority -1 is out of range; use 0 to 1000",
            ),
            (
                NewJob {
                    max_attempts: Some(0),
                    ..NewJob::new("fox")
                },
                "max_attempts 0 is out of range",
            ),
            (
                NewJob {
                    params: Some(serde_json::json!([1])),
                    ..NewJob::new("fox")
                },
                "params must be a JSON object",
            ),
            (
                NewJob {
                    model: Some(String::new()),
                    ..NewJob::new("fox")
                },
                "model is empty",
            ),
            (
                NewJob {
                    idempotency_key: Some(" ".into()),
                    ..NewJob::new("fox")
                },
                "idempotency_key is empty",
            ),
        ];
        for (job, want) in cases {
            let err = check(job).unwrap_err();
            assert!(err.0.contains(want), "{job:?}: got {err}, want {want}");
        }
        assert_eq!(check(&NewJob::new("a red fox")), Ok(()));
    }
}
