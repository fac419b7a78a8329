//! `genq jobs list|show|retry|cancel`: inspect and steer jobs from a shell.

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use uuid::Uuid;

use genq::job::{Attempt, Job, JobState};
use genq::store::inspect::{self, Change, ListFilter};

use super::db::DbArgs;
use super::table::{clip, render};

/// The `jobs` verbs.
#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job and every attempt (key, HTTP status, outcome, error, retry-after).
    Show(ShowArgs),
    /// Queue a failed or cancelled job again with fresh attempts.
    Retry(IdArgs),
    /// Cancel a queued job (running and finished jobs cannot be cancelled).
    Cancel(IdArgs),
}

/// Flags of `jobs list`.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only jobs in this state: queued, running, succeeded, failed or cancelled.
    #[arg(long)]
    state: Option<JobState>,
    /// Only jobs created within this long (30s, 15m, 1h, 7d) or since an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    since: Option<DateTime<Utc>>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    limit: i64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Flags of `jobs show`.
#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The job's id.
    #[arg(value_parser = parse_id)]
    id: Uuid,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Flags of `jobs retry` and `jobs cancel`.
#[derive(Args)]
pub struct IdArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The job's id.
    #[arg(value_parser = parse_id)]
    id: Uuid,
}

fn parse_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text)
        .map_err(|_| format!("{text:?} is not a job id; ids are UUIDs, as `genq jobs list` shows"))
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    genq::duration::parse_since(text, Utc::now()).map_err(|e| format!("{e}, or an RFC 3339 time"))
}

/// Runs one `jobs` verb.
pub async fn run(command: JobsCommand) -> Result<()> {
    match command {
        JobsCommand::List(args) => list(args).await,
        JobsCommand::Show(args) => show(args).await,
        JobsCommand::Retry(args) => {
            let pool = super::db::connect(&args.db.database_url, 1).await?;
            let change = inspect::retry(&pool, args.id).await?;
            report(args.id, "retry", change, "queued again with fresh attempts")
        }
        JobsCommand::Cancel(args) => {
            let pool = super::db::connect(&args.db.database_url, 1).await?;
            let change = inspect::cancel(&pool, args.id).await?;
            report(args.id, "cancel", change, "cancelled")
        }
    }
}

fn report(id: Uuid, verb: &str, change: Change, done: &str) -> Result<()> {
    match change {
        Change::Done(_) => {
            println!("job {id} {done}");
            Ok(())
        }
        Change::NotFound => bail!("no job with id {id}; see `genq jobs list`"),
        Change::Refused { state, reason } => bail!("cannot {verb} job {id} ({state}): {reason}"),
    }
}

async fn list(args: ListArgs) -> Result<()> {
    let pool = super::db::connect(&args.db.database_url, 1).await?;
    let filter = ListFilter {
        state: args.state,
        since: args.since,
        limit: args.limit,
        after: None,
        ..ListFilter::default()
    };
    let found = inspect::list(&pool, &filter).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    if found.is_empty() {
        eprintln!("no jobs match");
        return Ok(());
    }
    let headers = [
        "ID",
        "STATE",
        "MODEL",
        "PRI",
        "TRIES",
        "CREATED",
        "PROMPT",
        "LAST ERROR",
    ];
    let rows: Vec<Vec<String>> = found.iter().map(list_row).collect();
    print!("{}", render(&headers, &rows));
    Ok(())
}

fn list_row(job: &Job) -> Vec<String> {
    vec![
        job.id.to_string(),
        job.state.to_string(),
        job.model.clone(),
        job.priority.to_string(),
        format!("{}/{}", job.attempts, job.max_attempts),
        time(job.created_at),
        clip(&job.prompt, 40),
        clip(job.last_error.as_deref().unwrap_or(""), 60),
    ]
}

async fn show(args: ShowArgs) -> Result<()> {
    let pool = super::db::connect(&args.db.database_url, 1).await?;
    let Some(detail) = genq::store::inspect::detail(&pool, args.id).await? else {
        bail!("no job with id {}; see `genq jobs list`", args.id);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(());
    }
    let (job, attempts, waiting) = (&detail.job, &detail.attempts, &detail.waiting);
    print!("{}", describe(job, detail.cost_usd));
    for input in &detail.inputs {
        println!("input: {input}");
    }
    for w in &detail.webhooks {
        println!(
            "webhook: {} {} after {} send(s), last answer {}{}",
            w.url,
            w.state,
            w.attempts,
            w.last_status.map_or("none".into(), |s| s.to_string()),
            w.last_error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"))
        );
    }
    if let Some(waiting) = waiting {
        println!("{waiting}");
    }
    println!();
    if attempts.is_empty() {
        println!("no attempts yet");
    } else {
        let headers = [
            "#",
            "STARTED",
            "KEY",
            "STATUS",
            "OUTCOME",
            "RETRY AFTER MS",
            "COST",
            "ERROR",
        ];
        let rows: Vec<Vec<String>> = attempts.iter().map(attempt_row).collect();
        print!("{}", render(&headers, &rows));
    }
    Ok(())
}

fn describe(job: &Job, cost: genq::cost::Usd) -> String {
    let opt = |t: Option<DateTime<Utc>>| t.map(time).unwrap_or_else(|| "-".into());
    let fields = [
        ("id", job.id.to_string()),
        ("state", job.state.to_string()),
        ("queue", job.queue.clone()),
        ("model", job.model.clone()),
        ("operation", job.operation.to_string()),
        ("priority", job.priority.to_string()),
        ("attempts", format!("{}/{}", job.attempts, job.max_attempts)),
        ("cost", cost.to_string()),
        ("run_at", time(job.run_at)),
        ("created_at", time(job.created_at)),
        ("finished_at", opt(job.finished_at)),
        ("expires_at", opt(job.expires_at)),
        (
            "idempotency_key",
            job.idempotency_key.clone().unwrap_or("-".into()),
        ),
        ("prompt", job.prompt.clone()),
        ("params", job.params.to_string()),
        ("last_error", job.last_error.clone().unwrap_or("-".into())),
        (
            "result",
            job.result.as_ref().map_or("-".into(), |r| r.to_string()),
        ),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let indent = format!("\n{:width$}  ", "");
    let mut out = String::new();
    for (key, value) in fields {
        // Continuation lines of a multi-line prompt stay in the value column.
        let value = value.replace('\n', &indent);
        out.push_str(&format!("{key:width$}  {value}\n"));
    }
    out
}

fn attempt_row(a: &Attempt) -> Vec<String> {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        a.attempt.to_string(),
        time(a.started_at),
        dash(a.key_id.clone()),
        dash(a.http_status.map(|s| s.to_string())),
        a.outcome.to_string(),
        dash(a.retry_after_ms.map(|ms| ms.to_string())),
        match (a.cost_usd, a.cost_source) {
            (Some(usd), Some(source)) => format!("{usd} ({source})"),
            (None, Some(source)) => source.to_string(),
            _ => "-".into(),
        },
        clip(a.error.as_deref().unwrap_or("-"), 80),
    ]
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}
