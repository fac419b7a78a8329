//! The real provider: one job → one Images API call through a reserved key,
//! with the answer classified and the key's state updated for every replica.
//!
//! - The worker reserves room before it claims ([`Provider::reserve`]), so
//!   a job reaches [`Provider::execute`] with a slot already held for it.
//! - 429 → the key and its bucket cool for the provider's wait (or a
//!   backoff growing with consecutive 429s); the job goes back at once for
//!   another key. An unconfigured bucket also lowers its rate (AIMD).
//! - quota / 401 / 403 → key disabled, job back for another key.
//! - content policy / invalid request → job failed, key unharmed.
//! - 5xx / timeout / connection error → job retried with backoff; the key's
//!   failure streak opens its circuit after a threshold.
//! - If the rate-limit state cannot be read (database down), nothing is
//!   reserved, so nothing is claimed or sent.

use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::catalog;
use super::classify::{self, Verdict};
use super::headers;
use super::openai::{CallFailure, ImagesClient};
use super::{Call, Capacity, Execution, Outcome, Provider};
use crate::job::Job;
use crate::keys::adapt::Aimd;
use crate::keys::{Keyring, Slot};
use crate::output::OutputStore;
use crate::retry::Backoff;
use crate::store::buckets;
use crate::store::keys as key_store;

/// Tunables of [`ImagesProvider`].
#[derive(Debug, Clone)]
pub struct ImagesSettings {
    /// Consecutive transient failures that open a key's circuit.
    pub circuit_threshold: i32,
    /// How long an open circuit keeps the key out.
    pub circuit_open: Duration,
    /// Cooldown after a 429 that named no wait, by consecutive 429s.
    pub rate_limit_backoff: Backoff,
    /// Reserve a key's slot and book the call as usual, but send nothing and
    /// succeed at once: genq's own cost per job, limiter included, with no
    /// provider in the way (`genq worker --provider dry-run`).
    pub dry_run: bool,
}

impl Default for ImagesSettings {
    fn default() -> Self {
        ImagesSettings {
            circuit_threshold: 5,
            circuit_open: Duration::from_secs(30),
            rate_limit_backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
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
}

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
        }
    }

    /// Registers the keys in the database (state from earlier runs is kept).
    pub async fn register_keys(&self) -> Result<(), crate::store::StoreError> {
        self.keyring.register(&self.pool).await
    }

    async fn run(&self, job: &Job) -> Execution {
        // A job the client cannot send fails before its slot is used, and
        // the slot goes back: no key is charged for it.
        if let Err(err) = catalog::validate(&job.model, &job.prompt, &job.params) {
            self.give_back_slots(&job.model, 1).await;
            return Execution::without_call(Outcome::Failed {
                error: err.to_string(),
            });
        }
        match self.keyring.take(&job.model).await {
            Some(slot) => self.call(job, &job.model, slot).await,
            // Its slot went stale (the claim took too long): back in line.
            None => Execution::without_call(Outcome::Reschedule {
                reason: format!("no slot was left for {} when the job ran", job.model),
            }),
        }
    }

    async fn give_back_slots(&self, model: &str, n: usize) {
        if let Err(err) = self.keyring.give_back(&self.pool, model, n).await {
            tracing::warn!(error = %err, model, "giving back unused slots failed; they lapse");
        }
    }

    async fn call(&self, job: &Job, model: &str, slot: Slot<'_>) -> Execution {
        if self.settings.dry_run {
            return self.dry_call(model, slot).await;
        }
        let key_id = slot.key.id.clone();
        let started_at = Utc::now();
        let call = self
            .client
            .generate(&slot.key.secret, model, &job.prompt, &job.params);
        let response = if slot.slow {
            // Book the send as it happens, so the next slot is a full
            // interval after it even if this one went out a little late.
            let cost = catalog::image_count(&job.params) as i32;
            let (response, booked) =
                tokio::join!(call, buckets::book_sent(&self.pool, &slot.bucket, cost));
            self.note(booked);
            response
        } else {
            call.await
        };
        let now = Utc::now();
        self.learn(&slot.bucket, &response.headers).await;
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
                let (left, reason) = self.cool(&key_id, &slot.bucket, wait, status).await;
                let wait_ms = left.as_millis() as i64;
                tracing::info!(event = "rate_limited_rescheduled", job_id = %job.id, key_id = %key_id, wait_ms, "429: job goes back in line for another key");
                Execution {
                    outcome: Outcome::Reschedule {
                        reason: reason.clone(),
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

    /// Cools the key and bucket after a 429, from the moment the answer
    /// arrived; returns how long the key now cools, and a reason.
    async fn cool(
        &self,
        key_id: &str,
        bucket: &str,
        wait: Option<Duration>,
        status: Option<u16>,
    ) -> (Duration, String) {
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
        let left =
            match key_store::cool_down(&self.pool, key_id, bucket, wait, &reason, new_rpm).await {
                Ok(left) => left,
                Err(err) => {
                    tracing::warn!(error = %err, "persisting a cooldown failed");
                    wait
                }
            };
        tracing::info!(event = "key_cooldown", key_id = %key_id, wait_ms = left.as_millis() as u64, new_rpm, "key cooling down");
        (left, reason)
    }

    /// Learns limits the provider announced in its headers.
    async fn learn(&self, bucket: &str, headers: &reqwest::header::HeaderMap) {
        let info = headers::rate_limit_info(headers);
        if let Some(rpm) = crate::keys::adapt::learned_rate(&info) {
            self.note(buckets::set_rate(&self.pool, bucket, rpm, "learned").await);
        }
        if info.remaining_requests == Some(0)
            && let Some(reset) = info.reset_requests
        {
            self.note(buckets::hold_bucket(&self.pool, bucket, reset).await);
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
            self.note(buckets::set_rate(&self.pool, bucket, next, "adaptive").await);
        }
    }

    fn note(&self, result: Result<impl Sized, crate::store::StoreError>) {
        if let Err(err) = result {
            tracing::warn!(error = %err, "updating key state failed");
        }
    }
}

impl Provider for ImagesProvider {
    fn limited(&self) -> bool {
        true
    }

    async fn reserve(&self, model: &str, cost: u32, want: usize) -> Capacity {
        match self.keyring.capacity(&self.pool, model, cost, want).await {
            Ok(Ok(n)) => Capacity::Slots(n),
            Ok(Err(no)) => Capacity::Wait {
                retry_in: match no {
                    crate::keys::NoSlot::Until(wait) => Some(wait),
                    _ => None,
                },
                reason: no.describe(model),
            },
            // Fail closed: without the shared budget we cannot know it is safe to send.
            Err(err) => Capacity::Wait {
                retry_in: Some(Duration::from_secs(1)),
                reason: format!("rate-limit state unavailable ({err}); nothing is sent"),
            },
        }
    }

    async fn give_back(&self, model: &str, n: usize) {
        self.give_back_slots(model, n).await;
    }

    async fn execute(&self, job: &Job) -> Execution {
        self.run(job).await
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
