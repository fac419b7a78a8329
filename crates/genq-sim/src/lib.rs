//! `genq sim`: a local, OpenAI-compatible simulated Images API provider.
//!
//! The real OpenAI endpoint cannot be reached from tests or the demo, so genq runs against
//! this instead. It speaks `POST /v1/images/generations` and `POST /v1/images/edits` (and
//! both without `/v1`, for base URLs without it) with OpenAI's request and response shapes
//! (an edit's multipart form is checked and its parts logged: [`edits`]), enforces per-key rate
//! limits (GCRA, see [`limits`]) with the retry hints real providers send, and injects the
//! failures a scheduler must survive: 401, 429 `insufficient_quota`, 429
//! `rate_limit_exceeded`, content-policy 400s, validation 400s, and 5xx.
//!
//! Observers (tests, the demo, another process) read `GET /_sim/log` (a JSON array of
//! [`RequestRecord`]), `GET /_sim/stats` ([`SimStats`]) and `GET /_sim/arrivals`
//! ([`ArrivalReport`]), or [`Sim::log`] / [`Sim::stats`] / [`Sim::arrivals`] in-process.
//!
//! Two witnesses watch the limits:
//! * `stats.limit_exceeded` counts 200 answers that broke a key's configured limit in some
//!   60 s window, judged by an independent sliding-window witness (`audit.rs`): it catches
//!   the sim admitting too much, never a client sending too much.
//! * The arrival witness ([`Sim::windows_over_limit`], [`Sim::arrivals`]) judges the client
//!   over EVERY request received, admitted or refused, per key and per project: a request
//!   sent while a GCRA bucket charged for every request had no room is over the limit (see
//!   [`ArrivalWitness`]). [`Sim::early_after_429`] lists requests that came back before a
//!   429's announced wait had passed, counted from when that 429 was sent.
//!
//! Test hooks in the prompt: `[sim:500]` and `[sim:503]` force that status (after the rate
//! limiter, so budget is spent), `[sim:500x2]` fails only the first 2 requests with that exact
//! prompt, `[sim:sleep=MS]` delays the answer; a prompt containing the
//! content-policy marker (default `FORBIDDEN`, case-insensitive) gets a 400.
//!
//! # Limits
//!
//! Per minute: GCRA ([`limits`]) with emission interval `60 s / requests_per_minute` and a
//! burst of 1 unless a key sets `burst`: **the default is strict**, a request arriving less
//! than one interval after the last admitted one is refused, with no early-send tolerance.
//! (`SimConfig::demo` gives one key `burst = 2` explicitly; no default does.)
//!
//! Per day: `requests_per_day` / `images_per_day` count admitted requests (and their `n`
//! images) in fixed windows of `day_window_secs` from the sim's start; a spent window answers
//! 429 `rate_limit_exceeded` ("... on requests per day (RPD): Limit 20, Used 20,
//! Requested 1. Please try again in 7m12s. ...") with the key's retry hint (and
//! `x-ratelimit-reset-requests` if it sends the family) until the window ends. A request
//! refused by a daily cap spends nothing and is not counted as admitted.
//!
//! Projects: keys naming the same `project` share ONE limiter and ONE daily count, those of
//! the first key naming it ([`SimConfig::validate`] rejects later keys whose limits
//! differ), as OpenAI counts limits per project. Every answer for a key with `organization`
//! / `project` carries `openai-organization` / `openai-project`; rate-limit messages name
//! the organization (`org-sim` when the key names none).
//!
//! # TOML configuration ([`load_config`])
//!
//! ```toml
//! fail_rate_5xx = 0.02                # probability of a random 500 (0..=1), default 0
//! latency_ms = 200                    # delay before every answer, default 0
//! content_policy_marker = "FORBIDDEN" # default "FORBIDDEN"
//! seed = 42                           # RNG seed for random 500s; omit for OS randomness
//! day_window_secs = 86400             # length of the daily window, default 86400
//! full_size_images = false            # images at the size asked (uncompressed), not 16x16
//!
//! [[keys]]
//! secret = "sk-sim-one"               # required, unique
//! requests_per_minute = 60            # default 60
//! images_per_minute = 120             # optional; a request costs n images
//! burst = 2                           # optional, default 1 (strict): requests (and
//!                                     # images) at once from a rested key
//! behavior = "normal"                 # "normal" | "insufficient_quota"
//! retry_header = "retry_after_seconds" # "retry_after_seconds" | "retry_after_ms" |
//!                                     # "retry_after_http_date" | "reset_requests" | "none"
//! send_ratelimit_headers = true       # default true: x-ratelimit-*-requests on every answer;
//!                                     # false: none, a 429 carries only its retry_header
//! requests_per_day = 200              # optional daily cap on requests (RPD)
//! images_per_day = 400                # optional daily cap on images, n per request (IPD)
//! organization = "org-sim"            # optional: sent as openai-organization
//! project = "proj_a"                  # optional: sent as openai-project; keys naming one
//!                                     # project share the first such key's limits
//! forbidden_models = ["gpt-image-1.5"] # optional: 403 (organization not verified) for these
//! ```
//!
//! Every 429 is logged with the wait it announced (`retry_after_ms`) and, once sent, the
//! instant before which its hints said not to come back (`retry_deadline_ns`, on the sim's
//! clock like `arrived_ns` and `sent_ns`).
//!
//! Unknown fields are rejected so typos do not pass silently.

mod audit;
mod config;
mod core;
pub mod edits;
mod errors;
pub mod headers;
pub mod limits;
pub mod png;
mod request;
mod response;
mod server;
mod stats;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use config::{KeyBehavior, RetryHeader, SimConfig, SimConfigError, SimKey, load_config};
pub use response::{IMAGE_INPUT_TOKENS, InputDetails, Usage};
pub use stats::{ArrivalReport, ArrivalWitness, KeyStats, RequestRecord, SimStats, key_id};

/// A running-or-ready simulator: a cheap handle, clones share the same keys, limits and log.
#[derive(Clone)]
pub struct Sim {
    core: Arc<core::Core>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulator for `config`. Nonsense values are tolerated (rates of 0 act as 1); use
    /// [`SimConfig::validate`] to reject them up front.
    pub fn new(config: SimConfig) -> Self {
        Self {
            core: Arc::new(core::Core::new(config)),
        }
    }

    /// The HTTP routes, for embedding in another server or calling with `tower::ServiceExt`.
    pub fn router(&self) -> axum::Router {
        server::router(Arc::clone(&self.core))
    }

    /// Serves on `listener` until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "simulated Images API listening");
        }
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }

    /// Every request received so far, in arrival order.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.core.log()
    }

    /// Counts per key and in total, derived from the log.
    pub fn stats(&self) -> SimStats {
        self.core.stats()
    }

    /// How every configured key and every project spaced its requests, over EVERY request
    /// received (admitted or refused, any status), judged against the limits it draws from;
    /// the definitions are on [`ArrivalWitness`]. Also served as `GET /_sim/arrivals`.
    pub fn arrivals(&self) -> ArrivalReport {
        self.core.arrivals()
    }

    /// The keys and projects whose client sent more than their limits allow in some window:
    /// key id (or `project:<name>`) to the number of requests [`ArrivalWitness::early`]
    /// counts. Empty when every client kept to every limit; unlike
    /// [`SimStats::limit_exceeded`], which judges only what the sim admitted, this fails a
    /// client that sends too fast even when every extra request was refused.
    pub fn windows_over_limit(&self) -> std::collections::BTreeMap<String, u64> {
        self.core.arrivals().over_limit()
    }

    /// For key `key_id`: how early each request came that arrived before the wait announced
    /// by an earlier 429 to that key had passed, in arrival order (empty when it always
    /// waited). A 429 counts from the moment it was sent ([`RequestRecord::sent_ns`]) and
    /// binds until its [`RequestRecord::retry_deadline_ns`] (the longest of its hints: the
    /// key's retry header, `x-ratelimit-reset-requests`, the message's "try again in");
    /// requests already on their way when it was sent are not blamed. A 429 without a wait
    /// (`insufficient_quota`) binds nothing.
    pub fn early_after_429(&self, key_id: &str) -> Vec<std::time::Duration> {
        self.core.early_after_429(|r| r.key_id == key_id)
    }

    /// As [`Sim::early_after_429`], over all the keys of `project`: a 429 to one of its keys
    /// binds the others too, since they share the project's limits.
    pub fn project_early_after_429(&self, project: &str) -> Vec<std::time::Duration> {
        self.core
            .early_after_429(|r| r.project.as_deref() == Some(project))
    }
}
