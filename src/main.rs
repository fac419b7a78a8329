//! The `genq` command line: parses flags and environment, wires the pieces,
//! and maps errors to exit codes. The logic lives in the library.

mod commands;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use genq::job::NewJob;
use genq::keys::Keyring;
use genq::output::OutputStore;
use genq::provider::images::{ImagesProvider, ImagesSettings};
use genq::provider::images_api::{DryRun, ImagesApi};
use genq::provider::noop::NoopProvider;
use genq::provider::openai::ImagesClient;
use genq::worker::{Worker, WorkerConfig};

#[derive(Parser)]
#[command(
    name = "genq",
    version,
    about = "Run OpenAI image-generation jobs from PostgreSQL at the rate each API key allows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations (idempotent; safe to run from many replicas at once).
    Migrate(DbArgs),
    /// Claim and run jobs until SIGTERM/SIGINT.
    Worker(WorkerArgs),
    /// Enqueue one job and print its id.
    Submit(SubmitArgs),
    /// The whole system on this machine with nothing configured: private Postgres, genq sim, workers, ~200 jobs.
    Demo(DemoArgs),
    /// Inspect and manage API keys (by id; secrets are never shown).
    Keys {
        #[command(flatten)]
        db: DbArgs,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Run the OpenAI-compatible simulated Images API (per-key limits, 429s, faults) on loopback.
    Sim(SimArgs),
    /// The HTTP API and a worker in one process.
    Run(RunArgs),
    /// Serve the HTTP API (GENQ_LISTEN, GENQ_API_TOKEN) until SIGTERM/SIGINT.
    Serve(commands::serve::ServeArgs),
    /// Inspect and steer jobs: list, show, retry, cancel.
    #[command(subcommand)]
    Jobs(commands::jobs::JobsCommand),
}

#[derive(Args)]
struct DemoArgs {
    /// Postgres to use instead of a private throwaway cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Jobs to enqueue.
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Worker tasks.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where the images go.
    #[arg(long, env = "GENQ_OUTPUT_DIR", default_value = "./genq-output")]
    output_dir: std::path::PathBuf,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Each key's state, cooldown remaining, counters and limits.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Use a disabled or cooling key again now.
    Enable { id: String },
    /// Stop using a key until it is enabled.
    Disable {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Enable a key and forget its counters and learned limits.
    Reset { id: String },
}

#[derive(Args)]
struct SimArgs {
    /// Address to listen on.
    #[arg(long, env = "GENQ_SIM_LISTEN", default_value = "127.0.0.1:8089")]
    listen: std::net::SocketAddr,
    /// TOML file with the keys, limits and faults (see `genq::sim` docs); default: the demo set.
    #[arg(long, env = "GENQ_SIM_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[derive(Args, Clone)]
struct DbArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderKind {
    /// The OpenAI Images API (or a compatible server at OPENAI_BASE_URL) through per-key buckets.
    Openai,
    /// Succeed every job at once without calling anything (for measuring the queue).
    Noop,
    /// Like openai, keys and limits included, but send nothing and succeed at
    /// once (for measuring genq's cost per job through the limiter).
    DryRun,
}

#[derive(Args)]
struct OpenAiArgs {
    /// Provider base URL (point at `genq sim` for local runs).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    openai_base_url: String,
    /// Where images are written: <dir>/<job id>/<attempt>/<n>.<ext>.
    #[arg(long, env = "GENQ_OUTPUT_DIR", default_value = "./genq-output")]
    output_dir: std::path::PathBuf,
    /// Requests per minute assumed for a key and model with no configured limit, until learned.
    #[arg(long, env = "GENQ_DEFAULT_RPM", default_value_t = 60.0)]
    default_rpm: f64,
    /// Seconds one provider call may take before it counts as a timeout.
    #[arg(long, env = "GENQ_PROVIDER_TIMEOUT_SECS", default_value_t = 120.0)]
    provider_timeout_secs: f64,
    /// Most image memory the worker's jobs may hold at once, in MiB: each job
    /// counts the most its answer can weigh (size x n); past the limit,
    /// jobs wait before calling and nothing more is claimed.
    #[arg(long, env = "GENQ_IMAGE_MIB_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    image_mib_in_flight: u64,
    /// Try a job's fallback models when its model has no key free within this many seconds.
    #[arg(long, env = "GENQ_FALLBACK_AFTER_SECS", default_value_t = 30.0)]
    fallback_after_secs: f64,
    /// How often a key disabled for quota or an auth error is re-tested with
    /// one real request (it comes back when that succeeds): 30s, 15m, 1h.
    #[arg(long, env = "GENQ_KEY_RETEST", default_value = "15m", value_parser = parse_positive_duration)]
    key_retest: Duration,
}

#[derive(Args)]
struct WorkerArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Jobs in flight at once in this process.
    #[arg(long, env = "GENQ_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Most jobs claimed in one round trip (never more than the free slots).
    #[arg(long, env = "GENQ_CLAIM_BATCH", default_value_t = 64)]
    claim_batch: usize,
    /// Queues to take jobs from (comma-separated).
    #[arg(
        long,
        env = "GENQ_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    queues: Vec<String>,
    /// What runs the jobs.
    #[arg(long, env = "GENQ_PROVIDER", value_enum, default_value = "openai")]
    provider: ProviderKind,
    #[command(flatten)]
    openai: OpenAiArgs,
    /// Serve this worker's /metrics on this address (workers without `serve`).
    #[arg(long, env = "GENQ_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// `/metrics` needs `Authorization: Bearer <GENQ_API_TOKEN>` when it listens beyond loopback.
    #[arg(long, env = "GENQ_METRICS_REQUIRE_TOKEN", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    metrics_require_token: bool,
    /// If set, HTTP requests need `Authorization: Bearer <token>` (`genq run`'s
    /// API; a worker's /metrics with GENQ_METRICS_REQUIRE_TOKEN).
    #[arg(long, env = "GENQ_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Lease length in seconds; a job whose worker stops renewing it runs again after this.
    #[arg(long, env = "GENQ_LEASE_SECS", default_value_t = 60.0)]
    lease_secs: f64,
    /// Poll interval in milliseconds (notifications wake workers sooner).
    #[arg(long, env = "GENQ_POLL_MS", default_value_t = 1000)]
    poll_ms: u64,
    /// How often to look for jobs whose worker died, in milliseconds.
    #[arg(long, env = "GENQ_REAP_MS", default_value_t = 5000)]
    reap_ms: u64,
    /// On shutdown, seconds in-flight jobs may take before they are released.
    #[arg(long, env = "GENQ_GRACE_SECS", default_value_t = 30.0)]
    grace_secs: f64,
    /// First retry delay in milliseconds after a real failure (doubles each attempt, with jitter).
    #[arg(long, env = "GENQ_RETRY_BASE_MS", default_value_t = 2000)]
    retry_base_ms: u64,
    /// Longest retry delay in seconds.
    #[arg(long, env = "GENQ_RETRY_MAX_SECS", default_value_t = 600)]
    retry_max_secs: u64,
    /// Keep succeeded jobs this long (30s, 15m, 12h, 7d; 0 keeps them forever).
    #[arg(long, env = "GENQ_RETAIN_SUCCEEDED", default_value = "7d", value_parser = parse_retention)]
    retain_succeeded: Duration,
    /// Keep failed and cancelled jobs this long (0 keeps them forever).
    #[arg(long, env = "GENQ_RETAIN_FAILED", default_value = "30d", value_parser = parse_retention)]
    retain_failed: Duration,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    /// HTTP address. Beyond loopback a token (GENQ_API_TOKEN) is required.
    #[arg(long, env = "GENQ_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
}

#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    db: DbArgs,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// Image model (default gpt-image-2).
    #[arg(long)]
    model: Option<String>,
    /// A model parameter, `key=value` (value parsed as JSON when it is, else a string); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// 0 to 1000, higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Do not run before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long)]
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Real failures allowed before the job is failed (1 to 100).
    #[arg(long, allow_negative_numbers = true)]
    max_attempts: Option<i32>,
    /// Submitting the same key again returns the first job instead of a new one.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Queue name.
    #[arg(long)]
    queue: Option<String>,
}

fn main() -> Result<()> {
    let _ = dotenvy::dotenv();
    forget_empty_settings();
    let cli = Cli::parse();
    match cli.command {
        // The demo draws its own progress; only warnings go to the log.
        Command::Demo(_) => genq::telemetry::init_with("warn,async_openai=error"),
        _ => genq::telemetry::init(),
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Migrate(db) => migrate(&db).await,
            Command::Worker(args) => worker(args).await,
            Command::Run(args) => run(args).await,
            Command::Submit(args) => submit(args).await,
            Command::Sim(args) => sim(args).await,
            Command::Demo(args) => demo(args).await,
            Command::Keys { db, action } => keys(&db, action).await,
            Command::Serve(args) => commands::serve::run(args, shutdown_on_signal()).await,
            Command::Jobs(command) => commands::jobs::run(command).await,
        }
    })
}

/// A setting that is set but empty (`GENQ_METRICS_LISTEN=` in `.env.example`
/// or `${GENQ_KEYS_FILE:-}` in compose) means "not set", as a user copying
/// those files expects, not "parse the empty string".
fn forget_empty_settings() {
    let empty: Vec<_> = std::env::vars_os()
        .filter(|(_, value)| value.is_empty())
        .map(|(name, _)| name)
        .filter(|name| {
            let name = name.to_string_lossy();
            ["GENQ_", "OPENAI_", "DATABASE_URL", "RUST_LOG"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect();
    for name in empty {
        // SAFETY: called first thing in `main`, before the runtime or any
        // other thread exists, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
}

async fn migrate(db: &DbArgs) -> Result<()> {
    commands::connect_migrated(&db.database_url, 2).await?;
    eprintln!("migrations applied");
    Ok(())
}

async fn worker(args: WorkerArgs) -> Result<()> {
    let pool = worker_pool(&args).await?;
    let shutdown = shutdown_on_signal();
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

/// `genq run`: the HTTP API and a worker in one process, one shutdown.
async fn run(args: RunArgs) -> Result<()> {
    let token = args
        .worker
        .api_token
        .clone()
        .filter(|t| !t.trim().is_empty());
    let require = args.worker.metrics_require_token;
    genq::api::check_listen(args.listen, token.as_deref()).map_err(anyhow::Error::msg)?;
    let metrics_need_token =
        genq::api::check_metrics_listen(args.listen, token.as_deref(), require)
            .map_err(anyhow::Error::msg)?;
    let pool = worker_pool(&args.worker).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} (GENQ_LISTEN)", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, auth = token.is_some(), "HTTP API listening");
    let shutdown = shutdown_on_signal();
    let api = tokio::spawn(genq::api::serve(
        listener,
        genq::api::ApiState::new(pool.clone(), token).with_metrics_token(metrics_need_token),
        shutdown.clone(),
    ));
    let worked = run_worker(pool, args.worker, shutdown.clone()).await;
    shutdown.cancel();
    api.await?.context("serving HTTP")?;
    worked
}

async fn worker_pool(args: &WorkerArgs) -> Result<sqlx::PgPool> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    genq::metrics::install();
    commands::connect_migrated(&args.db.database_url, args.concurrency.min(64) as u32 + 6).await
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

async fn run_worker(
    pool: sqlx::PgPool,
    args: WorkerArgs,
    shutdown: CancellationToken,
) -> Result<()> {
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
        ..WorkerConfig::default()
    };
    let report = match args.provider {
        ProviderKind::Noop => Worker::new(pool, config, NoopProvider).run(shutdown).await,
        ProviderKind::Openai => {
            let client = ImagesClient::new(
                &args.openai.openai_base_url,
                Duration::from_secs_f64(args.openai.provider_timeout_secs),
            );
            let provider = images_provider(&pool, &args.openai, client).await?;
            Worker::new(pool, config, provider).run(shutdown).await
        }
        ProviderKind::DryRun => {
            let provider = images_provider(&pool, &args.openai, DryRun).await?;
            Worker::new(pool, config, provider).run(shutdown).await
        }
    };
    eprintln!(
        "worker stopped: {} claimed, {} completed, {} released",
        report.claimed, report.completed, report.released
    );
    Ok(())
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match genq::duration::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero, e.g. 15m".into()),
        Err(e) => Err(e.to_string()),
    }
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

/// The provider over `client` from the environment's keys and settings,
/// its keys registered.
async fn images_provider<C: ImagesApi>(
    pool: &sqlx::PgPool,
    args: &OpenAiArgs,
    client: C,
) -> Result<ImagesProvider<C>> {
    let keys = genq::keys::from_env()?;
    if keys.is_empty() {
        bail!(
            "no API keys: set OPENAI_API_KEYS (name=secret,...), OPENAI_API_KEY or GENQ_KEYS_FILE"
        );
    }
    if !(args.default_rpm.is_finite() && args.default_rpm > 0.0) {
        bail!("--default-rpm must be a positive number");
    }
    tracing::info!(keys = ?keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), base_url = %args.openai_base_url, "provider ready");
    let provider = ImagesProvider::new(
        pool.clone(),
        client,
        OutputStore::new(&args.output_dir),
        Keyring::new(keys, args.default_rpm).with_retest(args.key_retest),
        ImagesSettings::default(),
    );
    provider
        .register_keys()
        .await
        .context("registering API keys")?;
    Ok(provider)
}

async fn submit(args: SubmitArgs) -> Result<()> {
    let mut params = serde_json::Map::new();
    for kv in &args.params {
        let Some((key, value)) = kv.split_once('=') else {
            bail!("--param {kv:?} is not key=value, e.g. --param size=1024x1024");
        };
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
        params.insert(key.to_string(), value);
    }
    let job = NewJob {
        prompt: args.prompt,
        model: args.model,
        queue: args.queue,
        params: (!params.is_empty()).then_some(serde_json::Value::Object(params)),
        priority: args.priority,
        run_at: args.run_at,
        max_attempts: args.max_attempts,
        idempotency_key: args.idempotency_key,
        expires_at: None,
    };
    genq::submit::validate(&job)?;
    let pool = genq::db::connect(&args.db.database_url, 2)
        .await
        .context("connecting to DATABASE_URL")?;
    let enqueued = genq::submit::submit(&pool, &job).await?;
    println!(
        "{}",
        serde_json::json!({ "id": enqueued.id, "state": enqueued.state.as_str(), "created": enqueued.created })
    );
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    if args.jobs == 0 || args.workers == 0 {
        bail!("--jobs and --workers must be at least 1");
    }
    let options = genq::demo::DemoOptions {
        database_url: args.database_url,
        jobs: args.jobs,
        workers: args.workers,
        output_dir: args.output_dir,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        timeout: Duration::from_secs(600),
    };
    let summary = genq::demo::run(options).await?;
    if summary.unfinished > 0 {
        bail!("{} jobs did not finish in time", summary.unfinished);
    }
    Ok(())
}

async fn keys(db: &DbArgs, action: KeysAction) -> Result<()> {
    let pool = commands::connect_migrated(&db.database_url, 2).await?;
    match action {
        KeysAction::List { json } => genq::cli::keys::list(&pool, json).await,
        KeysAction::Enable { id } => genq::cli::keys::change(&pool, "enable", &id, None).await,
        KeysAction::Disable { id, reason } => {
            genq::cli::keys::change(&pool, "disable", &id, reason.as_deref()).await
        }
        KeysAction::Reset { id } => genq::cli::keys::change(&pool, "reset", &id, None).await,
    }
}

async fn sim(args: SimArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => genq::sim::load_config(path)?,
        None => genq::sim::SimConfig::demo(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "genq sim: OpenAI-compatible Images API at http://{addr}/v1 ({} keys); set OPENAI_BASE_URL=http://{addr}/v1",
        config.keys.len()
    );
    genq::sim::Sim::new(config)
        .serve(listener, shutdown_on_signal())
        .await?;
    Ok(())
}

/// A token cancelled on SIGTERM or SIGINT.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        cancel.cancel();
    });
    token
}
