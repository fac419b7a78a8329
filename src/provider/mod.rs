//! What executes a job: the [`Provider`] trait, the verdict it returns, and
//! the providers genq ships.
//!
//! The worker owns the queue mechanics (leases, attempts, backoff); a provider
//! only says what happened to one job, in terms the queue understands.

pub mod catalog;
pub mod classify;
pub mod headers;
pub mod images;
pub mod keyring;
pub mod known_params;
pub mod noop;
pub mod openai;
pub mod params;

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

use crate::job::Job;

/// What became of one execution of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job is done; `result` describes the output (paths, sizes, hashes).
    Succeeded { result: Value },
    /// The job itself is at fault (content policy, invalid request): never retry.
    Failed { error: String },
    /// A real failure that may pass (5xx, timeout): retry with backoff, spending an attempt.
    Retry { error: String },
    /// Not the job's fault (no key has capacity, a key was rate limited or
    /// disabled): run again at `run_at` without spending an attempt.
    Reschedule {
        reason: String,
        run_at: DateTime<Utc>,
    },
}

/// The provider request an execution made, for `genq.attempts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `succeeded`, `failed`, `retry`, `rate_limited` or `key_rejected`.
    pub outcome: &'static str,
    pub key_id: Option<String>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    pub started_at: DateTime<Utc>,
}

/// An [`Outcome`] and the provider call behind it, if one was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub outcome: Outcome,
    pub call: Option<Call>,
}

impl Execution {
    /// An outcome reached without calling the provider.
    pub fn without_call(outcome: Outcome) -> Self {
        Execution {
            outcome,
            call: None,
        }
    }
}

/// Executes jobs. One instance serves every in-flight job of a worker.
pub trait Provider: Send + Sync + 'static {
    /// Runs one claimed job. Must not panic on bad input: a job the provider
    /// cannot run is an [`Outcome::Failed`] with a message saying why.
    fn execute(&self, job: &Job) -> impl Future<Output = Execution> + Send;
}
