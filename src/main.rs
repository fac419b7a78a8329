//! The `genq` command line: the clap enum and the dispatch. Each verb lives
//! in its own file under `src/cli/`; the logic lives in the library.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};

use cli::db::DbArgs;

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
    Worker(cli::worker::WorkerArgs),
    /// Enqueue one job and print its id.
    Submit(cli::submit::SubmitArgs),
    /// The whole system on this machine with nothing configured: private Postgres, genq sim, workers, ~200 jobs.
    Demo(cli::demo::DemoArgs),
    /// Inspect and manage API keys (by id; secrets are never shown).
    Keys {
        #[command(flatten)]
        db: DbArgs,
        #[command(subcommand)]
        action: cli::keys::KeysAction,
    },
    /// Run the OpenAI-compatible simulated Images API (per-key limits, 429s, faults) on loopback.
    Sim(cli::sim::SimArgs),
    /// The HTTP API and a worker in one process.
    Run(cli::run::RunArgs),
    /// Serve the HTTP API (GENQ_LISTEN, GENQ_API_TOKEN) until SIGTERM/SIGINT.
    Serve(cli::serve::ServeArgs),
    /// Inspect and steer jobs: list, show, retry, cancel.
    #[command(subcommand)]
    Jobs(cli::jobs::JobsCommand),
    /// Spend caps per queue or account: list, set, remove.
    Budgets {
        #[command(flatten)]
        db: DbArgs,
        #[command(subcommand)]
        action: cli::budgets::BudgetsAction,
    },
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
            Command::Migrate(db) => cli::migrate::run(&db).await,
            Command::Worker(args) => cli::worker::run(args).await,
            Command::Run(args) => cli::run::run(args).await,
            Command::Submit(args) => cli::submit::run(args).await,
            Command::Sim(args) => cli::sim::run(args).await,
            Command::Demo(args) => cli::demo::run(args).await,
            Command::Keys { db, action } => cli::keys::run(&db, action).await,
            Command::Serve(args) => cli::serve::run(args).await,
            Command::Jobs(command) => cli::jobs::run(command).await,
            Command::Budgets { db, action } => cli::budgets::run(&db, action).await,
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
