//! The simulator's judgement of one request, made synchronously under one lock at arrival so
//! that concurrent requests are admitted in a single, race-free order and logged in that
//! order. The HTTP layer only sleeps and writes out what was decided here.
//!
//! Checks, in order: bearer key (401), key behaviour (429 `insufficient_quota`), body
//! validation (400), a model the key may not use (403), the daily cap (429), rate limits
//! (429, nothing spent; keys naming one project share its limits), then - with budget spent, as a real
//! gateway admits before the model runs - content policy (400), `[sim:500]`/`[sim:503]`,
//! random 5xx at `fail_rate_5xx`, and finally 200.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::audit::WindowAudit;
use super::config::{KeyBehavior, RetryHeader, SimConfig, SimKey};
use super::errors::ApiError;
use super::headers::{ceil_millis, ceil_secs, go_duration, ratelimit_headers, retry_hint};
use super::limits::{KeyLimiter, LimitKind, Verdict};
use super::request::{self, GenRequest, RawRequest};
use super::stats::{ANONYMOUS, RequestRecord, SimStats, key_id};

/// What to answer, decided at arrival.
#[derive(Debug)]
pub struct Outcome {
    /// The images to generate, or the error to answer.
    pub result: Result<GenRequest, ApiError>,
    /// Extra headers (rate-limit family, retry hint).
    pub headers: Vec<(&'static str, String)>,
    /// How long to wait before answering.
    pub delay: Duration,
    /// For a 429: the wait its hint announced, as a client reads it.
    pub announced: Option<Duration>,
}

struct Key {
    id: String,
    config: SimKey,
    /// Index of the limits this key draws from (shared by a project's keys).
    state: usize,
}

/// The limits of one key, or of one project shared by its keys.
struct KeyState {
    /// The key whose configuration set these limits.
    owner: String,
    limiter: KeyLimiter,
    requests_audit: WindowAudit,
    images_audit: Option<WindowAudit>,
    exceeded: u64,
    /// (cap, current window's index, requests admitted in it).
    day: Option<(u32, u64, u32)>,
}

struct Mutable {
    keys: Vec<KeyState>,
    log: Vec<RequestRecord>,
    rng: StdRng,
    /// Requests seen per prompt carrying `[sim:STATUSxN]`.
    fail_first_seen: std::collections::HashMap<String, u32>,
}

/// Shared state behind a [`super::Sim`] handle.
pub struct Core {
    keys: Vec<Key>,
    by_secret: HashMap<String, usize>,
    marker: String,
    fail_rate: f64,
    latency: Duration,
    /// The length of a daily window.
    day: Duration,
    started: Instant,
    state: Mutex<Mutable>,
}

impl Core {
    /// Builds the state for `config` (rates of 0 are treated as 1).
    pub fn new(config: SimConfig) -> Self {
        let mut states: Vec<KeyState> = Vec::new();
        let mut projects: HashMap<String, usize> = HashMap::new();
        let mut keys: Vec<Key> = Vec::new();
        for k in config.keys {
            let id = key_id(&k.secret);
            let shared = k.project.as_ref().and_then(|p| projects.get(p).copied());
            let state = shared.unwrap_or_else(|| {
                let burst = k.burst.unwrap_or(1).max(1);
                states.push(KeyState {
                    owner: id.clone(),
                    limiter: KeyLimiter::new(k.requests_per_minute, k.images_per_minute, burst),
                    requests_audit: WindowAudit::new(k.requests_per_minute, burst),
                    images_audit: k.images_per_minute.map(|i| WindowAudit::new(i, burst)),
                    exceeded: 0,
                    day: k.requests_per_day.map(|cap| (cap, 0, 0)),
                });
                states.len() - 1
            });
            if let Some(project) = &k.project {
                projects.entry(project.clone()).or_insert(state);
            }
            keys.push(Key {
                id,
                config: k,
                state,
            });
        }
        let by_secret = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.config.secret.clone(), i))
            .collect();
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            keys,
            by_secret,
            marker: config.content_policy_marker.to_lowercase(),
            day: Duration::from_secs(config.day_window_secs.max(1)),
            fail_rate: config.fail_rate_5xx.clamp(0.0, 1.0),
            latency: config.latency,
            started: Instant::now(),
            state: Mutex::new(Mutable {
                keys: states,
                log: Vec::new(),
                fail_first_seen: std::collections::HashMap::new(),
                rng,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Judges one request carrying bearer token `secret` (if any) and `body`, and logs it.
    pub fn decide(&self, secret: Option<&str>, body: &[u8]) -> Outcome {
        let raw = request::parse(body);
        let (model, n, sleep) = match &raw {
            Ok(r) => {
                let sleep = r
                    .prompt
                    .as_deref()
                    .map(request::faults)
                    .unwrap_or_default()
                    .sleep;
                (r.model.clone().unwrap_or_default(), r.logged_n(), sleep)
            }
            Err(_) => (String::new(), 0, Duration::ZERO),
        };
        let mut state = self.lock();
        let at = Utc::now();
        let now_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (id, outcome) = match secret.map(|s| (s, self.by_secret.get(s))) {
            None => (ANONYMOUS.to_string(), reject(ApiError::missing_api_key())),
            Some((s, None)) => (key_id(s), reject(ApiError::invalid_api_key(s))),
            Some((_, Some(&i))) => (
                self.keys[i].id.clone(),
                self.judge(&mut state, i, raw, now_ns),
            ),
        };
        let status = outcome
            .result
            .as_ref()
            .map_or_else(|e| e.status, |_| StatusCode::OK);
        state.log.push(RequestRecord {
            at,
            key_id: id,
            model,
            n,
            status: status.as_u16(),
            error_code: outcome
                .result
                .as_ref()
                .err()
                .and_then(|e| e.code)
                .map(str::to_string),
            retry_after_ms: outcome
                .announced
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
        Outcome {
            delay: self.latency + sleep,
            ..outcome
        }
    }

    fn judge(
        &self,
        state: &mut Mutable,
        index: usize,
        raw: Result<RawRequest, ApiError>,
        now_ns: u64,
    ) -> Outcome {
        let key = &self.keys[index].config;
        let mut headers = Vec::new();
        if let Some(org) = &key.organization {
            headers.push(("openai-organization", org.clone()));
        }
        if let Some(project) = &key.project {
            headers.push(("openai-project", project.clone()));
        }
        let ks = &mut state.keys[self.keys[index].state];
        if key.send_ratelimit_headers {
            headers.extend(ratelimit_headers(&ks.limiter.request_window(now_ns)));
        }
        if key.behavior == KeyBehavior::InsufficientQuota {
            return Outcome {
                headers,
                ..reject(ApiError::insufficient_quota())
            };
        }
        let req = match raw.and_then(|r| request::validate(&r)) {
            Ok(req) => req,
            Err(e) => {
                return Outcome {
                    headers,
                    ..reject(e)
                };
            }
        };
        if key.forbidden_models.contains(&req.model) {
            return Outcome {
                headers,
                ..reject(ApiError::model_forbidden(&req.model))
            };
        }
        let day_ns = u64::try_from(self.day.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let window = now_ns / day_ns;
        if let Some((cap, w, used)) = ks.day.as_mut() {
            if *w != window {
                (*w, *used) = (window, 0);
            }
            if *used >= *cap {
                let wait = Duration::from_nanos((window + 1) * day_ns - now_ns);
                let org = key.organization.as_deref().unwrap_or("org-sim");
                let error = ApiError::daily_limited(&req.model, org, *cap, wait);
                return hinted(key, headers, wait, error);
            }
        }
        if let Verdict::Limited { wait, by } = ks.limiter.try_acquire(now_ns, req.n) {
            return limited(key, ks, headers, &req, now_ns, wait, by);
        }
        if let Some((_, _, used)) = ks.day.as_mut() {
            *used += 1;
        }
        if key.send_ratelimit_headers {
            // The window after this request was admitted.
            headers.retain(|(name, _)| !name.starts_with("x-ratelimit-"));
            headers.extend(ratelimit_headers(&ks.limiter.request_window(now_ns)));
        }
        let mut over = ks.requests_audit.admit(now_ns, 1);
        if let Some(audit) = ks.images_audit.as_mut() {
            over |= audit.admit(now_ns, req.n);
        }
        let failure = if !self.marker.is_empty() && req.prompt.to_lowercase().contains(&self.marker)
        {
            Some(ApiError::content_policy())
        } else if let Some(status) = req.faults.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(ApiError::server_error(status))
        } else if let Some((status, times)) = req.faults.fail_first
            && {
                let seen = state.fail_first_seen.entry(req.prompt.clone()).or_default();
                *seen += 1;
                *seen <= times
            }
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(ApiError::server_error(status))
        } else if self.fail_rate > 0.0 && state.rng.random_bool(self.fail_rate) {
            Some(ApiError::server_error(StatusCode::INTERNAL_SERVER_ERROR))
        } else {
            None
        };
        if let Some(error) = failure {
            return Outcome {
                headers,
                ..reject(error)
            };
        }
        if over {
            state.keys[self.keys[index].state].exceeded += 1;
        }
        Outcome {
            result: Ok(req),
            headers,
            delay: Duration::ZERO,
            announced: None,
        }
    }

    /// Copy of the log so far.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Counts derived from the log.
    pub fn stats(&self) -> SimStats {
        let state = self.lock();
        let exceeded = state.keys.iter().map(|s| (s.owner.as_str(), s.exceeded));
        SimStats::from_log(&state.log, exceeded)
    }
}

/// The 429 for `req`, refused by `by` for `wait`: rate-limit family with the true wait as
/// the reset, plus the key's retry hint.
fn limited(
    key: &SimKey,
    ks: &KeyState,
    headers: Vec<(&'static str, String)>,
    req: &GenRequest,
    now_ns: u64,
    wait: Duration,
    by: LimitKind,
) -> Outcome {
    let (limit, current) = match (by, ks.images_audit.as_ref()) {
        (LimitKind::Images, Some(audit)) => (
            key.images_per_minute.unwrap_or(0),
            audit.current_at(now_ns) + u64::from(req.n),
        ),
        _ => (
            key.requests_per_minute,
            ks.requests_audit.current_at(now_ns) + 1,
        ),
    };
    let error = ApiError::rate_limited(by, limit, current, wait.as_secs_f64());
    hinted(key, headers, wait, error)
}

/// A 429 `error` that says to come back after `wait`, in the key's retry
/// style (and the rate-limit family's reset), noting what it announced.
fn hinted(
    key: &SimKey,
    mut headers: Vec<(&'static str, String)>,
    wait: Duration,
    error: ApiError,
) -> Outcome {
    let mut set = |name: &'static str, value: String| {
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    };
    if key.send_ratelimit_headers {
        set("x-ratelimit-reset-requests", go_duration(wait));
    }
    let now = SystemTime::now();
    if let Some((name, value)) = retry_hint(key.retry_header, wait, now) {
        set(name, value);
    }
    Outcome {
        headers,
        announced: announced(key.retry_header, wait, now),
        ..reject(error)
    }
}

/// The wait a client reads from the hint `retry_hint` sends for `wait` at
/// `now` (each form rounds up).
fn announced(style: RetryHeader, wait: Duration, now: SystemTime) -> Option<Duration> {
    match style {
        RetryHeader::RetryAfterSeconds => Some(Duration::from_secs(ceil_secs(wait))),
        RetryHeader::RetryAfterMs | RetryHeader::ResetRequests => {
            Some(Duration::from_millis(ceil_millis(wait)))
        }
        RetryHeader::RetryAfterHttpDate => {
            let at = now.duration_since(UNIX_EPOCH).unwrap_or_default() + wait;
            let date = Duration::from_secs(ceil_secs(at));
            date.checked_sub(now.duration_since(UNIX_EPOCH).unwrap_or_default())
        }
        RetryHeader::None => None,
    }
}

fn reject(error: ApiError) -> Outcome {
    Outcome {
        result: Err(error),
        headers: Vec::new(),
        delay: Duration::ZERO,
        announced: None,
    }
}
