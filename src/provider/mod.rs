//! What executes a job: the [`Provider`] trait, the verdict it returns, and
//! the providers genq ships.
//!
//! The worker owns the queue mechanics (leases, attempts, backoff); a provider
//! only says what happened to one job, in terms the queue understands.

pub mod catalog;
pub(crate) mod classify;
pub mod footprint;
pub(crate) mod headers;
pub mod images;
pub mod images_api;
pub mod noop;
pub mod openai;

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

use crate::job::{AttemptOutcome, Job};

/// What became of one execution of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job is done; `result` describes the output (paths, sizes, hashes).
    Succeeded { result: Value },
    /// The job itself is at fault (content policy, invalid request): never retry.
    Failed { error: String },
    /// A real failure that may pass (5xx, timeout): retry with backoff, spending an attempt.
    Retry { error: String },
    /// Not the job's fault (a key was rate limited or disabled, no key had
    /// room after all): back in line with its place kept, no attempt spent.
    /// The worker claims it again once a key has room.
    Reschedule { reason: String },
}

/// Room a provider has for jobs of one model right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Capacity {
    /// This many calls may go out now. The provider holds a slot for each,
    /// for the next jobs of the model it executes; the worker claims at most
    /// that many and gives back the rest ([`Provider::give_back`]).
    Slots(usize),
    /// No call may go out now.
    Wait {
        /// How long until a key may have room, by the database's clock;
        /// `None` when none will without a change to the keys (all disabled,
        /// none serves the model).
        retry_in: Option<Duration>,
        /// Why, for operators: e.g. "every key serving gpt-image-2 is disabled".
        reason: String,
    },
}

/// The provider request an execution made: the one record of a call, from
/// the provider to the row `store::jobs::complete` writes in `genq.attempts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub outcome: AttemptOutcome,
    pub key_id: Option<String>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    pub started_at: DateTime<Utc>,
    /// What the provider billed for it: set when it answered with images.
    pub cost: Option<crate::cost::Cost>,
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
///
/// A rate-limited provider says so with [`Provider::limited`]; the worker
/// then asks [`Provider::reserve`] for room before it claims any job, so a
/// job that would only wait is never claimed (never written).
pub trait Provider: Send + Sync + 'static {
    /// Whether calls need room reserved first. Unlimited providers are
    /// claimed for across models in one round trip.
    fn limited(&self) -> bool {
        false
    }

    /// Reserves room for up to `want` calls of `model`, the first costing
    /// `cost` images.
    fn reserve(
        &self,
        model: &str,
        cost: u32,
        want: usize,
    ) -> impl Future<Output = Capacity> + Send {
        let _ = (model, cost);
        std::future::ready(Capacity::Slots(want))
    }

    /// Hands back `n` slots of `model` that no claimed job will use.
    fn give_back(&self, model: &str, n: usize) -> impl Future<Output = ()> + Send {
        let _ = (model, n);
        std::future::ready(())
    }

    /// The accounts (or keys without one) whose budget is used up: their
    /// keys are not used until a later call leaves them out.
    fn over_budget(&self, scopes: &[String]) {
        let _ = scopes;
    }

    /// The most memory `job` can hold while it runs (its answer and the
    /// images decoded from it), for the worker's limit on bytes in flight.
    fn footprint(&self, job: &Job) -> u64 {
        let _ = job;
        0
    }

    /// Runs one claimed job. Must not panic on bad input: a job the provider
    /// cannot run is an [`Outcome::Failed`] with a message saying why.
    fn execute(&self, job: &Job) -> impl Future<Output = Execution> + Send;
}
