//! The real provider: one job → one Images API call through a reserved key,
//! with the answer classified and the key's state updated for every replica.
//!
//! - No key has room now → the job is rescheduled for the earliest moment
//!   one will (no attempt spent); fallback models are tried first when the
//!   primary's wait exceeds `fallback_after`.
//! - 429 → the key and its bucket cool for the provider's wait (or a
//!   backoff growing with consecutive 429s); the job goes back at once for
//!   another key. An unconfigured bucket also lowers its rate (AIMD).
//! - quota / 401 / 403 → key disabled, job back for another key.
//! - content policy / invalid request → job failed, key unharmed.
//! - 5xx / timeout / connection error → job retried with backoff; the key's
//!   failure streak opens its circuit after a threshold.
//! - If the rate-limit state cannot be read (database down), nothing is sent.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::catalog;
use super::classify::{self, Verdict};
use super::headers;
use super::keyring::{Keyring, NoSlot, Slot};
use super::openai::{CallFailure, ImagesClient};
use super::{Call, Execution, Outcome, Provider};
use crate::job::Job;
use crate::limiter::Aimd;
use crate::output::OutputStore;
use crate::retry::Backoff;
use crate::store::keys as key_store;

/// Tunables of [`ImagesProvider`].
#[derive(Debug, Clone)]
pub struct ImagesSettings {
    /// Try fallback models when the primary cannot be served within this.
    pub fallback_after: Duration,
    /// Consecutive transient failures that open a key's circuit.
    pub circuit_threshold: i32,
    /// How long an open circuit keeps the key out.
    pub circuit_open: Duration,
    /// Cooldown after a 429 that named no wait, by consecutive 429s.
    pub rate_limit_backoff: Backoff,
    /// When every key is disabled, look again after this.
    pub disabled_recheck: Duration,
    /// A key that frees up within this is waited for in the worker; a
    /// longer wait reschedules the job (no worker sleeps for long).
    pub inline_wait: Duration,
    /// Reserve a key's slot and book the call as usual, but send nothing and
    /// succeed at once: genq's own cost per job, limiter included, with no
    /// provider in the way (`genq worker --provider dry-run`).
    pub dry_run: bool,
}

impl Default for ImagesSettings {
    fn default() -> Self {
        ImagesSettings {
            fallback_after: Duration::from_secs(30),
            circuit_threshold: 5,
            circuit_open: Duration::from_secs(30),
            rate_limit_backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            disabled_recheck: Duration::from_secs(60),
            inline_wait: Duration::from_secs(2),
            dry_run: false,
        }
    }
}

/// Generates images with the OpenAI Images API (or a compatible server).
pub struct ImagesProvider {
    pool: PgPool,
    client: ImagesClient,
    output: OutputStore,
    keyring: Keyring,
    settings: ImagesSettings,
    /// Additive-increase state per bucket, for buckets with no configured limit.
    aimd: Mutex<HashMap<String, Aimd>>,
    /// Successful calls not yet written, per (key, bucket).
    successes: Mutex<HashMap<(String, String), i32>>,
    /// Held by the one task writing successes.
    booking: tokio::sync::Mutex<()>,
    /// When "all keys busy" was last logged, per model.
    waiting_reported: Mutex<HashMap<String, std::time::Instant>>,
}

/// How often "no key can take jobs now" is logged per model.
const WAIT_REPORT_EVERY: Duration = Duration::from_secs(10);

impl ImagesProvider {
    pub fn new(
        pool: PgPool,
        client: ImagesClient,
        output: OutputStore,
        keyring: Keyring,
        settings: ImagesSettings,
    ) -> Self {
        ImagesProvider {
            pool,
            client,
            output,
            keyring,
            settings,
            aimd: Mutex::new(HashMap::new()),
            successes: Mutex::new(HashMap::new()),
            booking: tokio::sync::Mutex::new(()),
            waiting_reported: Mutex::new(HashMap::new()),
        }
    }

    /// Registers the keys in the database (state from earlier runs is kept).
    pub async fn register_keys(&self) -> Result<(), crate::store::StoreError> {
        self.keyring.register(&self.pool).await
    }

    async fn run(&self, job: &Job) -> Execution {
        if let Err(err) = catalog::validate(&job.model, &job.prompt, &job.params) {
            return Execution::without_call(Outcome::Failed {
                error: err.to_string(),
            });
        }
        let cost = catalog::image_count(&job.params);
        let mut models = vec![job.model.clone()];
        models.extend(fallback_models(&job.params));

        // A slot that frees within `inline_wait` is waited for here (the
        // request then goes out the moment the budget allows); longer waits
        // become a later run_at, so no worker sleeps for long.
        let (soonest, why) = loop {
            let (soonest, why) = match self.find_slot(&models, cost).await {
                Ok(Found::Slot(model, slot)) => return self.call(job, &model, slot).await,
                Ok(Found::Wait(soonest, why)) => (soonest, why),
                Err(err) => {
                    // Fail closed: without the shared budget we cannot know it is safe to send.
                    tracing::warn!(error = %err, "rate-limit state unavailable; nothing sent");
                    return reschedule(
                        Utc::now() + chrono::Duration::seconds(1),
                        format!("rate-limit state unavailable ({err}); nothing was sent"),
                    );
                }
            };
            match soonest.map(|at| (at - Utc::now()).to_std().unwrap_or_default()) {
                Some(wait) if wait <= self.settings.inline_wait => tokio::time::sleep(wait).await,
                _ => break (soonest, why),
            }
        };
        let run_at =
            soonest.unwrap_or_else(|| Utc::now() + to_chrono(self.settings.disabled_recheck));
        let wait_ms = (run_at - Utc::now()).num_milliseconds().max(0);
        let reason = why.join("; ");
        crate::metrics::waiting_for_capacity(&job.model);
        if self.should_report_waiting(&job.model) {
            tracing::info!(event = "all_keys_cooling", job_id = %job.id, model = %job.model, wait_ms, reason = %reason, "no key can take jobs now; they wait (no attempt spent)");
        } else {
            tracing::debug!(event = "all_keys_cooling", job_id = %job.id, wait_ms, reason = %reason, "rescheduled");
        }
        reschedule(run_at, format!("waiting for capacity: {reason}"))
    }

    /// True at most once per [`WAIT_REPORT_EVERY`] per model, so a queue
    /// of waiting jobs makes one log line, not one per job.
    fn should_report_waiting(&self, model: &str) -> bool {
        let mut last = self.waiting_reported.lock().expect("report lock");
        let now = std::time::Instant::now();
        match last.get(model) {
            Some(at) if now.duration_since(*at) < WAIT_REPORT_EVERY => false,
            _ => {
                last.insert(model.to_string(), now);
                true
            }
        }
    }

    /// Reserves a slot for the job's model, or a fallback model when the
    /// primary cannot be served within `fallback_after`.
    async fn find_slot(
        &self,
        models: &[String],
        cost: u32,
    ) -> Result<Found<'_>, crate::store::StoreError> {
        let mut soonest: Option<DateTime<Utc>> = None;
        let mut why = Vec::new();
        for (i, model) in models.iter().enumerate() {
            let no = match self.keyring.reserve(&self.pool, model, cost).await? {
                Ok(slot) => return Ok(Found::Slot(model.clone(), slot)),
                Err(no) => no,
            };
            let at = match &no {
                NoSlot::Until(at) => Some(*at),
                NoSlot::AllDisabled | NoSlot::NoKeyServes => None,
            };
            why.push(format!("{model}: {}", describe(&no)));
            if let Some(at) = at {
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
            }
            // Wait for the primary if it frees up soon enough.
            let primary_soon = i == 0
                && at.is_some_and(|at| at - Utc::now() <= to_chrono(self.settings.fallback_after));
            if primary_soon {
                break;
            }
        }
        Ok(Found::Wait(soonest, why))
    }

    async fn call(&self, job: &Job, model: &str, slot: Slot<'_>) -> Execution {
        if self.settings.dry_run {
            return self.dry_call(model, slot).await;
        }
        let key_id = slot.key.id.clone();
        let started_at = Utc::now();
        let response = self
            .client
            .generate(&slot.key.secret, model, &job.prompt, &job.params)
            .await;
        let now = Utc::now();
        self.learn(&slot.bucket, &response.headers, now).await;
        let verdict = match &response.result {
            Ok(_) => Verdict::Success,
            Err(CallFailure::Http { status, body }) => {
                classify::classify(*status, &response.headers, body, now)
            }
            Err(other) => Verdict::Transient {
                message: other.to_string(),
            },
        };
        let status = response.status;
        let record =
            |outcome: &'static str, error: Option<String>, retry_after: Option<Duration>| {
                crate::metrics::provider_request(&key_id, model, outcome);
                Call {
                    outcome,
                    key_id: Some(key_id.clone()),
                    http_status: status,
                    error,
                    retry_after,
                    started_at,
                }
            };
        match verdict {
            Verdict::Success => {
                let images = response.result.expect("success has a body");
                let saved = self.output.save(job.id, &images).await;
                self.book_success(&key_id, &slot.bucket).await;
                match saved {
                    Ok(mut result) => {
                        if let Value::Object(map) = &mut result {
                            map.insert("model".into(), Value::String(model.to_string()));
                            map.insert("key_id".into(), Value::String(key_id.clone()));
                        }
                        Execution {
                            outcome: Outcome::Succeeded { result },
                            call: Some(record("succeeded", None, None)),
                        }
                    }
                    Err(err) => {
                        let error = format!("images generated but not stored: {err}");
                        Execution {
                            outcome: Outcome::Retry {
                                error: error.clone(),
                            },
                            call: Some(record("retry", Some(error), None)),
                        }
                    }
                }
            }
            Verdict::RateLimited { wait } => {
                let (until, reason) = self.cool(&key_id, &slot.bucket, wait, status).await;
                let wait_ms = (until - now).num_milliseconds().max(0);
                tracing::info!(event = "rate_limited_rescheduled", job_id = %job.id, key_id = %key_id, wait_ms, "429: job goes back for another key");
                Execution {
                    outcome: Outcome::Reschedule {
                        reason: reason.clone(),
                        run_at: now,
                    },
                    call: Some(record(
                        "rate_limited",
                        Some(reason),
                        Some(Duration::from_millis(wait_ms as u64)),
                    )),
                }
            }
            Verdict::KeyDisabled { reason } => {
                let reason = format!("HTTP {}: {reason}", status.unwrap_or(0));
                self.note(key_store::disable(&self.pool, &key_id, &reason).await);
                tracing::warn!(event = "key_disabled", key_id = %key_id, job_id = %job.id, reason = %reason, "key disabled; job goes to another key");
                Execution {
                    outcome: Outcome::Reschedule {
                        reason: format!("key {key_id} disabled: {reason}"),
                        run_at: now,
                    },
                    call: Some(record("key_rejected", Some(reason), None)),
                }
            }
            Verdict::JobRejected { message } => {
                self.note(key_store::record_used(&self.pool, &key_id).await);
                let error = format!("HTTP {}: {message}", status.unwrap_or(0));
                Execution {
                    outcome: Outcome::Failed {
                        error: error.clone(),
                    },
                    call: Some(record("failed", Some(error), None)),
                }
            }
            Verdict::Transient { message } => {
                let error = match status {
                    Some(s) => format!("HTTP {s}: {message}"),
                    None => message,
                };
                let threshold = self.settings.circuit_threshold;
                match key_store::record_failure(
                    &self.pool,
                    &key_id,
                    &error,
                    threshold,
                    to_chrono(self.settings.circuit_open),
                )
                .await
                {
                    Ok(n) if n >= threshold => {
                        tracing::warn!(event = "key_cooldown", key_id = %key_id, failures = n, wait_ms = self.settings.circuit_open.as_millis() as u64, "circuit open after consecutive failures")
                    }
                    other => self.note(other.map(|_| ())),
                }
                Execution {
                    outcome: Outcome::Retry {
                        error: error.clone(),
                    },
                    call: Some(record("retry", Some(error), None)),
                }
            }
        }
    }

    /// A call that reserved its slot but is never sent: booked as a success.
    async fn dry_call(&self, model: &str, slot: Slot<'_>) -> Execution {
        let started_at = Utc::now();
        let key_id = slot.key.id.clone();
        self.book_success(&key_id, &slot.bucket).await;
        crate::metrics::provider_request(&key_id, model, "succeeded");
        Execution {
            outcome: Outcome::Succeeded {
                result: serde_json::json!({ "dry_run": true, "model": model, "key_id": key_id }),
            },
            call: Some(Call {
                outcome: "succeeded",
                key_id: Some(key_id),
                http_status: None,
                error: None,
                retry_after: None,
                started_at,
            }),
        }
    }

    /// Cools the key and bucket after a 429; returns the deadline and a reason.
    async fn cool(
        &self,
        key_id: &str,
        bucket: &str,
        wait: Option<Duration>,
        status: Option<u16>,
    ) -> (DateTime<Utc>, String) {
        let now = Utc::now();
        let (streak, rpm, source) =
            match key_store::note_rate_limited(&self.pool, key_id, bucket).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(error = %err, "recording a 429 failed");
                    (1, 0.0, "configured".into())
                }
            };
        let (wait, said) = match wait {
            Some(w) => (w, "as the provider asked"),
            None => (
                self.settings
                    .rate_limit_backoff
                    .delay(streak.max(1) as u32, &mut rand::rng()),
                "backoff: the provider named no wait",
            ),
        };
        let new_rpm = (source != "configured" && rpm > 0.0).then(|| {
            let mut aimd = self.aimd.lock().expect("aimd lock");
            aimd.entry(bucket.to_string())
                .or_default()
                .on_rate_limited(rpm)
        });
        let reason = format!(
            "HTTP {}: rate limited; key {key_id} cools for {:.1}s ({said})",
            status.unwrap_or(429),
            wait.as_secs_f64()
        );
        let until = now + to_chrono(wait);
        let until =
            match key_store::cool_down(&self.pool, key_id, bucket, until, &reason, new_rpm).await {
                Ok(kept) => kept,
                Err(err) => {
                    tracing::warn!(error = %err, "persisting a cooldown failed");
                    until
                }
            };
        tracing::info!(event = "key_cooldown", key_id = %key_id, wait_ms = (until - now).num_milliseconds().max(0), new_rpm, "key cooling down");
        (until, reason)
    }

    /// Learns limits the provider announced in its headers.
    async fn learn(&self, bucket: &str, headers: &reqwest::header::HeaderMap, now: DateTime<Utc>) {
        let info = headers::rate_limit_info(headers);
        if let Some(rpm) = crate::limiter::learned_rate(&info) {
            self.note(key_store::set_rate(&self.pool, bucket, rpm, "learned").await);
        }
        if info.remaining_requests == Some(0)
            && let Some(reset) = info.reset_requests
        {
            self.note(key_store::hold_bucket(&self.pool, bucket, now + to_chrono(reset)).await);
        }
    }

    /// After a success, an unconfigured and unlearned bucket creeps its rate up.
    /// Counts a successful call on its key. Whoever finds no write in
    /// flight writes every success booked so far in one round trip; the
    /// others go on at once, their successes riding on the next write.
    async fn book_success(&self, key_id: &str, bucket: &str) {
        *self
            .successes
            .lock()
            .expect("successes lock")
            .entry((key_id.to_string(), bucket.to_string()))
            .or_default() += 1;
        loop {
            let Ok(writer) = self.booking.try_lock() else {
                return; // the writer in flight takes ours too
            };
            loop {
                let batch: Vec<key_store::Successes> =
                    std::mem::take(&mut *self.successes.lock().expect("successes lock"))
                        .into_iter()
                        .map(|((key_id, bucket_id), calls)| key_store::Successes {
                            key_id,
                            bucket_id,
                            calls,
                        })
                        .collect();
                if batch.is_empty() {
                    break;
                }
                match key_store::record_successes(&self.pool, &batch).await {
                    Ok(rates) => {
                        for (bucket, rpm, source) in rates {
                            let calls = batch.iter().filter(|s| s.bucket_id == bucket);
                            let calls: i32 = calls.map(|s| s.calls).sum();
                            if source == "adaptive" {
                                self.increase(&bucket, rpm, calls).await;
                            }
                        }
                    }
                    Err(err) => {
                        // Counters only: lost if the database is away, never a job.
                        tracing::warn!(error = %err, calls = batch.len(), "booking successful calls failed");
                        break;
                    }
                }
            }
            drop(writer);
            // A success booked after our last look, whose caller saw us still
            // writing, is ours to write.
            if self.successes.lock().expect("successes lock").is_empty() {
                return;
            }
        }
    }

    async fn increase(&self, bucket: &str, rpm: f64, successes: i32) {
        let next = {
            let mut aimd = self.aimd.lock().expect("aimd lock");
            let state = aimd.entry(bucket.to_string()).or_default();
            (0..successes).fold(rpm, |rate, _| state.on_success(rate, None))
        };
        if next != rpm {
            self.note(key_store::set_rate(&self.pool, bucket, next, "adaptive").await);
        }
    }

    fn note(&self, result: Result<impl Sized, crate::store::StoreError>) {
        if let Err(err) = result {
            tracing::warn!(error = %err, "updating key state failed");
        }
    }
}

impl Provider for ImagesProvider {
    async fn execute(&self, job: &Job) -> Execution {
        self.run(job).await
    }
}

/// What [`ImagesProvider::find_slot`] found.
enum Found<'a> {
    /// A slot on this model.
    Slot(String, Slot<'a>),
    /// None now: the soonest one frees up (None: no usable key), and why.
    Wait(Option<DateTime<Utc>>, Vec<String>),
}

fn reschedule(run_at: DateTime<Utc>, reason: String) -> Execution {
    Execution::without_call(Outcome::Reschedule { reason, run_at })
}

fn describe(no: &NoSlot) -> String {
    match no {
        NoSlot::Until(at) => format!(
            "next key free in {:.1}s",
            (*at - Utc::now()).num_milliseconds().max(0) as f64 / 1000.0
        ),
        NoSlot::AllDisabled => "every key is disabled (see genq keys list)".into(),
        NoSlot::NoKeyServes => "no configured key serves this model".into(),
    }
}

fn fallback_models(params: &Value) -> Vec<String> {
    params
        .get("fallback_models")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
