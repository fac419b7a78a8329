//! genq: image-generation jobs from PostgreSQL, run at the rate each API key allows.
//!
//! # Quick start
//!
//! Enqueue a job from Rust, then run a worker that sends it to the Images
//! API through per-key buckets shared by every replica (the same as
//! `genq submit` and `genq worker`):
//!
//! ```no_run
//! use std::time::Duration;
//! use genq::keys::Keyring;
//! use genq::output::OutputStore;
//! use genq::provider::images::{ImagesProvider, ImagesSettings};
//! use genq::provider::openai::ImagesClient;
//! use genq::{NewJob, Worker, WorkerConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn quick_start() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = genq::db::connect("postgres://localhost/app", 8).await?;
//! genq::store::migrate::run(&pool).await?;
//!
//! // A producer: validated, then written; nothing is written if it is refused.
//! let job = NewJob {
//!     params: Some(serde_json::json!({ "size": "1024x1024", "quality": "low" })),
//!     ..NewJob::new("a red fox in the snow, pixel art")
//! };
//! let enqueued = genq::submit(&pool, &job).await?;
//! assert_eq!(enqueued.state, genq::JobState::Queued);
//!
//! // A worker: keys from OPENAI_API_KEYS / GENQ_KEYS_FILE, images under ./genq-output.
//! let provider = ImagesProvider::new(
//!     pool.clone(),
//!     ImagesClient::new("https://api.openai.com/v1", Duration::from_secs(120)),
//!     OutputStore::new("./genq-output"),
//!     Keyring::new(genq::keys::from_env()?, 60.0),
//!     ImagesSettings::default(),
//! );
//! provider.register_keys().await?;
//! let shutdown = CancellationToken::new(); // cancel it to drain and stop
//! let report = Worker::new(pool, WorkerConfig::default(), provider).run(shutdown).await;
//! # let _ = report;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! The workspace: this crate (`genq`: the library and the `genq` binary),
//! `crates/genq-sim` (`genq sim`, the OpenAI-compatible simulated provider),
//! `crates/genq-pg` (a private throwaway PostgreSQL for the demo and tests)
//! and `crates/genq-testkit` (the databases, sim rig and processes that
//! tests and benchmarks share). The library needs neither the sim nor the
//! private PostgreSQL; the binary (`src/main.rs`, one file per verb in
//! `src/cli/`) brings them in for `genq sim` and `genq demo`.
//!
//! The library, by what each module owns:
//! - [`job`]: a job as producers describe it ([`NewJob`]) and as the queue
//!   holds it ([`Job`], [`JobState`], [`Operation`], [`Attempt`]).
//! - [`input`]: an edit's input images: where a producer names them
//!   ([`InputRef`]: an upload, a URL, another job's image), their formats,
//!   which URLs may be fetched, and reading them when the job runs.
//! - [`submit()`]: the one way genq's own code enqueues a job;
//!   [`SubmitError`] is what producers get wrong. The checks themselves
//!   (fields, then params against the model catalogue) are `validation`'s.
//! - [`store`]: all SQL: jobs and attempts, inspection, keys, the shared
//!   GCRA buckets, costs and budgets, migrations.
//! - [`worker`]: claim → execute → complete, with leases, heartbeats, a
//!   reaper, retention and graceful shutdown ([`Worker`]).
//! - [`provider`]: what executes a job: the [`Provider`] trait, the real
//!   `ImagesProvider` over an `ImagesApi` client (async-openai, or a dry
//!   run), answer classification, header parsing, the model catalogue.
//! - [`keys`]: API keys: configuration, choosing one for a call (the
//!   `Keyring`), what answers teach (health, learned limits).
//! - [`cost`]: what a billed call cost, priced from its `usage` or the
//!   price table (shipped, overridable); [`budget`]: spend caps per queue
//!   or account that stop claiming, not jobs.
//! - [`retry`]: backoff delays as a pure function of the attempt number.
//! - [`output`]: images stored as `<job id>/<attempt>/<n>.<ext>` under
//!   `GENQ_OUTPUT_DIR` or in S3 (`GENQ_OUTPUT_URL`), and read back by key.
//! - [`webhook`]: completion webhooks: the outbox's delivery loop and the
//!   Standard Webhooks signature.
//! - [`api`]: the HTTP API of `genq serve` / `genq run`; [`dashboard`]:
//!   the web dashboard they serve at `/`.
//! - [`metrics`]: Prometheus counters, histograms and database gauges.
//! - [`db`], [`telemetry`], [`secret`], [`duration`]: the connection pool,
//!   logging, secrets that never print, `30s`/`15m`/`7d` durations.
//! - Internal: `bounded` (HTTP bodies read up to a limit), `cause` (an
//!   error told with its causes).

pub mod api;
pub(crate) mod bounded;
pub mod budget;
pub(crate) mod cause;
pub mod cost;
pub mod dashboard;
pub mod db;
pub mod duration;
pub mod input;
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
pub(crate) mod validation;
pub mod webhook;
pub mod worker;

pub use input::{InputRef, UrlPolicy};
pub use job::{Attempt, DEFAULT_MODEL, Job, JobState, NewJob, Operation};
pub use provider::Provider;
pub use store::StoreError;
pub use submit::{Enqueued, SubmitError, submit, submit_with};
pub use validation::{InputError, ParamError};
pub use worker::{Worker, WorkerConfig, WorkerReport};
