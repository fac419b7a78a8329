//! `genq worker`: claim and run jobs until SIGTERM/SIGINT, optionally with
//! a `/metrics` listener of its own.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use genq::provider::images_api::DryRun;
use genq::provider::noop::NoopProvider;
use genq::provider::openai::ImagesClient;
use genq::worker::{Worker, WorkerConfig};

use super::db::{DbArgs, connect_migrated};
use super::provider::{self, OpenAiArgs};
use super::shutdown::on_signal;

#[derive(Clone, Copy, ValueEnum)]
pub enum ProviderKind {
    /// The OpenAI Images API (or a compatible server at OPENAI_BASE_URL) through per-key buckets.
    Openai,
    /// Succeed every job at once without calling anything (for measuring the queue).
    Noop,
    /// Like openai, keys and limits included, but send nothing and succeed at
    /// once (for measuring genq's cost per job through the limiter).
    DryRun,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub webhooks: super::webhook::WebhookArgs,
    #[command(flatten)]
    pub budgets: super::budgets::BudgetArgs,
    /// Jobs in flight at once in this process.
    #[arg(long, env = "GENQ_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Most jobs claimed in one round trip (never more than the free slots).
    #[arg(long, env = "GENQ_CLAIM_BATCH", default_value_t = 64)]
    pub claim_batch: usize,
    /// Queues to take jobs from (comma-separated).
    #[arg(
        long,
        env = "GENQ_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,
    /// What runs the jobs.
    #[arg(long, env = "GENQ_PROVIDER", value_enum, default_value = "openai")]
    pub provider: ProviderKind,
    #[command(flatten)]
    pub openai: OpenAiArgs,
    /// Serve this worker's /metrics on this address (workers without `serve`).
    #[arg(long, env = "GENQ_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `/metrics` needs `Authorization: Bearer <GENQ_API_TOKEN>` when it listens beyond loopback.
    #[arg(long, env = "GENQ_METRICS_REQUIRE_TOKEN", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub metrics_require_token: bool,
    /// If set, HTTP requests need `Authorization: Bearer <token>` (`genq run`'s
    /// API; a worker's /metrics with GENQ_METRICS_REQUIRE_TOKEN).
    #[arg(long, env = "GENQ_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Lease length in seconds; a job whose worker stops renewing it runs again after this.
    #[arg(long, env = "GENQ_LEASE_SECS", default_value_t = 60.0)]
    pub lease_secs: f64,
    /// Poll interval in milliseconds (notifications wake workers sooner).
    #[arg(long, env = "GENQ_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// How often to look for jobs whose worker died, in milliseconds.
    #[arg(long, env = "GENQ_REAP_MS", default_value_t = 5000)]
    pub reap_ms: u64,
    /// On shutdown, seconds in-flight jobs may take before they are released.
    #[arg(long, env = "GENQ_GRACE_SECS", default_value_t = 30.0)]
    pub grace_secs: f64,
    /// First retry delay in milliseconds after a real failure (doubles each attempt, with jitter).
    #[arg(long, env = "GENQ_RETRY_BASE_MS", default_value_t = 2000)]
    pub retry_base_ms: u64,
    /// Longest retry delay in seconds.
    #[arg(long, env = "GENQ_RETRY_MAX_SECS", default_value_t = 600)]
    pub retry_max_secs: u64,
    /// Keep succeeded jobs this long (30s, 15m, 12h, 7d; 0 keeps them forever).
    #[arg(long, env = "GENQ_RETAIN_SUCCEEDED", default_value = "7d", value_parser = parse_retention)]
    pub retain_succeeded: Duration,
    /// Keep failed and cancelled jobs this long (0 keeps them forever).
    #[arg(long, env = "GENQ_RETAIN_FAILED", default_value = "30d", value_parser = parse_retention)]
    pub retain_failed: Duration,
}

/// Runs a worker (and its own /metrics, if asked) until SIGTERM/SIGINT.
pub async fn run(args: WorkerArgs) -> Result<()> {
    let pool = worker_pool(&args).await?;
    let shutdown = on_signal();
    let metrics = match args.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, &args, pool.clone(), shutdown.clone()).await?),
        None => None,
    };
    run_worker(pool, args, shutdown).await?;
    if let Some(server) = metrics {
        let _ = server.await;
    }
    Ok(())
}

/// Checks the worker's flags, installs the metrics recorder and opens a
/// pool sized for its concurrency, migrated.
pub async fn worker_pool(args: &WorkerArgs) -> Result<sqlx::PgPool> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    genq::metrics::install();
    connect_migrated(&args.db.database_url, args.concurrency.min(64) as u32 + 6).await
}

/// A worker's own `/metrics` (and `/healthz`), for replicas that run without `serve`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    args: &WorkerArgs,
    pool: sqlx::PgPool,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let token = args.api_token.clone().filter(|t| !t.trim().is_empty());
    let needed =
        genq::api::check_metrics_listen(addr, token.as_deref(), args.metrics_require_token)
            .map_err(|e| anyhow::anyhow!("GENQ_METRICS_LISTEN: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} (GENQ_METRICS_LISTEN)"))?;
    tracing::info!(addr = %listener.local_addr()?, auth = needed, "metrics listening");
    let app =
        genq::api::metrics_router(genq::api::ApiState::new(pool, token).with_metrics_token(needed));
    Ok(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }))
}

/// Runs the worker with the provider its flags name until `shutdown`.
pub async fn run_worker(
    pool: sqlx::PgPool,
    args: WorkerArgs,
    shutdown: CancellationToken,
) -> Result<()> {
    args.budgets.apply(&pool).await?;
    let config = WorkerConfig {
        queues: args.queues,
        concurrency: args.concurrency,
        claim_batch: args.claim_batch.max(1),
        lease: Duration::from_secs_f64(args.lease_secs),
        poll_interval: Duration::from_millis(args.poll_ms),
        reap_interval: Duration::from_millis(args.reap_ms),
        grace: Duration::from_secs_f64(args.grace_secs),
        backoff: genq::retry::Backoff {
            base: Duration::from_millis(args.retry_base_ms),
            max: Duration::from_secs(args.retry_max_secs),
        },
        retention: retention(args.retain_succeeded, args.retain_failed),
        fallback_after: Duration::from_secs_f64(args.openai.fallback_after_secs),
        image_bytes_in_flight: args.openai.image_mib_in_flight * 1024 * 1024,
        images: Some(args.openai.output.store()?),
        webhooks: args
            .webhooks
            .apply(&pool, args.openai.urls.policy())
            .await?,
        ..WorkerConfig::default()
    };
    let report = match args.provider {
        ProviderKind::Noop => Worker::new(pool, config, NoopProvider).run(shutdown).await,
        ProviderKind::Openai => {
            let client = ImagesClient::new(
                &args.openai.openai_base_url,
                Duration::from_secs_f64(args.openai.provider_timeout_secs),
            );
            let provider = provider::from_env(&pool, &args.openai, client).await?;
            Worker::new(pool, config, provider).run(shutdown).await
        }
        ProviderKind::DryRun => {
            let provider = provider::from_env(&pool, &args.openai, DryRun).await?;
            Worker::new(pool, config, provider).run(shutdown).await
        }
    };
    eprintln!(
        "worker stopped: {} claimed, {} completed, {} released",
        report.claimed, report.completed, report.released
    );
    Ok(())
}

fn parse_retention(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    genq::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// Retention from the two ages; zero means keep forever.
fn retention(succeeded: Duration, failed: Duration) -> Option<genq::worker::Retention> {
    let forever = Duration::from_secs(100 * 365 * 24 * 3600);
    let age = |d: Duration| if d.is_zero() { forever } else { d };
    (!succeeded.is_zero() || !failed.is_zero()).then(|| genq::worker::Retention {
        succeeded: age(succeeded),
        failed: age(failed),
        ..genq::worker::Retention::default()
    })
}
