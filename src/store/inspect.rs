//! SQL for looking at and steering jobs by hand: list, cancel, retry, and
//! the queue's shape (the `genq.queue_stats` view, and the two cheaper
//! halves `/metrics` reads: [`active_stats`] and [`finished_counts`]).
//!
//! Cancel and retry are single guarded `UPDATE`s: the state check and the
//! change happen in one statement, so they are safe against a worker
//! claiming or completing the same job at the same moment.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;
use crate::job::{Job, JobState, Operation};

/// Which jobs [`list`] returns (and [`bulk`] acts on).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs of this model.
    pub model: Option<String>,
    /// Only jobs whose prompt holds this text (any case).
    pub prompt: Option<String>,
    /// At most this many jobs.
    pub limit: i64,
    /// Only jobs after this one in list order (`(created_at, id)` below it):
    /// the keyset a page's last job gives for the next page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// Jobs matching `filter`, newest first (`created_at DESC, id DESC`, a
/// total order, so keyset pages see each job exactly once).
pub async fn list(pool: &PgPool, filter: &ListFilter) -> Result<Vec<Job>, StoreError> {
    let (after_at, after_id) = filter.after.unzip();
    Ok(sqlx::query_file_as!(
        Job,
        "src/store/sql/inspect/list.sql",
        filter.state.map(JobState::as_str),
        filter.since,
        filter.limit,
        after_at,
        after_id,
        filter.until,
        filter.queue.as_deref(),
        filter.model.as_deref(),
        filter.prompt.as_deref()
    )
    .fetch_all(pool)
    .await?)
}

/// What a bulk action does to the jobs a filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// Cancel the queued ones.
    Cancel,
    /// Queue the failed and cancelled ones again, with fresh attempts.
    Retry,
}

impl Bulk {
    pub fn as_str(self) -> &'static str {
        match self {
            Bulk::Cancel => "cancel",
            Bulk::Retry => "retry",
        }
    }
}

/// How many jobs matching `filter` (its `limit` and `after` ignored) `bulk`
/// would change; with `apply`, changes them and says how many it did.
/// Returns (matching, changed).
pub async fn bulk(
    pool: &PgPool,
    filter: &ListFilter,
    bulk: Bulk,
    apply: bool,
) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query_file!(
        "src/store/sql/inspect/bulk.sql",
        bulk.as_str(),
        filter.state.map(JobState::as_str),
        filter.since,
        filter.until,
        filter.queue.as_deref(),
        filter.model.as_deref(),
        filter.prompt.as_deref(),
        apply
    )
    .fetch_one(pool)
    .await?;
    Ok((row.matching, row.changed))
}

/// Jobs that ended in each of the last 60 minutes: (minutes ago, succeeded,
/// failed), oldest first, every minute present.
pub async fn throughput(pool: &PgPool) -> Result<Vec<(i32, i64, i64)>, StoreError> {
    let rows = sqlx::query!(
        r#"WITH ended AS (
               SELECT floor(extract(epoch FROM now() - finished_at) / 60)::int AS ago, state
                 FROM genq.jobs WHERE finished_at > now() - interval '1 hour')
           SELECT m.ago AS "ago!",
                  count(e.ago) FILTER (WHERE e.state = 'succeeded') AS "succeeded!",
                  count(e.ago) FILTER (WHERE e.state IN ('failed', 'cancelled')) AS "failed!"
             FROM generate_series(59, 0, -1) AS m(ago)
             LEFT JOIN ended e ON e.ago = m.ago
            GROUP BY m.ago ORDER BY m.ago DESC"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.ago, r.succeeded, r.failed))
        .collect())
}

/// What a [`cancel`] or [`retry`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Applied; the job as it is now.
    Done(Box<Job>),
    /// No job has that id.
    NotFound,
    /// The job's state does not allow it; `reason` says why and what to do.
    Refused {
        /// The state that forbade it.
        state: JobState,
        /// Why, and what to do instead.
        reason: String,
    },
}

/// What [`cancel`] did.
pub type CancelOutcome = Change;
/// What [`retry`] did.
pub type RetryOutcome = Change;

/// Cancels a queued job. Only queued jobs can be cancelled: a running job
/// may have a provider call in flight that is billed and finishes anyway,
/// and the worker would overwrite the cancellation; final jobs are done.
pub async fn cancel(pool: &PgPool, id: Uuid) -> Result<CancelOutcome, StoreError> {
    let done = sqlx::query_file_as!(Job, "src/store/sql/inspect/cancel.sql", id)
        .fetch_optional(pool)
        .await?;
    if let Some(job) = done {
        return Ok(Change::Done(Box::new(job)));
    }
    refusal(pool, id, |state| match state {
        JobState::Running => "job is running: its provider call may already be in flight and \
             would be billed and finish anyway; wait for it to end (retry it afterwards if needed)"
            .into(),
        JobState::Succeeded => "job already succeeded; there is nothing to cancel".into(),
        JobState::Failed => "job already failed; there is nothing to cancel".into(),
        JobState::Cancelled => "job is already cancelled".into(),
        JobState::Queued => "job changed state meanwhile; look at it and try again".into(),
    })
    .await
}

/// Puts a failed or cancelled job back in the queue to run now, with a
/// fresh set of attempts. Its earlier attempts stay in `genq.attempts`.
pub async fn retry(pool: &PgPool, id: Uuid) -> Result<RetryOutcome, StoreError> {
    let done = sqlx::query_file_as!(Job, "src/store/sql/inspect/retry.sql", id)
        .fetch_optional(pool)
        .await?;
    if let Some(job) = done {
        return Ok(Change::Done(Box::new(job)));
    }
    refusal(pool, id, |state| match state {
        JobState::Queued => {
            "job is already queued; it will run when a worker and a key are free".into()
        }
        JobState::Running => "job is running now; retry it only if it fails".into(),
        JobState::Succeeded => "job already succeeded; submit a new job to generate again".into(),
        JobState::Failed | JobState::Cancelled => {
            "job changed state meanwhile; look at it and try again".into()
        }
    })
    .await
}

/// After a guarded update matched nothing: not found, or refused with `reason(state)`.
async fn refusal(
    pool: &PgPool,
    id: Uuid,
    reason: impl FnOnce(JobState) -> String,
) -> Result<Change, StoreError> {
    let state = sqlx::query_scalar!(
        r#"SELECT state AS "state: JobState" FROM genq.jobs WHERE id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?;
    let Some(state) = state else {
        return Ok(Change::NotFound);
    };
    Ok(Change::Refused {
        state,
        reason: reason(state),
    })
}

/// One row of the `genq.queue_stats` view.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct QueueStat {
    /// Queue name.
    pub queue: String,
    /// Image model.
    pub model: String,
    /// Job state.
    pub state: JobState,
    /// Jobs in this (queue, model, state).
    pub jobs: i64,
    /// Earliest `run_at` among queued jobs that are due (queued rows only).
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Seconds the oldest due queued job has waited (queued rows only).
    pub oldest_queued_age_s: Option<f64>,
    /// Why these queued jobs wait, when every key serving the model is
    /// disabled or cooling (queued rows only; `genq.model_waits`).
    pub waiting: Option<String>,
}

/// The queue's shape: jobs per (queue, model, state), ordered by those.
pub async fn queue_stats(pool: &PgPool) -> Result<Vec<QueueStat>, StoreError> {
    Ok(sqlx::query_as!(
        QueueStat,
        r#"SELECT queue AS "queue!", model AS "model!", state AS "state!: JobState", jobs AS "jobs!",
                  oldest_queued_at, oldest_queued_age_s, waiting
             FROM genq.queue_stats ORDER BY queue, model, state"#
    )
    .fetch_all(pool)
    .await?)
}

/// Queued or running jobs of one (queue, model), for `/metrics`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ActiveStat {
    /// Queue name.
    pub queue: String,
    /// Image model.
    pub model: String,
    /// `queued` or `running`.
    pub state: JobState,
    /// Jobs in this (queue, model, state).
    pub jobs: i64,
    /// Seconds the oldest due queued job has waited (queued rows with a due job only).
    pub oldest_due_age_s: Option<f64>,
    /// `disabled` or `cooling` when every key serving the model is (queued
    /// rows only; `genq.model_waits.kind`).
    pub waiting: Option<String>,
}

/// Queued and running jobs per (queue, model), exactly. Cheap however many
/// finished jobs are kept: each state is read from its partial index
/// (`jobs_claim_model_idx`, `jobs_lease_idx`), never from the finished rows.
pub async fn active_stats(pool: &PgPool) -> Result<Vec<ActiveStat>, StoreError> {
    Ok(
        sqlx::query_file_as!(ActiveStat, "src/store/sql/inspect/active_stats.sql")
            .fetch_all(pool)
            .await?,
    )
}

/// Finished jobs (succeeded, failed, cancelled) of one (queue, model, state).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FinishedCount {
    /// Queue name.
    pub queue: String,
    /// Image model.
    pub model: String,
    /// A final state.
    pub state: JobState,
    /// Jobs retained in it.
    pub jobs: i64,
}

/// Retained finished jobs per (queue, model, state), exactly. This reads
/// every retained finished row (about 300 ms at 1,000,000 on 2 cores), so
/// `/metrics` does not run it on every scrape once it is slow.
pub async fn finished_counts(pool: &PgPool) -> Result<Vec<FinishedCount>, StoreError> {
    Ok(
        sqlx::query_file_as!(FinishedCount, "src/store/sql/inspect/finished_counts.sql")
            .fetch_all(pool)
            .await?,
    )
}

/// A job as `GET /v1/jobs/{id}` and `genq jobs show` describe it: the row,
/// every attempt, why it waits (if it is queued and does), and an edit's
/// inputs.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    pub job: Job,
    pub attempts: Vec<crate::job::Attempt>,
    /// What its billed attempts cost.
    pub cost_usd: crate::cost::Usd,
    pub waiting: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<serde_json::Value>,
    /// Its completion webhooks: where, how many sends, the last answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<super::webhooks::DeliveryStatus>,
}

/// Job `id` in detail, if it exists.
pub async fn detail(pool: &PgPool, id: Uuid) -> Result<Option<JobDetail>, StoreError> {
    let Some(job) = super::jobs::get(pool, id).await? else {
        return Ok(None);
    };
    let attempts = super::jobs::attempts(pool, id).await?;
    let inputs = match job.operation {
        Operation::Edit => super::inputs::for_job(pool, id).await?,
        Operation::Generate => Vec::new(),
    };
    let waiting = match job.state {
        JobState::Queued if job.awaiting_input => Some(format!(
            "waiting for its input job(s) to succeed: {}",
            inputs
                .iter()
                .filter_map(|i| match i.source {
                    crate::input::Source::FromJob { job, .. } => Some(job.to_string()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(", ")
        )),
        JobState::Queued => match super::budgets::queue_reason(pool, &job.queue).await? {
            Some(budget) => Some(budget),
            None => super::keys::waiting_reason(pool, &job.model).await?,
        },
        _ => None,
    };
    let cost_usd = super::costs::of_job(pool, id).await?.unwrap_or_default();
    let webhooks = super::webhooks::for_job(pool, id).await?;
    Ok(Some(JobDetail {
        job,
        attempts,
        cost_usd,
        waiting,
        webhooks,
        inputs: inputs.iter().map(crate::input::Input::to_json).collect(),
    }))
}
