//! SQL for `genq.jobs` and `genq.attempts`: the life of a job.
//!
//! Every write that ends a worker's hold on a job is fenced by
//! `(locked_by, attempts)`: a worker whose lease expired and whose job was
//! reclaimed cannot overwrite the newer attempt.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

use super::{StoreError, storable};
use crate::cost::{CostSource, Usd};
use crate::job::{Attempt, AttemptOutcome, Job, JobState, NewJob, Operation};
use crate::provider::Call;

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: Uuid,
    pub state: JobState,
    /// False when the idempotency key matched an existing job, which is returned instead.
    pub created: bool,
}

/// What [`enqueue`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new job.
    New(Enqueued),
    /// The job already holding this idempotency key (the caller decides
    /// whether it is the same job: `NewJob::differences`).
    Existing(Box<Job>),
}

impl Inserted {
    /// The job's id, new or existing.
    pub fn id(&self) -> Uuid {
        match self {
            Inserted::New(enqueued) => enqueued.id,
            Inserted::Existing(job) => job.id,
        }
    }
}

/// Inserts a job, or returns the one already holding its idempotency key.
/// The caller validates first ([`crate::submit::validate`]); the table's
/// CHECKs are the backstop.
pub async fn enqueue(pool: &PgPool, job: &NewJob) -> Result<Inserted, StoreError> {
    let inputs = crate::input::rows(&job.inputs, job.mask.as_ref())
        .map_err(|(label, why)| StoreError::Invalid(format!("{label} {why}")))?;
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query_file!(
        "src/store/sql/jobs/enqueue.sql",
        job.queue(),
        job.model(),
        &job.prompt,
        job.params.as_ref(),
        job.priority,
        job.run_at,
        job.max_attempts,
        job.idempotency_key.as_deref(),
        job.expires_at,
        job.operation().as_str(),
        job.callback_url.as_deref(),
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::classify)?;
    // The inputs go in with the job, so no worker sees an edit without them
    // (the NOTIFY that wakes workers is sent at commit).
    if let Some(row) = &inserted {
        super::inputs::insert(&mut *tx, row.id, &inputs).await?;
    }
    tx.commit().await?;
    if let Some(row) = inserted {
        return Ok(Inserted::New(Enqueued {
            id: row.id,
            state: row.state,
            created: true,
        }));
    }
    // The key exists (ON CONFLICT waited for any in-flight insert of it to commit).
    let existing = sqlx::query_file_as!(
        Job,
        "src/store/sql/jobs/by_idempotency_key.sql",
        job.idempotency_key.as_deref()
    )
    .fetch_one(pool)
    .await?;
    Ok(Inserted::Existing(Box::new(existing)))
}

/// Inserts jobs the way a producer's plain SQL would: prompt and params
/// only, defaults for the rest, no validation beyond the table's CHECKs.
pub async fn insert_plain(
    pool: &PgPool,
    prompts: &[String],
    params: &[Value],
) -> Result<u64, StoreError> {
    let done = sqlx::query!(
        "INSERT INTO genq.jobs (prompt, params) SELECT * FROM unnest($1::text[], $2::jsonb[])",
        prompts,
        params
    )
    .execute(pool)
    .await
    .map_err(StoreError::classify)?;
    Ok(done.rows_affected())
}

/// Claims up to `limit` runnable jobs of `queues` for `worker`, in line
/// order: highest priority first, then oldest `run_at`, then enqueue order.
/// Each claim counts an attempt and takes a lease the worker must keep alive
/// with [`heartbeat`]. Queues are served in the order given, one index scan
/// each (`queue = ANY(...)` would make the planner sort every queued row).
/// For providers without rate limits; the others claim per model
/// ([`claim_model`]) once a key has room.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    queues: &[String],
    limit: usize,
    lease: Duration,
) -> Result<Vec<Job>, StoreError> {
    let mut jobs: Vec<Job> = Vec::with_capacity(limit);
    for queue in queues {
        if jobs.len() >= limit {
            break;
        }
        let claimed = sqlx::query_file_as!(
            Job,
            "src/store/sql/jobs/claim.sql",
            queue,
            (limit - jobs.len()) as i64,
            worker,
            lease.as_secs_f64()
        )
        .fetch_all(pool)
        .await?;
        jobs.extend(claimed);
    }
    Ok(jobs)
}

/// Which jobs of one queue a claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve<'a> {
    /// Jobs of this model.
    Model(&'a str),
    /// Jobs of `model` that list `fallback` in `params.fallback_models`,
    /// to run on the fallback while their own model must wait.
    Fallback { model: &'a str, fallback: &'a str },
}

/// Claims up to `limit` due jobs of `queue` that `serve` selects, in line
/// order (priority, `run_at`, enqueue order), for a worker that already
/// holds that many provider slots. See [`claim`] for the lease.
pub async fn claim_model(
    pool: &PgPool,
    worker: &str,
    queue: &str,
    serve: Serve<'_>,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Job>, StoreError> {
    let (model, fallback) = match serve {
        Serve::Model(model) => (model, None),
        Serve::Fallback { model, fallback } => (model, Some(fallback)),
    };
    let mut jobs = sqlx::query_file_as!(
        Job,
        "src/store/sql/jobs/claim_model.sql",
        queue,
        limit as i64,
        worker,
        lease.as_secs_f64(),
        model,
        fallback
    )
    .fetch_all(pool)
    .await?;
    // UPDATE … RETURNING does not keep the CTE's order.
    jobs.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.run_at, j.seq));
    Ok(jobs)
}

/// A model with due jobs in a queue, and what its first job in line costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueModel {
    pub model: String,
    /// Images the first job in line asks for (`params.n`, default 1).
    pub cost: u32,
}

/// The models that have due jobs in `queue`, the one whose first job is
/// most urgent first. A loose index scan: one probe per model, however deep
/// the backlog.
pub async fn due_models(pool: &PgPool, queue: &str) -> Result<Vec<DueModel>, StoreError> {
    let rows = sqlx::query_file!("src/store/sql/jobs/due_models.sql", queue)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| DueModel {
            model: row.model,
            cost: row.n.max(1) as u32,
        })
        .collect())
}

/// The fallback models named by the first due jobs of `model` in `queue`
/// that have any, most urgent first.
pub async fn fallback_models(
    pool: &PgPool,
    queue: &str,
    model: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_file_scalar!("src/store/sql/jobs/fallback_models.sql", queue, model)
            .fetch_all(pool)
            .await?,
    )
}

/// Fails queued jobs whose `expires_at` has passed: they waited for capacity
/// past their deadline and were never claimed. Safe from every worker at once.
pub async fn expire(pool: &PgPool, limit: i64) -> Result<u64, StoreError> {
    let done = sqlx::query_file!("src/store/sql/jobs/expire.sql", limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Extends the leases of the jobs `worker` holds: `ids` at `attempts`, the
/// ones the worker still tracks. A row that carries the worker's id but is
/// not listed (a claim whose reply was lost, a completion that could not be
/// written) is left to lapse, so the reaper returns it to the queue.
/// Returns how many leases were renewed.
pub async fn heartbeat(
    pool: &PgPool,
    worker: &str,
    ids: &[Uuid],
    attempts: &[i32],
    lease: Duration,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query_file!(
        "src/store/sql/jobs/heartbeat.sql",
        worker,
        lease.as_secs_f64(),
        ids,
        attempts
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// How a worker ends its hold on one claimed job. The worker decides, from
/// the job it claimed, whether a failure gives up (no attempts left) or a
/// wait passes the job's `expires_at`; the store writes what it is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Done; `result` describes the output.
    Succeeded { result: Value },
    /// Failed for good; `error` says why.
    Failed { error: String },
    /// Back to the queue; `error` says why. With a `delay`, the job runs
    /// again that long after the database's `now()` (a real failure backs
    /// off); without one it keeps its `run_at`, and so its place in line (a
    /// rate limit or a released slot is not the job's fault).
    Requeue {
        error: String,
        delay: Option<Duration>,
    },
}

impl Finish {
    fn state(&self) -> JobState {
        match self {
            Finish::Succeeded { .. } => JobState::Succeeded,
            Finish::Failed { .. } => JobState::Failed,
            Finish::Requeue { .. } => JobState::Queued,
        }
    }
}

/// One finished hold on a job, as [`complete`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub job_id: Uuid,
    /// The job's `attempts` when it was claimed: the fencing token.
    pub attempt: i32,
    pub finish: Finish,
    /// Give the attempt back: the job was not at fault (no key could take it).
    pub refund: bool,
    /// None when no provider call was made (nothing to record).
    pub call: Option<Call>,
}

/// Writes many completions in one round trip. Returns the ids it applied;
/// a completion whose lease was lost (the job was reclaimed) is skipped.
pub async fn complete(
    pool: &PgPool,
    worker: &str,
    batch: &[Completion],
) -> Result<Vec<Uuid>, StoreError> {
    // No FOR UPDATE before the UPDATE: the fence sits in the UPDATE's own
    // WHERE, which PostgreSQL re-checks on the newest row version if a reaper
    // got there first. Locking first would write every row twice.

    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut refunds = Vec::with_capacity(n);
    let mut results: Vec<Option<Value>> = Vec::with_capacity(n);
    let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
    let mut delays: Vec<Option<f64>> = Vec::with_capacity(n);
    let mut call_outcomes: Vec<Option<AttemptOutcome>> = Vec::with_capacity(n);
    let mut key_ids: Vec<Option<String>> = Vec::with_capacity(n);
    let mut statuses: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut call_errors: Vec<Option<String>> = Vec::with_capacity(n);
    let mut waits: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut call_starts: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut cost_models: Vec<Option<String>> = Vec::with_capacity(n);
    let mut cost_sources: Vec<Option<CostSource>> = Vec::with_capacity(n);
    let mut cost_nanos: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut input_tokens: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut output_tokens: Vec<Option<i32>> = Vec::with_capacity(n);
    for c in batch {
        ids.push(c.job_id);
        attempts.push(c.attempt);
        states.push(c.finish.state());
        refunds.push(c.refund);
        // Outside text (provider messages, revised prompts) goes in clean:
        // one NUL would fail the statement, and the whole batch with it.
        let (result, error, delay) = match &c.finish {
            Finish::Succeeded { result } => (Some(storable::json(result.clone())), None, None),
            Finish::Failed { error } => (None, Some(storable::message(error)), None),
            Finish::Requeue { error, delay } => (
                None,
                Some(storable::message(error)),
                delay.map(|d| d.as_secs_f64()),
            ),
        };
        results.push(result);
        errors.push(error);
        delays.push(delay);
        let call = c.call.as_ref();
        call_outcomes.push(call.map(|c| c.outcome));
        key_ids.push(call.and_then(|c| c.key_id.clone()));
        statuses.push(call.and_then(|c| c.http_status.map(i32::from)));
        call_errors.push(call.and_then(|c| c.error.as_deref().map(storable::message)));
        waits.push(call.and_then(|c| {
            c.retry_after
                .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        }));
        call_starts.push(call.map(|c| c.started_at));
        let cost = call.and_then(|c| c.cost.as_ref());
        let tokens = cost.and_then(|c| c.tokens);
        let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        cost_models.push(cost.map(|c| c.model.clone()));
        cost_sources.push(cost.map(|c| c.source));
        cost_nanos.push(cost.and_then(|c| c.usd).map(Usd::nanos));
        input_tokens.push(tokens.map(|t| count(t.input())));
        output_tokens.push(tokens.map(|t| count(t.output)));
    }
    let applied = sqlx::query_file_scalar!(
        "src/store/sql/jobs/complete.sql",
        worker,
        &ids,
        &attempts,
        &states as &[JobState],
        &refunds,
        &results as &[Option<Value>],
        &errors as &[Option<String>],
        &delays as &[Option<f64>],
        &call_outcomes as &[Option<AttemptOutcome>],
        &key_ids as &[Option<String>],
        &statuses as &[Option<i32>],
        &call_errors as &[Option<String>],
        &waits as &[Option<i64>],
        &call_starts as &[Option<DateTime<Utc>>],
        &cost_models as &[Option<String>],
        &cost_sources as &[Option<CostSource>],
        &cost_nanos as &[Option<i64>],
        &input_tokens as &[Option<i32>],
        &output_tokens as &[Option<i32>]
    )
    .fetch_all(pool)
    .await?;
    Ok(applied)
}

/// Returns jobs whose lease expired (their worker died or lost the database)
/// to the queue, recording the lost attempt. A job that has used all its
/// attempts this way is failed. Safe to run from every worker at once.
pub async fn reap(pool: &PgPool, limit: i64) -> Result<u64, StoreError> {
    let done = sqlx::query_file!("src/store/sql/jobs/reap.sql", limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Puts every job `worker` still holds back in the queue without spending an
/// attempt (graceful shutdown). Records a `released` attempt for visibility,
/// since a provider call may have been in flight.
pub async fn release_all(pool: &PgPool, worker: &str) -> Result<u64, StoreError> {
    let done = sqlx::query_file!("src/store/sql/jobs/release_all.sql", worker)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// One job by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Job>, StoreError> {
    Ok(sqlx::query_file_as!(Job, "src/store/sql/jobs/get.sql", id)
        .fetch_optional(pool)
        .await?)
}

/// Every attempt of a job, oldest first.
pub async fn attempts(pool: &PgPool, job_id: Uuid) -> Result<Vec<Attempt>, StoreError> {
    Ok(
        sqlx::query_file_as!(Attempt, "src/store/sql/jobs/attempts.sql", job_id)
            .fetch_all(pool)
            .await?,
    )
}

/// Number of jobs in each state (states with none are omitted).
pub async fn count_by_state(db: impl PgExecutor<'_>) -> Result<Vec<(JobState, i64)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT state AS "state: JobState", count(*) AS "jobs!"
             FROM genq.jobs GROUP BY state ORDER BY state"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.jobs)).collect())
}

/// Failed jobs grouped by their error, most common first.
pub async fn failure_reasons(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT coalesce(last_error, 'no error recorded') AS "error!", count(*) AS "jobs!"
             FROM genq.jobs WHERE state = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.error, r.jobs)).collect())
}

/// Deletes up to `batch` finished jobs (and, by cascade, their attempts),
/// returning their ids:
/// succeeded ones older than `succeeded_age`, failed and cancelled ones older
/// than `other_age`. Only one caller prunes at a time (a transaction-scoped
/// advisory lock); the others return `None` at once. Never touches a queued
/// or running job.
pub async fn prune(
    pool: &PgPool,
    succeeded_age: Duration,
    other_age: Duration,
    batch: i64,
) -> Result<Option<Vec<Uuid>>, StoreError> {
    let mut tx = pool.begin().await?;
    let elected = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock(hashtext('genq.prune')) AS "elected!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    if !elected {
        return Ok(None);
    }
    let done = sqlx::query_file_scalar!(
        "src/store/sql/jobs/prune.sql",
        succeeded_age.as_secs_f64(),
        other_age.as_secs_f64(),
        batch
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(done))
}
