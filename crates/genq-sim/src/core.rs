//! The simulator's judgement of one request, made synchronously under one lock at arrival so
//! that concurrent requests are admitted in a single, race-free order and logged in that
//! order. The HTTP layer only sleeps and writes out what was decided here.
//!
//! Checks, in order: bearer key (401), key behaviour (429 `insufficient_quota`), body
//! validation (400), a model the key may not use (403), the daily caps (429, nothing
//! counted), rate limits (429, nothing spent; keys naming one project share its limits),
//! then - with budget spent and the day's count taken, as a real gateway admits before the
//! model runs - content policy (400), `[sim:500]`/`[sim:503]`, random 5xx at
//! `fail_rate_5xx`, and finally 200.
//!
//! Every request is logged with its arrival on the sim's monotonic clock, and each answer
//! with the moment it is sent ([`Core::sent`]), so the arrival witness
//! ([`Core::arrivals`], [`Core::early_after_429`]) can judge the client, not only the sim.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::audit::{WindowAudit, early_after_hints, early_arrivals, max_in_window};
use super::config::{KeyBehavior, RetryHeader, SimConfig, SimKey};
use super::errors::{ApiError, LimitUsage};
use super::headers::{ceil_millis, ceil_secs, go_duration, ratelimit_headers, retry_hint};
use super::limits::{DailyCap, KeyLimiter, LimitKind, Verdict, emission_interval};
use super::request::{self, GenRequest, RawRequest};
use super::stats::{ANONYMOUS, ArrivalReport, ArrivalWitness, RequestRecord, SimStats, key_id};

/// The organization named in rate-limit messages of keys that name none.
const DEFAULT_ORGANIZATION: &str = "org-sim";

/// What to answer, decided at arrival.
#[derive(Debug)]
pub struct Outcome {
    /// The images to generate, or the error to answer.
    pub result: Result<GenRequest, ApiError>,
    /// Extra headers (rate-limit family, retry hint).
    pub headers: Vec<(&'static str, String)>,
    /// How long to wait before answering.
    pub delay: Duration,
    /// For a 429: what its hints announced.
    pub announced: Option<Announced>,
    /// Index of this request's record in the log, for [`Core::sent`].
    pub record: usize,
}

/// The waits a 429's hints announced, as a client reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The longest relative hint (seconds, milliseconds, a duration, the message's
    /// "try again in"), counted from whenever the client reads it.
    relative: Duration,
    /// An HTTP date's wait, counted from the arrival (a date names an instant).
    absolute: Option<Duration>,
}

impl Announced {
    /// The longest wait, counted from the arrival.
    fn longest(&self) -> Duration {
        self.relative.max(self.absolute.unwrap_or_default())
    }
}

struct Key {
    id: String,
    config: SimKey,
    /// Index of the limits this key draws from (shared by a project's keys).
    state: usize,
}

/// The limits of one key, or of one project shared by its keys (set by its first key).
struct KeyState {
    /// The key whose configuration set these limits.
    owner: String,
    requests_per_minute: u32,
    images_per_minute: Option<u32>,
    burst: u32,
    limiter: KeyLimiter,
    requests_audit: WindowAudit,
    images_audit: Option<WindowAudit>,
    exceeded: u64,
    daily: Option<DailyCap>,
}

impl KeyState {
    /// The arrival witness of `times_ns` against these limits.
    fn witness(&self, times_ns: &[u64], early_after_429: usize) -> ArrivalWitness {
        let interval_ns = u64::try_from(emission_interval(self.requests_per_minute).as_nanos())
            .unwrap_or(u64::MAX);
        let window_ns = interval_ns.saturating_mul(u64::from(self.burst));
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        ArrivalWitness {
            interval_ns,
            burst: self.burst,
            window_ns,
            received: count(times_ns.len()),
            max_in_window: max_in_window(times_ns, window_ns),
            early: count(early_arrivals(times_ns, interval_ns, self.burst).len()),
            early_after_429: count(early_after_429),
        }
    }
}

struct Mutable {
    keys: Vec<KeyState>,
    log: Vec<RequestRecord>,
    /// Hints of answers not sent yet, by log index.
    hints: HashMap<usize, Announced>,
    rng: StdRng,
    /// Requests seen per prompt carrying `[sim:STATUSxN]`.
    fail_first_seen: std::collections::HashMap<String, u32>,
}

/// Shared state behind a [`super::Sim`] handle.
pub struct Core {
    keys: Vec<Key>,
    by_secret: HashMap<String, usize>,
    marker: String,
    /// Send images at the size asked instead of 16x16 (`full_size_images`).
    pub(super) full_size_images: bool,
    fail_rate: f64,
    latency: Duration,
    started: Instant,
    state: Mutex<Mutable>,
}

impl Core {
    /// Builds the state for `config` (rates of 0 are treated as 1).
    pub fn new(config: SimConfig) -> Self {
        let mut states: Vec<KeyState> = Vec::new();
        let mut projects: HashMap<String, usize> = HashMap::new();
        let mut keys: Vec<Key> = Vec::new();
        let day = Duration::from_secs(config.day_window_secs.max(1));
        for k in config.keys {
            let id = key_id(&k.secret);
            let shared = k.project.as_ref().and_then(|p| projects.get(p).copied());
            let state = shared.unwrap_or_else(|| {
                let burst = k.burst.unwrap_or(1).max(1);
                let rpm = k.requests_per_minute.max(1);
                let ipm = k.images_per_minute.map(|i| i.max(1));
                states.push(KeyState {
                    owner: id.clone(),
                    requests_per_minute: rpm,
                    images_per_minute: ipm,
                    burst,
                    limiter: KeyLimiter::new(rpm, ipm, burst),
                    requests_audit: WindowAudit::new(rpm, burst),
                    images_audit: ipm.map(|i| WindowAudit::new(i, burst)),
                    exceeded: 0,
                    daily: DailyCap::new(k.requests_per_day, k.images_per_day, day),
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
            full_size_images: config.full_size_images,
            fail_rate: config.fail_rate_5xx.clamp(0.0, 1.0),
            latency: config.latency,
            started: Instant::now(),
            state: Mutex::new(Mutable {
                keys: states,
                log: Vec::new(),
                hints: HashMap::new(),
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
        let now_ns = self.now_ns();
        let (id, project, outcome) = match secret.map(|s| (s, self.by_secret.get(s))) {
            None => (
                ANONYMOUS.to_string(),
                None,
                reject(ApiError::missing_api_key()),
            ),
            Some((s, None)) => (key_id(s), None, reject(ApiError::invalid_api_key(s))),
            Some((_, Some(&i))) => (
                self.keys[i].id.clone(),
                self.keys[i].config.project.clone(),
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
            retry_after_ms: outcome.announced.map(|a| ceil_millis(a.longest())),
            arrived_ns: now_ns,
            sent_ns: None,
            retry_deadline_ns: None,
            project,
            parts: Vec::new(),
            usage: outcome
                .result
                .as_ref()
                .ok()
                .map(|req| crate::response::usage(req, 0)),
        });
        let record = state.log.len() - 1;
        if let Some(announced) = outcome.announced {
            state.hints.insert(record, announced);
        }
        Outcome {
            delay: self.latency + sleep,
            record,
            ..outcome
        }
    }

    /// Nanoseconds since the sim was created (its monotonic clock).
    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records an edit's file parts on log entry `record`.
    /// Input images bill tokens too: the entry's usage counts them.
    pub fn attach_parts(&self, record: usize, parts: Vec<crate::edits::InputPart>) {
        if let Some(entry) = self.lock().log.get_mut(record) {
            let images = u32::try_from(parts.len()).unwrap_or(u32::MAX);
            entry.usage = entry.usage.map(|u| u.with_input_images(images));
            entry.parts = parts;
        }
    }

    /// The usage log entry `record` billed, if it was answered with images.
    pub fn usage(&self, record: usize) -> Option<crate::response::Usage> {
        self.lock().log.get(record).and_then(|entry| entry.usage)
    }

    /// Notes that the answer to log entry `record` is being sent now, and when its hints
    /// (if any) let the client come back: relative ones from now, a date at its instant.
    pub fn sent(&self, record: usize) {
        let mut state = self.lock();
        let now_ns = self.now_ns();
        let hint = state.hints.remove(&record);
        let Some(entry) = state.log.get_mut(record) else {
            return;
        };
        entry.sent_ns = Some(now_ns);
        if let Some(hint) = hint {
            let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            let relative = now_ns.saturating_add(nanos(hint.relative));
            let absolute = hint
                .absolute
                .map_or(0, |d| entry.arrived_ns.saturating_add(nanos(d)));
            entry.retry_deadline_ns = Some(relative.max(absolute));
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
        let organization = key.organization.as_deref().unwrap_or(DEFAULT_ORGANIZATION);
        if let Some(Err(refused)) = ks.daily.as_mut().map(|d| d.check(now_ns, req.n)) {
            let error = ApiError::daily_limited(&LimitUsage {
                by: refused.by,
                model: &req.model,
                organization,
                limit: refused.limit,
                used: u64::from(refused.used),
                requested: refused.requested,
                wait: refused.wait,
            });
            return hinted(key, headers, refused.wait, error);
        }
        if let Verdict::Limited { wait, by } = ks.limiter.try_acquire(now_ns, req.n) {
            let (limit, used, requested) = match (by, ks.images_audit.as_ref()) {
                (LimitKind::Images, Some(audit)) => (
                    ks.images_per_minute.unwrap_or(0),
                    audit.current_at(now_ns),
                    req.n,
                ),
                _ => (
                    ks.requests_per_minute,
                    ks.requests_audit.current_at(now_ns),
                    1,
                ),
            };
            let error = ApiError::rate_limited(&LimitUsage {
                by,
                model: &req.model,
                organization,
                limit,
                used,
                requested,
                wait,
            });
            return hinted(key, headers, wait, error);
        }
        if let Some(daily) = ks.daily.as_mut() {
            daily.commit(now_ns, req.n);
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
        } else if req.faults.unprintable {
            Some(ApiError::unprintable_server_error())
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
            record: 0,
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

    /// The arrival witness of every configured key and every project, over every request
    /// received (see [`ArrivalWitness`]).
    pub fn arrivals(&self) -> ArrivalReport {
        let state = self.lock();
        let mut report = ArrivalReport::default();
        for key in &self.keys {
            let records: Vec<&RequestRecord> =
                state.log.iter().filter(|r| r.key_id == key.id).collect();
            let ks = &state.keys[key.state];
            report.keys.insert(key.id.clone(), witness_of(ks, &records));
        }
        for key in &self.keys {
            let Some(project) = &key.config.project else {
                continue;
            };
            if report.projects.contains_key(project) {
                continue;
            }
            let records: Vec<&RequestRecord> = state
                .log
                .iter()
                .filter(|r| r.project.as_ref() == Some(project))
                .collect();
            let ks = &state.keys[key.state];
            report
                .projects
                .insert(project.clone(), witness_of(ks, &records));
        }
        report
    }

    /// How early each request came that arrived before a wait announced by an earlier
    /// 429 had passed, among the requests `select` picks (see
    /// [`super::audit::early_after_hints`]).
    pub fn early_after_429(&self, select: impl Fn(&RequestRecord) -> bool) -> Vec<Duration> {
        let state = self.lock();
        let records: Vec<&RequestRecord> = state.log.iter().filter(|r| select(r)).collect();
        early_after_hints(&hint_times(&records))
    }
}

/// `(arrived, Some((sent, deadline)))` of `records`, for [`early_after_hints`].
fn hint_times(records: &[&RequestRecord]) -> Vec<(u64, Option<(u64, u64)>)> {
    records
        .iter()
        .map(|r| (r.arrived_ns, r.sent_ns.zip(r.retry_deadline_ns)))
        .collect()
}

/// The witness of `records` (in arrival order) against the limits `ks`.
fn witness_of(ks: &KeyState, records: &[&RequestRecord]) -> ArrivalWitness {
    let times: Vec<u64> = records.iter().map(|r| r.arrived_ns).collect();
    let early = early_after_hints(&hint_times(records)).len();
    ks.witness(&times, early)
}

/// A 429 `error` that says to come back after `wait`, in the key's retry style (and the
/// rate-limit family's reset when the key sends it; the message says it too), noting what
/// its hints announced.
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
        announced: Some(announced(key.retry_header, wait, now)),
        ..reject(error)
    }
}

/// What a 429 with the hint `retry_hint` sends for `wait` at `now` announces (each form
/// rounds up). The message's "try again in" always says `wait` to the millisecond, and
/// `x-ratelimit-reset-requests` never says more, so the longest relative hint is the
/// retry header's when it is relative, else the millisecond one.
fn announced(style: RetryHeader, wait: Duration, now: SystemTime) -> Announced {
    let millis = Duration::from_millis(ceil_millis(wait));
    let relative = match style {
        RetryHeader::RetryAfterSeconds => Duration::from_secs(ceil_secs(wait)).max(millis),
        _ => millis,
    };
    let absolute = (style == RetryHeader::RetryAfterHttpDate).then(|| {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(ceil_secs(since_epoch + wait)).saturating_sub(since_epoch)
    });
    Announced { relative, absolute }
}

fn reject(error: ApiError) -> Outcome {
    Outcome {
        result: Err(error),
        headers: Vec::new(),
        delay: Duration::ZERO,
        announced: None,
        record: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_waits_by_retry_style() {
        // 1_700_000_000.250 s since the epoch; a true wait of 1.2 s
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let wait = Duration::from_millis(1_200);
        let ms = Duration::from_millis;
        // (style, relative wait, absolute wait from the arrival)
        let table = [
            (RetryHeader::RetryAfterSeconds, ms(2_000), None),
            (RetryHeader::RetryAfterMs, ms(1_200), None),
            (RetryHeader::ResetRequests, ms(1_200), None),
            // the message's 1.2s, and the date 1_700_000_002 s: 1.75 s from now
            (RetryHeader::RetryAfterHttpDate, ms(1_200), Some(ms(1_750))),
            // no header, but the message still says 1.2s
            (RetryHeader::None, ms(1_200), None),
        ];
        for (style, relative, absolute) in table {
            let got = announced(style, wait, now);
            assert_eq!(got, Announced { relative, absolute }, "{style:?}");
            assert_eq!(
                got.longest(),
                relative.max(absolute.unwrap_or_default()),
                "{style:?}"
            );
        }
        // sub-millisecond waits round up
        let tiny = announced(RetryHeader::RetryAfterMs, Duration::from_micros(1), now);
        assert_eq!(tiny.relative, ms(1));
    }
}
