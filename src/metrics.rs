//! Prometheus metrics: what the workers and the provider layer count as they
//! go, plus gauges read from the database at scrape time (queue depth, key
//! states, cooldowns), so any replica's `/metrics` shows the shared picture.
//! Labels carry key ids and model names only, never secrets.
//!
//! | series | kind | labels |
//! |---|---|---|
//! | `genq_jobs_finished_total` | counter | `outcome` (succeeded, failed, retry, rescheduled) |
//! | `genq_job_claim_wait_seconds` | histogram | (from due `run_at` to claim) |
//! | `genq_job_end_to_end_seconds` | histogram | `outcome` (created to final state) |
//! | `genq_provider_requests_total` | counter | `key_id`, `model`, `outcome` |
//! | `genq_provider_rate_limited_total` | counter | `key_id`, `model` |
//! | `genq_jobs_waiting_for_capacity_total` | counter | `model` |
//! | `genq_queue_jobs` | gauge | `queue`, `model`, `state` |
//! | `genq_queue_oldest_due_age_seconds` | gauge | `queue`, `model` |
//! | `genq_queue_waiting_jobs` | gauge | `queue`, `model`, `reason` (disabled, cooling: every key serving the model is; budget: the queue's budget is used up) |
//! | `genq_cost_usd_total` | counter | `queue`, `model` (US dollars billed) |
//! | `genq_budget_cap_usd`, `genq_budget_spent_usd`, `genq_budget_exhausted` | gauge | `scope`, `name`, `period` |
//! | `genq_queue_finished_count_age_seconds` | gauge | (age of the finished states' counts) |
//! | `genq_keys` | gauge | `state` |
//! | `genq_key_cooldown_seconds` | gauge | `key_id` (remaining) |
//!
//! The database gauges live in `gauges` (they read 0 once emptied, and
//! stay cheap with millions of finished jobs); queue and model names are
//! bounded by [`labels`] (safe characters, at most 64 long, at most 50
//! (queue, model) pairs and 50 models, the rest as `other`).

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub(crate) mod gauges;
pub mod labels;
mod spend;

pub use gauges::DbGauges;

use crate::job::AttemptOutcome;
use crate::store::StoreError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds: from a fast claim to a job that waited hours.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("valid buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embed genq);
            // then this handle simply renders nothing of ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The Prometheus text: the database gauges of `gauges`, then everything
/// this process counted.
pub async fn render(gauges: &DbGauges) -> Result<String, StoreError> {
    let handle = install();
    let mut text = gauges.render().await?;
    text.push_str(&handle.render());
    Ok(text)
}

/// Model names on counters: the first [`labels::MAX_MODELS`] seen keep theirs.
static MODELS: labels::Admitted = labels::Admitted::new(labels::MAX_MODELS);

/// A job left a worker's hands: how, and (if final) how long since it was created.
pub fn job_finished(outcome: &'static str, end_to_end_secs: Option<f64>) {
    counter!("genq_jobs_finished_total", "outcome" => outcome).increment(1);
    if let Some(secs) = end_to_end_secs {
        histogram!("genq_job_end_to_end_seconds", "outcome" => outcome).record(secs);
    }
}

/// A job was claimed this long after it became due.
pub fn job_claimed(wait_secs: f64) {
    histogram!("genq_job_claim_wait_seconds").record(wait_secs.max(0.0));
}

/// One provider request and what came of it.
pub fn provider_request(key_id: &str, model: &str, outcome: AttemptOutcome) {
    let (key_id, model) = (labels::sanitize(key_id), MODELS.label(model));
    counter!("genq_provider_requests_total", "key_id" => key_id.clone(), "model" => model.clone(), "outcome" => outcome.as_str())
        .increment(1);
    if outcome == AttemptOutcome::RateLimited {
        counter!("genq_provider_rate_limited_total", "key_id" => key_id, "model" => model)
            .increment(1);
    }
}

/// No key could take a job of `model` now.
pub fn waiting_for_capacity(model: &str) {
    counter!("genq_jobs_waiting_for_capacity_total", "model" => MODELS.label(model)).increment(1);
}
