//! genq: image-generation jobs from PostgreSQL, run at the rate each API key allows.
//!
//! # Layout
//! - [`job`]: jobs as producers submit them and as the queue holds them; validation.
//! - [`store`]: all SQL (jobs, attempts, migrations).
//! - [`worker`]: claim → execute → complete, with leases, heartbeats, a reaper and graceful shutdown.
//! - [`provider`]: what executes a job (the `Provider` trait and its implementations).
//! - [`retry`]: backoff delays as a pure function of the attempt number.
//! - [`keys`]: API keys: configuration, choosing one for a call, what answers teach (health, learned rates).
//! - [`secret`]: secrets that never print.
//! - [`sim`]: `genq sim`, the OpenAI-compatible simulated Images API for tests and the demo.
//! - [`metrics`]: Prometheus counters, histograms and database gauges.
//! - [`output`]: generated images written under `GENQ_OUTPUT_DIR/<job id>/<attempt>/`.
//! - [`demo`]: `genq demo`, everything end to end on one machine.
//! - [`embedded_pg`]: a private throwaway PostgreSQL for the demo and tests.
//! - [`submit`]: the library entry point for producers.
//! - [`api`]: the HTTP API (`genq serve`, `genq run`).
//! - [`cli`]: tables for the command line and the demo.
//! - [`duration`]: `30s`/`15m`/`1h`/`7d` durations for `--since` and `?since=`.
//! - [`db`], [`telemetry`]: connection pool and logging set-up.
//! - [`bounded`]: HTTP bodies read up to a limit.
//! - [`cause`]: an error told with its causes, for `last_error` and the CLI.

pub mod api;
pub mod bounded;
pub mod cause;
pub mod db;
pub mod duration;
pub mod job;
pub mod keys;
pub mod metrics;
pub mod output;
pub mod provider;
pub mod retry;
pub mod secret;
pub mod store;
pub mod submit;
pub mod telemetry;
pub mod validation;
pub mod worker;
