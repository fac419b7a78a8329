//! What the demo shows: a live progress bar with a key table, and the summary.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;
use std::path::Path;
use std::time::{Duration, Instant};

use super::setup::{Environment, Pipeline};
use super::{DemoSummary, PipelineStep, PipelineSummary};
use genq::job::JobState;
use genq::store::jobs;
use genq::store::keys::KeyStatus;

/// Waits until every job is final, drawing progress (and the key table every few seconds).
pub(super) async fn watch(
    pool: &PgPool,
    total: i64,
    progress: bool,
    timeout: Duration,
) -> Result<()> {
    let bar = if progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} final · {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut last_table = Instant::now();
    loop {
        let counts = jobs::count_by_state(pool).await?;
        let count = |s: JobState| in_state(&counts, s);
        let finished =
            count(JobState::Succeeded) + count(JobState::Failed) + count(JobState::Cancelled);
        bar.set_position(finished as u64);
        bar.set_message(format!(
            "{} succeeded, {} failed, {} running, {} queued",
            count(JobState::Succeeded),
            count(JobState::Failed),
            count(JobState::Running),
            count(JobState::Queued)
        ));
        if progress && last_table.elapsed() > Duration::from_secs(5) {
            bar.println(crate::cli::keys::table(
                &genq::store::keys::list(pool).await?,
            ));
            last_table = Instant::now();
        }
        if finished >= total || start.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish();
    Ok(())
}

pub(super) async fn summarize(
    env: &Environment,
    pipeline: Option<Pipeline>,
    elapsed: Duration,
) -> Result<DemoSummary> {
    let counts = jobs::count_by_state(&env.pool).await?;
    let count = |s: JobState| in_state(&counts, s);
    let stats = env.sim.stats();
    let keys = genq::store::keys::list(&env.pool).await?;
    let costs = genq::store::costs::totals(&env.pool).await?;
    Ok(DemoSummary {
        cost_usd: costs.iter().fold(genq::cost::Usd::ZERO, |sum, c| {
            sum.saturating_add(c.cost_usd)
        }),
        billed_requests: costs.iter().map(|c| c.requests).sum(),
        succeeded: count(JobState::Succeeded),
        failed: jobs::failure_reasons(&env.pool).await?,
        unfinished: count(JobState::Queued) + count(JobState::Running),
        provider_requests: stats.total.requests,
        rate_limited: stats.total.rate_limited,
        // Every request the sim received, not only those it admitted: a
        // request sent too early counts even when it was refused.
        over_limit: env
            .sim
            .windows_over_limit()
            .into_iter()
            .map(|(sim_id, n)| {
                let name = env.keys.iter().find(|k| k.secret.key_id() == sim_id);
                (name.map_or(sim_id, |k| k.id.clone()), n)
            })
            .collect(),
        disabled_keys: keys
            .iter()
            .filter(|k| k.state == genq::keys::KeyState::Disabled)
            .map(|k| (k.id.clone(), k.disabled_reason.clone().unwrap_or_default()))
            .collect(),
        png_files: count_pngs(&env.output_dir),
        pipeline: match pipeline {
            Some(p) => Some(PipelineSummary {
                generate: step(&env.pool, p.generate).await?,
                edit: step(&env.pool, p.edit).await?,
            }),
            None => None,
        },
        elapsed,
    })
}

/// One pipeline job as it ended: its state and where its images are.
async fn step(pool: &PgPool, id: uuid::Uuid) -> Result<PipelineStep> {
    let job = genq::store::jobs::get(pool, id)
        .await?
        .with_context(|| format!("pipeline job {id} is gone"))?;
    let images = job
        .images()
        .iter()
        .filter_map(|i| i.get("location")?.as_str())
        .map(str::to_string)
        .collect();
    Ok(PipelineStep {
        id,
        state: job.state,
        images,
        last_error: job.last_error,
    })
}

/// PNG files of each job's latest attempt (`<job id>/<attempt>/<n>.png`).
fn count_pngs(dir: &Path) -> usize {
    let Ok(jobs) = std::fs::read_dir(dir) else {
        return 0;
    };
    jobs.flatten()
        .filter_map(|job| {
            std::fs::read_dir(job.path())
                .ok()?
                .flatten()
                .filter_map(|a| Some((a.file_name().to_str()?.parse::<u32>().ok()?, a.path())))
                .max()
        })
        .filter_map(|(_, attempt)| std::fs::read_dir(attempt).ok())
        .flat_map(|files| files.flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "png"))
        .count()
}

/// The summary as the demo prints it.
pub(super) fn render(s: &DemoSummary, output: &Path, keys: &[KeyStatus]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n== genq demo finished in {:.1}s ==\n",
        s.elapsed.as_secs_f64()
    ));
    out.push_str(&format!(
        "succeeded: {}   PNG files: {} under {}\n",
        s.succeeded,
        s.png_files,
        output.display()
    ));
    let failed: i64 = s.failed.iter().map(|(_, n)| n).sum();
    out.push_str(&format!("failed:    {failed}\n"));
    for (reason, n) in &s.failed {
        out.push_str(&format!("  {n:>4} × {reason}\n"));
    }
    if s.unfinished > 0 {
        out.push_str(&format!("unfinished: {} (timed out)\n", s.unfinished));
    }
    out.push_str(&format!(
        "provider requests: {}   429s: {} ({:.1}%)\n",
        s.provider_requests,
        s.rate_limited,
        100.0 * s.rate_limited as f64 / s.provider_requests.max(1) as f64,
    ));
    out.push_str(&format!(
        "cost: {} for {} billed requests (the sim's usage priced by the shipped price table; per key below)\n",
        s.cost_usd, s.billed_requests
    ));
    for (key, n) in &s.over_limit {
        out.push_str(&format!(
            "key {key}: {n} requests over its limit, by the provider's count of every request (keys whose limit genq had to find out)\n"
        ));
    }
    for (id, reason) in &s.disabled_keys {
        out.push_str(&format!("key disabled: {id}: {reason}\n"));
    }
    if let Some(p) = &s.pipeline {
        out.push_str(
            "pipeline (generate → edit, submitted at once; the edit waited for its input):\n",
        );
        for (name, step) in [("generate", &p.generate), ("edit", &p.edit)] {
            out.push_str(&format!("  {name:<8} {} {}", step.id, step.state));
            match (&step.last_error, step.images.as_slice()) {
                (Some(error), _) => out.push_str(&format!(": {error}\n")),
                (None, images) => out.push_str(&format!(" → {}\n", images.join(", "))),
            }
        }
    }
    out.push('\n');
    out.push_str(&crate::cli::keys::table(keys));
    out
}

/// Jobs in state `s`, from [`jobs::count_by_state`]'s answer.
fn in_state(counts: &[(JobState, i64)], s: JobState) -> i64 {
    counts
        .iter()
        .find(|(st, _)| *st == s)
        .map_or(0, |(_, n)| *n)
}
