//! The `genq` command line: parses flags and environment, wires the pieces,
//! and maps errors to exit codes. The logic lives in the library.

mod cli;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use genq::job::NewJob;
use genq::provider::noop::NoopProvider;
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
    /// Serve the HTTP API (GENQ_LISTEN, GENQ_API_TOKEN) until SIGTERM/SIGINT.
    Serve(cli::serve::ServeArgs),
    /// Inspect and steer jobs: list, show, retry, cancel.
    #[command(subcommand)]
    Jobs(cli::jobs::JobsCommand),
}

#[derive(Args, Clone)]
struct DbArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderKind {
    /// Succeed every job at once without calling anything (for measuring the queue).
    Noop,
}

#[derive(Args)]
struct WorkerArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Jobs in flight at once in this process.
    #[arg(long, env = "GENQ_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Queues to take jobs from (comma-separated).
    #[arg(
        long,
        env = "GENQ_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    queues: Vec<String>,
    /// What runs the jobs.
    #[arg(long, env = "GENQ_PROVIDER", value_enum, default_value = "noop")]
    provider: ProviderKind,
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
    let cli = Cli::parse();
    genq::telemetry::init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Migrate(db) => migrate(&db).await,
            Command::Worker(args) => worker(args).await,
            Command::Submit(args) => submit(args).await,
            Command::Serve(args) => cli::serve::run(args, shutdown_on_signal()).await,
            Command::Jobs(command) => cli::jobs::run(command).await,
        }
    })
}

async fn migrate(db: &DbArgs) -> Result<()> {
    let pool = genq::db::connect(&db.database_url, 2)
        .await
        .context("connecting to DATABASE_URL")?;
    genq::store::migrate::run(&pool)
        .await
        .context("applying migrations")?;
    eprintln!("migrations applied");
    Ok(())
}

async fn worker(args: WorkerArgs) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let pool = genq::db::connect(&args.db.database_url, args.concurrency.min(64) as u32 + 4)
        .await
        .context("connecting to DATABASE_URL")?;
    genq::store::migrate::run(&pool)
        .await
        .context("applying migrations")?;
    let config = WorkerConfig {
        queues: args.queues,
        concurrency: args.concurrency,
        lease: Duration::from_secs_f64(args.lease_secs),
        poll_interval: Duration::from_millis(args.poll_ms),
        reap_interval: Duration::from_millis(args.reap_ms),
        grace: Duration::from_secs_f64(args.grace_secs),
        backoff: genq::retry::Backoff {
            base: Duration::from_millis(args.retry_base_ms),
            max: Duration::from_secs(args.retry_max_secs),
        },
        ..WorkerConfig::default()
    };
    let shutdown = shutdown_on_signal();
    let report = match args.provider {
        ProviderKind::Noop => Worker::new(pool, config, NoopProvider).run(shutdown).await,
    };
    eprintln!(
        "worker stopped: {} claimed, {} completed, {} released",
        report.claimed, report.completed, report.released
    );
    Ok(())
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
    job.validate()?;
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
