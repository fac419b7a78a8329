//! What a provider's answer meant for the key that got it, recorded where
//! every replica sees it. [`KeyHealth::record`] is the one entry point: the
//! provider classifies an answer, this module decides and persists what it
//! does to the key and its bucket.
//!
//! - success → counted (batched), streaks reset, an adaptive rate may creep up;
//! - 429 → key and bucket cool for the provider's wait (from when the answer
//!   arrived), else a backoff growing with consecutive 429s; an adaptive
//!   bucket lowers its rate;
//! - quota / 401 / 403 → key disabled with the reason (re-tested later);
//! - a 403 naming one model → the key is blocked for that model only;
//! - a spent daily limit → the key cools for the provider's wait, else an hour;
//! - content policy / invalid request → the key was fine;
//! - 5xx / timeout → failure streak; the circuit opens after a threshold.
//!
//! Every answer also teaches the limits announced in `x-ratelimit-*` headers.

use reqwest::header::HeaderMap;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::adapt::{self, Discovery};
use crate::provider::headers;
use crate::retry::Backoff;
use crate::store::StoreError;
use crate::store::buckets;
use crate::store::keys as key_store;

/// How long a key whose daily limit is spent cools when the provider named
/// no wait.
pub const DAILY_WAIT: Duration = Duration::from_secs(3600);

/// Tunables of [`KeyHealth`].
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    /// Consecutive transient failures that open a key's circuit.
    pub circuit_threshold: i32,
    /// How long an open circuit keeps the key out.
    pub circuit_open: Duration,
    /// Cooldown after a 429 that named no wait, by consecutive 429s.
    pub rate_limit_backoff: Backoff,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            circuit_threshold: 5,
            circuit_open: Duration::from_secs(30),
            rate_limit_backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
        }
    }
}

/// What an answer meant for its key (the provider's classification).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer<'a> {
    Success,
    /// Rate limited; `wait` is the provider's hint, if it gave one;
    /// `daily`: a per-day limit is spent.
    RateLimited {
        wait: Option<Duration>,
        daily: bool,
    },
    /// The key itself was refused (quota, 401, 403): `reason` says why.
    KeyRejected {
        reason: &'a str,
    },
    /// The key was refused `model` only (a 403 naming it).
    ModelRejected {
        model: &'a str,
        reason: &'a str,
    },
    /// The job was refused (content policy, invalid request): the key was fine.
    JobRejected,
    /// A failure that may pass (5xx, timeout): `error` says what.
    Transient {
        error: &'a str,
    },
}

/// What recording a 429 did to the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooled {
    /// How long the key now cools (the longer of the new wait and any
    /// cooldown already set).
    pub left: Duration,
    /// For the job's record and operators.
    pub reason: String,
}

/// The key-health policy of one worker process, over the shared state.
pub struct KeyHealth {
    pool: PgPool,
    settings: HealthSettings,
    /// Rate search per bucket, for buckets with no configured limit.
    discovery: Mutex<HashMap<String, Discovery>>,
    /// The successes of each bucket's keys (every replica's) last seen.
    successes_total: Mutex<HashMap<String, i64>>,
    /// Successful calls not yet written, per (key, bucket).
    successes: Mutex<HashMap<(String, String), i32>>,
    /// Held by the one task writing successes.
    booking: tokio::sync::Mutex<()>,
}

impl KeyHealth {
    pub fn new(pool: PgPool, settings: HealthSettings) -> Self {
        KeyHealth {
            pool,
            settings,
            discovery: Mutex::new(HashMap::new()),
            successes: Mutex::new(HashMap::new()),
            successes_total: Mutex::new(HashMap::new()),
            booking: tokio::sync::Mutex::new(()),
        }
    }

    /// Records what `answer` (with its `headers` and HTTP `status`) meant
    /// for `key_id`, whose slot came from `bucket`. Returns the cooldown a
    /// 429 set. Failures to write are logged: key state is advisory for the
    /// next call, never a reason to lose a job.
    pub async fn record(
        &self,
        key_id: &str,
        bucket: &str,
        status: Option<u16>,
        headers: &HeaderMap,
        answer: Answer<'_>,
    ) -> Option<Cooled> {
        self.learn(bucket, headers).await;
        match answer {
            Answer::Success => {
                self.book_success(key_id, bucket).await;
                None
            }
            Answer::RateLimited { wait, daily } => {
                // A spent day with no hint: look again in an hour, not in seconds.
                let wait = wait.or(daily.then_some(DAILY_WAIT));
                Some(self.cool(key_id, bucket, wait, status).await)
            }
            Answer::KeyRejected { reason } => {
                note(key_store::disable(&self.pool, key_id, reason).await);
                None
            }
            Answer::ModelRejected { model, reason } => {
                note(key_store::block_model(&self.pool, key_id, model, reason).await);
                None
            }
            Answer::JobRejected => {
                note(key_store::record_used(&self.pool, key_id).await);
                None
            }
            Answer::Transient { error } => {
                let threshold = self.settings.circuit_threshold;
                let open = chrono::Duration::from_std(self.settings.circuit_open)
                    .unwrap_or(chrono::Duration::MAX);
                match key_store::record_failure(&self.pool, key_id, error, threshold, open).await {
                    Ok(n) if n >= threshold => {
                        tracing::warn!(
                            event = "key_cooldown",
                            key_id,
                            failures = n,
                            wait_ms = self.settings.circuit_open.as_millis() as u64,
                            "circuit open after consecutive failures"
                        )
                    }
                    other => note(other),
                }
                None
            }
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
    ) -> Cooled {
        let (streak, rpm, source, saved) =
            match key_store::note_rate_limited(&self.pool, key_id, bucket).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(error = %err, "recording a 429 failed");
                    (1, 0.0, "configured".into(), None)
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
        let new_rpm = (source == "adaptive" && rpm > 0.0)
            .then(|| self.discover(bucket, rpm, saved, |d| d.on_rate_limited(Instant::now())))
            .flatten();
        if let Some(state) = new_rpm.and_then(|_| self.discovery_state(bucket)) {
            note(buckets::save_discovery(&self.pool, bucket, &state).await);
        }
        let reason = format!(
            "HTTP {}: rate limited; key {key_id} cools for {:.1}s ({said})",
            status.unwrap_or(429),
            wait.as_secs_f64()
        );
        let left = self
            .persist_cooldown(key_id, bucket, wait, &reason, new_rpm)
            .await;
        tracing::info!(
            event = "key_cooldown",
            key_id,
            wait_ms = left.as_millis() as u64,
            new_rpm,
            "key cooling down"
        );
        Cooled { left, reason }
    }

    /// Writes a cooldown so every replica, and this one after a restart,
    /// honours it. A write cut off (the database restarting) is tried again
    /// for as long as the wait lasts, each time for what is left of it: a
    /// cooldown that was never stored would let the key be sent to early.
    async fn persist_cooldown(
        &self,
        key_id: &str,
        bucket: &str,
        wait: Duration,
        reason: &str,
        new_rpm: Option<f64>,
    ) -> Duration {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let left = wait.saturating_sub(started.elapsed());
            match key_store::cool_down(&self.pool, key_id, bucket, left, reason, new_rpm).await {
                Ok(stored) => return stored,
                Err(err) if err.is_transient() && started.elapsed() + pause < wait => {
                    tracing::warn!(error = %err, retry_in = ?pause, "persisting a cooldown failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "persisting a cooldown failed");
                    return left;
                }
            }
        }
    }

    /// Learns limits the provider announced in its headers.
    async fn learn(&self, bucket: &str, headers: &HeaderMap) {
        let info = headers::rate_limit_info(headers);
        if let Some(rpm) = adapt::learned_rate(&info) {
            note(buckets::set_rate(&self.pool, bucket, rpm, "learned").await);
        }
        if info.remaining_requests == Some(0)
            && let Some(reset) = info.reset_requests
        {
            note(buckets::hold_bucket(&self.pool, bucket, reset).await);
        }
    }

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
                        for (bucket, rpm, source, saved, ok_before) in rates {
                            let calls = batch.iter().filter(|s| s.bucket_id == bucket);
                            let calls: i32 = calls.map(|s| s.calls).sum();
                            if source == "adaptive" {
                                // The search judges the bucket's whole load:
                                // every replica's successes, not just ours.
                                let seen = self.successes_seen(
                                    &bucket,
                                    ok_before + i64::from(calls),
                                    calls,
                                );
                                self.increase(&bucket, rpm, saved, seen).await;
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

    /// How many successes on `bucket`, by any replica, since this process
    /// last looked: `total` now, of which `ours` just booked.
    fn successes_seen(&self, bucket: &str, total: i64, ours: i32) -> i32 {
        let mut last = self.successes_total.lock().expect("totals lock");
        let before = last.insert(bucket.to_string(), total);
        match before {
            Some(b) if total >= b => i32::try_from(total - b).unwrap_or(i32::MAX),
            _ => ours, // first look, or counters were reset
        }
    }

    /// After successes, the search for an unannounced limit may move up.
    async fn increase(
        &self,
        bucket: &str,
        rpm: f64,
        saved: Option<serde_json::Value>,
        successes: i32,
    ) {
        let now = Instant::now();
        let next = self.discover(bucket, rpm, saved, |d| {
            (0..successes).fold(None, |changed, _| d.on_success(now).or(changed))
        });
        if let Some(next) = next.filter(|n| *n != rpm) {
            note(buckets::set_rate(&self.pool, bucket, next, "adaptive").await);
            if let Some(state) = self.discovery_state(bucket) {
                note(buckets::save_discovery(&self.pool, bucket, &state).await);
            }
        }
    }

    /// Runs `step` on the bucket's discovery, resumed from what the
    /// database saved (or started at `rpm`) the first time this process
    /// sees the bucket, and again whenever another replica moved its rate.
    fn discover<T>(
        &self,
        bucket: &str,
        rpm: f64,
        saved: Option<serde_json::Value>,
        step: impl FnOnce(&mut Discovery) -> T,
    ) -> T {
        let stored = || {
            saved
                .clone()
                .and_then(|v| serde_json::from_value::<adapt::DiscoveryState>(v).ok())
                .map(Discovery::resume)
                .unwrap_or_else(|| Discovery::new(rpm))
        };
        let mut all = self.discovery.lock().expect("discovery lock");
        let discovery = all.entry(bucket.to_string()).or_insert_with(stored);
        if (discovery.rate() - rpm).abs() > 1e-6 {
            // Another replica moved the bucket's rate: go on from its search.
            *discovery = stored();
        }
        step(discovery)
    }

    fn discovery_state(&self, bucket: &str) -> Option<serde_json::Value> {
        let all = self.discovery.lock().expect("discovery lock");
        all.get(bucket)
            .and_then(|d| serde_json::to_value(d.state()).ok())
    }
}

fn note(result: Result<impl Sized, StoreError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "updating key state failed");
    }
}
