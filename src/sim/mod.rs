//! `genq sim`: a local, OpenAI-compatible simulated Images API provider.
//!
//! The real OpenAI endpoint cannot be reached from tests or the demo, so genq runs against
//! this instead. It speaks `POST /v1/images/generations` (and `/images/generations`, for base
//! URLs without `/v1`) with OpenAI's request and response shapes, enforces per-key rate
//! limits (GCRA, see [`limits`]) with the retry hints real providers send, and injects the
//! failures a scheduler must survive: 401, 429 `insufficient_quota`, 429
//! `rate_limit_exceeded`, content-policy 400s, validation 400s, and 5xx.
//!
//! Observers (tests, the demo, another process) read `GET /_sim/log` (a JSON array of
//! [`RequestRecord`]) and `GET /_sim/stats` ([`SimStats`]), or [`Sim::log`] / [`Sim::stats`]
//! in-process. `stats.limit_exceeded` counts 200 answers that broke a key's configured limit
//! in some 60 s window, judged by an independent sliding-window witness (`audit.rs`).
//!
//! Test hooks in the prompt: `[sim:500]` and `[sim:503]` force that status (after the rate
//! limiter, so budget is spent), `[sim:500x2]` fails only the first 2 requests with that exact
//! prompt, `[sim:sleep=MS]` delays the answer; a prompt containing the
//! content-policy marker (default `FORBIDDEN`, case-insensitive) gets a 400.
//!
//! # TOML configuration ([`load_config`])
//!
//! ```toml
//! fail_rate_5xx = 0.02                # probability of a random 500 (0..=1), default 0
//! latency_ms = 200                    # delay before every answer, default 0
//! content_policy_marker = "FORBIDDEN" # default "FORBIDDEN"
//! seed = 42                           # RNG seed for random 500s; omit for OS randomness
//!
//! [[keys]]
//! secret = "sk-sim-one"               # required, unique
//! requests_per_minute = 60            # default 60
//! images_per_minute = 120             # optional; a request costs n images
//! burst = 2                           # optional, default 1: requests (and images) at once
//! behavior = "normal"                 # "normal" | "insufficient_quota"
//! retry_header = "retry_after_seconds" # "retry_after_seconds" | "retry_after_ms" |
//!                                     # "retry_after_http_date" | "reset_requests" | "none"
//! send_ratelimit_headers = true       # default true: x-ratelimit-*-requests on every answer
//! requests_per_day = 200              # optional daily cap, in fixed windows of day_window_secs
//! organization = "org-sim"            # optional: sent as openai-organization
//! project = "proj_a"                  # optional: sent as openai-project; keys naming one
//!                                     # project share the first such key's limits
//! forbidden_models = ["gpt-image-1.5"] # optional: 403 (organization not verified) for these
//! ```
//! and at the top level `day_window_secs = 86400` (the daily window's length).
//!
//! Every 429 is logged with the wait its hint announced (`retry_after_ms`, as a client
//! reads it), so an observer can check that nothing came back before `at` + that wait.
//!
//! Unknown fields are rejected so typos do not pass silently.

mod audit;
mod config;
mod core;
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
pub use stats::{KeyStats, RequestRecord, SimStats, key_id};

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
}
