//! `genq demo`: the whole system on one machine with nothing configured.
//!
//! A private PostgreSQL (unless `DATABASE_URL` is set), `genq sim` with keys
//! of different limits and manners (one announces its limit, one does not,
//! one is out of quota, and genq holds one key the provider does not know),
//! two workers through the real async-openai client, jobs enqueued over
//! HTTP, the library and plain SQL (a few meant to fail), a live progress
//! bar and key table, real PNGs on disk, and a summary. Everything but the
//! images is cleaned up at the end.

mod report;
mod setup;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use genq::worker::WorkerReport;

#[derive(Args)]
pub struct DemoArgs {
    /// Postgres to use instead of a private throwaway cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Jobs to enqueue.
    #[arg(long, default_value_t = 200)]
    pub jobs: usize,
    /// Worker tasks.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Where the images go.
    #[arg(long, env = "GENQ_OUTPUT_DIR", default_value = "./genq-output")]
    pub output_dir: std::path::PathBuf,
    /// Print the summary as JSON on stdout instead of the report (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Exit once the summary is printed, instead of serving the dashboard until Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
}

/// Runs the demo from its flags; an error if a job did not finish in time.
pub async fn run(args: DemoArgs) -> Result<()> {
    if args.jobs == 0 || args.workers == 0 {
        bail!("--jobs and --workers must be at least 1");
    }
    let options = DemoOptions {
        database_url: args.database_url,
        jobs: args.jobs,
        workers: args.workers,
        output_dir: args.output_dir,
        progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        timeout: Duration::from_secs(600),
        json: args.json,
        serve_until_ctrl_c: !args.exit_when_done,
    };
    let summary = run_demo(options).await?;
    if summary.unfinished > 0 {
        bail!("{} jobs did not finish in time", summary.unfinished);
    }
    Ok(())
}

/// What to run. Its `Debug` never shows the database URL (it may hold a password).
#[derive(Clone)]
pub struct DemoOptions {
    /// Postgres to use; None starts a private cluster.
    pub database_url: Option<String>,
    /// Jobs to enqueue (a few of them are meant to fail).
    pub jobs: usize,
    /// Worker tasks.
    pub workers: usize,
    /// Where the images go.
    pub output_dir: PathBuf,
    /// Draw the live progress bar (off when not a terminal, and in tests).
    pub progress: bool,
    /// Give up waiting after this long.
    pub timeout: Duration,
    /// Print the summary as JSON instead of the report.
    pub json: bool,
    /// Keep serving the dashboard after the summary, until Ctrl-C.
    pub serve_until_ctrl_c: bool,
}

impl std::fmt::Debug for DemoOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoOptions")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "(set, hidden)"),
            )
            .field("jobs", &self.jobs)
            .field("workers", &self.workers)
            .field("output_dir", &self.output_dir)
            .field("progress", &self.progress)
            .field("timeout", &self.timeout)
            .field("json", &self.json)
            .finish()
    }
}

/// What the demo did (`--json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoSummary {
    pub succeeded: i64,
    pub failed: Vec<(String, i64)>,
    pub unfinished: i64,
    pub provider_requests: u64,
    pub rate_limited: u64,
    /// Keys sent more than their limit in some window, by the sim's count of
    /// every request it received, with how many requests were over.
    pub over_limit: Vec<(String, u64)>,
    pub disabled_keys: Vec<(String, String)>,
    pub png_files: usize,
    /// What the provider billed, by the sim's usage priced by the shipped table.
    pub cost_usd: genq::cost::Usd,
    /// Billed requests.
    pub billed_requests: i64,
    /// The generate → edit pipeline, and where its images are.
    pub pipeline: Option<PipelineSummary>,
    pub elapsed: Duration,
}

/// One job of the demo's pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineStep {
    pub id: uuid::Uuid,
    pub state: genq::JobState,
    /// Where each of its images is (a file path, or an object URL).
    pub images: Vec<String>,
    pub last_error: Option<String>,
}

/// The demo's generate → edit pipeline as it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSummary {
    pub generate: PipelineStep,
    pub edit: PipelineStep,
}

/// Runs the demo to the end and prints its summary.
async fn run_demo(options: DemoOptions) -> Result<DemoSummary> {
    let started = Instant::now();
    let env = setup::Environment::start(&options)
        .await
        .context("starting the demo environment")?;
    eprintln!(
        "genq demo: Postgres {} · simulated OpenAI at {} · {} keys · {} workers",
        env.database_label,
        env.base_url,
        env.keys.len(),
        options.workers
    );
    eprintln!("dashboard: {}/ (watch the jobs as they run)", env.api_url);

    let stop = CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.workers {
        workers.spawn(env.worker().await?.run(stop.clone()));
    }
    let enqueued = setup::enqueue(&env, options.jobs)
        .await
        .context("enqueueing the demo jobs")?;
    eprintln!(
        "enqueued {} jobs: {} over HTTP, {} through the library, {} with plain SQL",
        enqueued.total(),
        enqueued.http,
        enqueued.library,
        enqueued.sql
    );

    report::watch(
        &env.pool,
        enqueued.total() as i64,
        options.progress,
        options.timeout,
    )
    .await?;
    stop.cancel();
    let mut reports = Vec::new();
    while let Some(r) = workers.join_next().await {
        reports.push(r.unwrap_or_else(|_| WorkerReport::default()));
    }
    let summary = report::summarize(&env, enqueued.pipeline, started.elapsed()).await?;
    if options.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!(
            "{}",
            report::render(
                &summary,
                &env.output_dir,
                &genq::store::keys::list(&env.pool).await?
            )
        );
    }
    if options.serve_until_ctrl_c {
        eprintln!(
            "\ndashboard: {}/ — the jobs, their attempts and images, the keys. Ctrl-C to stop.",
            env.api_url
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    env.stop().await;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_hides_the_database_url() {
        let options = super::DemoOptions {
            database_url: Some("postgres://genq:hunter2@db/genq".into()),
            jobs: 1,
            workers: 1,
            output_dir: "out".into(),
            progress: false,
            timeout: std::time::Duration::from_secs(1),
            json: false,
            serve_until_ctrl_c: false,
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
