//! A provider that succeeds without calling anyone: for measuring the queue
//! itself and for running genq end to end with no image provider at all.
//!
//! A job may ask it to take time with `params.noop_delay_ms`, to stand in
//! for a slow provider call (shutdown, lease and crash behaviour).

use chrono::Utc;
use serde_json::json;
use std::time::Duration;

use super::{Call, Execution, Outcome, Provider};
use crate::job::{AttemptOutcome, Job};

/// Succeeds every job, after `params.noop_delay_ms` if the job sets it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopProvider;

impl Provider for NoopProvider {
    async fn execute(&self, job: &Job) -> Execution {
        let started_at = Utc::now();
        if let Some(ms) = job.params.get("noop_delay_ms").and_then(|v| v.as_u64()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Execution {
            outcome: Outcome::Succeeded {
                result: json!({ "provider": "noop", "prompt_chars": job.prompt.chars().count() }),
            },
            call: Some(Call {
                outcome: AttemptOutcome::Succeeded,
                key_id: None,
                http_status: None,
                error: None,
                retry_after: None,
                started_at,
                cost: None,
            }),
        }
    }
}
