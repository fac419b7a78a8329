//! The real provider: one job → one Images API call through a reserved key,
//! with the answer classified and the key's state updated for every replica.
//!
//! - The worker reserves room before it claims ([`Provider::reserve`]), so
//!   a job reaches [`Provider::execute`] with a slot already held for it.
//! - 429 → the key and its bucket cool for the provider's wait (or a
//!   backoff growing with consecutive 429s); the job goes back at once for
//!   another key. A bucket whose limit nobody announced searches for it
//!   (`keys::adapt`).
//! - quota / 401 / 403 → key disabled, job back for another key.
//! - content policy / invalid request → job failed, key unharmed.
//! - 5xx / timeout / connection error → job retried with backoff; the key's
//!   failure streak opens its circuit after a threshold.
//! - If the rate-limit state cannot be read (database down), nothing is
//!   reserved, so nothing is claimed or sent.

use async_openai::types::images::ImagesResponse;
use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

use super::catalog;
use super::classify::{self, Verdict};
use super::images_api::ImagesApi;
use super::openai::{CallFailure, Delivered, ImagesClient, wire_name};
use super::{Call, Capacity, Execution, Outcome, Provider};
use crate::cost::prices::Answered;
use crate::cost::{Cost, CostSource, PriceTable, Tokens};
use crate::input::resolve::{self, ResolveError};
use crate::input::{EditInputs, UrlPolicy};
use crate::job::{AttemptOutcome, Job, Operation};
use crate::keys::health::{Answer, HealthSettings};
use crate::keys::{KeyHealth, Keyring, Slot};
use crate::output::OutputStore;
use crate::store::buckets;

/// How long a model whose keys are all over budget is left alone (a raised
/// cap wakes workers at once through `genq_keys`).
const OVER_BUDGET_RECHECK: Duration = Duration::from_secs(5);

/// Tunables of [`ImagesProvider`].
#[derive(Debug, Clone)]
pub struct ImagesSettings {
    /// What answers do to keys: circuit breaker, backoff after a bare 429.
    pub health: HealthSettings,
    /// Whether edits may fetch input URLs on private addresses
    /// (`GENQ_ALLOW_PRIVATE_URLS`).
    pub urls: UrlPolicy,
    /// What answered calls cost (`GENQ_PRICES` on top of the shipped table).
    pub prices: Arc<PriceTable>,
}

impl Default for ImagesSettings {
    fn default() -> Self {
        ImagesSettings {
            health: HealthSettings::default(),
            urls: UrlPolicy::default(),
            prices: Arc::new(PriceTable::shipped()),
        }
    }
}

/// Generates images with the OpenAI Images API (or a compatible server)
/// through `C`: the real client, or [`super::images_api::DryRun`].
pub struct ImagesProvider<C: ImagesApi = ImagesClient> {
    pool: PgPool,
    client: C,
    output: OutputStore,
    keyring: Keyring,
    health: KeyHealth,
    urls: UrlPolicy,
    prices: Arc<PriceTable>,
    /// Models already reported as unpriced (once each per process).
    unpriced: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl<C: ImagesApi> ImagesProvider<C> {
    pub fn new(
        pool: PgPool,
        client: C,
        output: OutputStore,
        keyring: Keyring,
        settings: ImagesSettings,
    ) -> Self {
        ImagesProvider {
            client,
            output,
            keyring,
            health: KeyHealth::new(pool.clone(), settings.health),
            urls: settings.urls,
            prices: settings.prices,
            unpriced: Default::default(),
            pool,
        }
    }

    /// Registers the keys in the database (state from earlier runs is kept).
    pub async fn register_keys(&self) -> Result<(), crate::store::StoreError> {
        self.keyring.register(&self.pool).await
    }

    async fn run(&self, job: &Job) -> Execution {
        // A job the client cannot send fails before its slot is used, and
        // the slot goes back: no key is charged for it.
        let checked = crate::validation::params::validate(&job.model, &job.prompt, &job.params)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::validation::inputs::operation_params(job.operation, &job.params)
                    .map_err(|e| e.to_string())
            });
        if let Err(error) = checked {
            self.give_back_slots(&job.model, 1).await;
            return Execution::without_call(Outcome::Failed { error });
        }
        match self.keyring.take(&job.model).await {
            Some(slot) => {
                // An edit's images are read once its slot is taken (a slot
                // untaken for long goes stale; one sent late is never too
                // early). Images that cannot be read give the slot back.
                let inputs = match job.operation {
                    Operation::Generate => None,
                    Operation::Edit => match self.inputs(job).await {
                        Ok(inputs) => Some(inputs),
                        Err(err) => {
                            let cost = catalog::image_count(&job.params);
                            if let Err(e) = self.keyring.return_taken(&self.pool, slot, cost).await
                            {
                                tracing::warn!(error = %e, "giving back an unused slot failed; it lapses");
                            }
                            return Execution::without_call(match err {
                                ResolveError::Refused(error) => Outcome::Failed { error },
                                ResolveError::NotReady(reason) => Outcome::Reschedule { reason },
                                ResolveError::Transient(error) => Outcome::Retry { error },
                            });
                        }
                    },
                };
                self.call(job, &job.model, slot, inputs.as_ref()).await
            }
            // Its slot went stale (the claim took too long): back in line.
            None => Execution::without_call(Outcome::Reschedule {
                reason: format!("no slot was left for {} when the job ran", job.model),
            }),
        }
    }

    /// The images and mask an edit sends.
    async fn inputs(&self, job: &Job) -> Result<EditInputs, ResolveError> {
        resolve::resolve(&self.pool, &self.output, job.id, self.urls).await
    }

    async fn give_back_slots(&self, model: &str, n: usize) {
        if let Err(err) = self.keyring.give_back(&self.pool, model, n).await {
            tracing::warn!(error = %err, model, "giving back unused slots failed; they lapse");
        }
    }

    async fn call(
        &self,
        job: &Job,
        model: &str,
        slot: Slot<'_>,
        inputs: Option<&EditInputs>,
    ) -> Execution {
        let key_id = slot.key.id.clone();
        let started_at = Utc::now();
        let secret = &slot.key.secret;
        let call = async {
            match inputs {
                None => {
                    self.client
                        .generate(secret, model, &job.prompt, &job.params)
                        .await
                }
                Some(inputs) => {
                    self.client
                        .edit(secret, model, &job.prompt, &job.params, inputs)
                        .await
                }
            }
        };
        let response = if slot.slow {
            // Book the send as it happens, so the next slot is a full
            // interval after it even if this one went out a little late.
            let cost = catalog::image_count(&job.params) as i32;
            let (response, booked) =
                tokio::join!(call, buckets::book_sent(&self.pool, &slot.bucket, cost));
            if let Err(err) = booked {
                tracing::warn!(error = %err, "booking a send failed");
            }
            response
        } else {
            call.await
        };
        let verdict = match &response.result {
            Ok(_) => Verdict::Success,
            Err(CallFailure::Http { status, body }) => {
                classify::classify(*status, &response.headers, body, Utc::now())
            }
            Err(other) => classify::classify_transport(&other.to_string()),
        };
        let status = response.status;
        let with_status = |message: &str| match status {
            Some(s) => format!("HTTP {s}: {message}"),
            None => message.to_string(),
        };
        let answer_text = match &verdict {
            Verdict::KeyDisabled { reason } | Verdict::ModelRejected { reason } => {
                with_status(reason)
            }
            Verdict::Transient { message } | Verdict::JobRejected { message } => {
                with_status(message)
            }
            _ => String::new(),
        };
        let answer = match &verdict {
            Verdict::Success => Answer::Success,
            Verdict::RateLimited { wait, daily } => Answer::RateLimited {
                wait: *wait,
                daily: *daily,
            },
            Verdict::KeyDisabled { .. } => Answer::KeyRejected {
                reason: &answer_text,
            },
            Verdict::ModelRejected { .. } => Answer::ModelRejected {
                model,
                reason: &answer_text,
            },
            Verdict::JobRejected { .. } => Answer::JobRejected,
            Verdict::Transient { .. } => Answer::Transient {
                error: &answer_text,
            },
        };
        let cooled = self
            .health
            .record(&key_id, &slot.bucket, status, &response.headers, answer)
            .await;
        if let Err(err) = self
            .keyring
            .learn_account(&self.pool, &key_id, &response.headers)
            .await
        {
            tracing::warn!(error = %err, "recording the key's account failed");
        }
        let record =
            |outcome: AttemptOutcome, error: Option<String>, retry_after: Option<Duration>| {
                crate::metrics::provider_request(&key_id, model, outcome);
                Call {
                    outcome,
                    key_id: Some(key_id.clone()),
                    http_status: status,
                    error,
                    retry_after,
                    started_at,
                    cost: None,
                }
            };
        match verdict {
            Verdict::Success => {
                let mut cost = None;
                let stored = match response.result.expect("success has a body") {
                    Delivered::Images(images) => {
                        // Billed once answered, whether or not the images are kept.
                        cost = Some(self.cost_of(model, &job.params, &images));
                        let max_image = super::footprint::max_image_bytes(&job.params);
                        self.output
                            .save(job.id, job.attempts, images, max_image)
                            .await
                    }
                    Delivered::NotSent => Ok(serde_json::json!({ "dry_run": true })),
                };
                let record = |outcome, error| Call {
                    cost: cost.clone(),
                    ..record(outcome, error, None)
                };
                match stored {
                    Ok(mut result) => {
                        if let Value::Object(map) = &mut result {
                            map.insert("model".into(), Value::String(model.to_string()));
                            map.insert("key_id".into(), Value::String(key_id.clone()));
                        }
                        Execution {
                            outcome: Outcome::Succeeded { result },
                            call: Some(record(AttemptOutcome::Succeeded, None)),
                        }
                    }
                    Err(err) => {
                        let error = format!("images generated but not stored: {err}");
                        Execution {
                            outcome: Outcome::Retry {
                                error: error.clone(),
                            },
                            call: Some(record(AttemptOutcome::Retry, Some(error))),
                        }
                    }
                }
            }
            Verdict::RateLimited { .. } => {
                let cooled = cooled.expect("a 429 cools its key");
                tracing::info!(event = "rate_limited_rescheduled", job_id = %job.id, key_id = %key_id, wait_ms = cooled.left.as_millis() as u64, "429: job goes back in line for another key");
                Execution {
                    outcome: Outcome::Reschedule {
                        reason: cooled.reason.clone(),
                    },
                    call: Some(record(
                        AttemptOutcome::RateLimited,
                        Some(cooled.reason),
                        Some(cooled.left),
                    )),
                }
            }
            Verdict::KeyDisabled { .. } => {
                tracing::warn!(event = "key_disabled", key_id = %key_id, job_id = %job.id, reason = %answer_text, "key disabled; job goes back in line for another key");
                Execution {
                    outcome: Outcome::Reschedule {
                        reason: format!("key {key_id} disabled: {answer_text}"),
                    },
                    call: Some(record(AttemptOutcome::KeyRejected, Some(answer_text), None)),
                }
            }
            Verdict::ModelRejected { .. } => {
                tracing::warn!(event = "key_model_blocked", key_id = %key_id, model, job_id = %job.id, reason = %answer_text, "key refused this model; it serves the others, and the job goes back in line");
                Execution {
                    outcome: Outcome::Reschedule {
                        reason: format!("key {key_id} may not use {model}: {answer_text}"),
                    },
                    call: Some(record(AttemptOutcome::KeyRejected, Some(answer_text), None)),
                }
            }
            Verdict::JobRejected { .. } => Execution {
                outcome: Outcome::Failed {
                    error: answer_text.clone(),
                },
                call: Some(record(AttemptOutcome::Failed, Some(answer_text), None)),
            },
            Verdict::Transient { .. } => Execution {
                outcome: Outcome::Retry {
                    error: answer_text.clone(),
                },
                call: Some(record(AttemptOutcome::Retry, Some(answer_text), None)),
            },
        }
    }
}

impl<C: ImagesApi> ImagesProvider<C> {
    /// What an answer cost: its `usage` priced per token, else its images
    /// at the table's price for the quality and size it reports (the job's
    /// params when it does not say).
    fn cost_of(&self, model: &str, params: &Value, answer: &ImagesResponse) -> Cost {
        let param = |name: &str| params.get(name).and_then(Value::as_str).map(str::to_string);
        let quality = answer
            .quality
            .as_ref()
            .and_then(wire_name)
            .or_else(|| param("quality"));
        let size = answer
            .size
            .as_ref()
            .and_then(wire_name)
            .or_else(|| param("size"));
        let tokens = answer.usage.as_ref().map(|u| {
            let details = &u.input_tokens_details;
            // Input the details do not break down is billed as text.
            let listed = details.text_tokens.saturating_add(details.image_tokens);
            Tokens {
                text_input: details.text_tokens + u.input_tokens.saturating_sub(listed),
                image_input: details.image_tokens,
                output: u.output_tokens,
            }
        });
        let images = u32::try_from(answer.data.len()).unwrap_or(u32::MAX);
        let cost = self.prices.cost(
            model,
            &Answered {
                tokens,
                quality: quality.as_deref(),
                size: size.as_deref(),
                images,
            },
        );
        if cost.source == CostSource::Unpriced
            && self
                .unpriced
                .lock()
                .expect("unpriced lock")
                .insert(model.to_string())
        {
            tracing::warn!(
                event = "unpriced_call",
                model,
                "the price table has no price for this model; the call is recorded as unpriced (add it with GENQ_PRICES)"
            );
        }
        cost
    }
}

impl<C: ImagesApi> Provider for ImagesProvider<C> {
    fn limited(&self) -> bool {
        true
    }

    async fn reserve(&self, model: &str, cost: u32, want: usize) -> Capacity {
        match self.keyring.capacity(&self.pool, model, cost, want).await {
            Ok(Ok(n)) => Capacity::Slots(n),
            Ok(Err(no)) => Capacity::Wait {
                retry_in: match no {
                    crate::keys::NoSlot::Until(wait) => Some(wait),
                    // Look again when a disabled key is due its re-test.
                    crate::keys::NoSlot::AllDisabled => Some(self.keyring.retest_every()),
                    crate::keys::NoSlot::NoKeyServes => None,
                    // Looked at again each round the budgets are read.
                    crate::keys::NoSlot::OverBudget => Some(OVER_BUDGET_RECHECK),
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

    fn over_budget(&self, scopes: &[String]) {
        self.keyring.set_over_budget(scopes);
    }

    fn footprint(&self, job: &Job) -> u64 {
        self.client.peak_bytes(&job.params)
    }

    async fn execute(&self, job: &Job) -> Execution {
        self.run(job).await
    }
}
