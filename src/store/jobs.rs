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
use crate::job::{Attempt, AttemptOutcome, Job, JobState, NewJob};
use crate::provider::Call;

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: Uuid,
    pub state: JobState,
    /// False when the idempotency key matched an existing job, which is returned instead.
    pub created: bool,
}

/// Inserts a job, or returns the existing one when its idempotency key
/// repeats with the same job ([`NewJob::differences`]); the same key with a
/// different job is [`StoreError::Conflict`].
/// The caller validates first ([`crate::submit::validate`]); the table's CHECKs are the backstop.
pub async fn enqueue(pool: &PgPool, job: &NewJob) -> Result<Enqueued, StoreError> {
    const INSERT: &str = "
        INSERT INTO genq.jobs (queue, model, prompt, params, priority, run_at, max_attempts,
                               idempotency_key, expires_at)
        VALUES ($1, $2, $3, coalesce($4, '{}'::jsonb), coalesce($5, 0), coalesce($6, now()),
                coalesce($7, 5), $8, $9)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, state";
    let inserted: Option<(Uuid, JobState)> = sqlx::query_as(INSERT)
        .bind(job.queue())
        .bind(job.model())
        .bind(&job.prompt)
        .bind(&job.params)
        .bind(job.priority)
        .bind(job.run_at)
        .bind(job.max_attempts)
        .bind(&job.idempotency_key)
        .bind(job.expires_at)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::classify)?;
    if let Some((id, state)) = inserted {
        return Ok(Enqueued {
            id,
            state,
            created: true,
        });
    }
    // The key exists (ON CONFLICT waited for any in-flight insert of it to commit).
    let existing: Job = sqlx::query_as("SELECT * FROM genq.jobs WHERE idempotency_key = $1")
        .bind(&job.idempotency_key)
        .fetch_one(pool)
        .await?;
    let differs = job.differences(&existing);
    if !differs.is_empty() {
        return Err(StoreError::Conflict(format!(
            "idempotency_key {:?} was already used for job {} with a different {}; \
             resend exactly the same job to get it back, or use a new key for a new job",
            job.idempotency_key.as_deref().unwrap_or_default(),
            existing.id,
            differs.join(", ")
        )));
    }
    Ok(Enqueued {
        id: existing.id,
        state: existing.state,
        created: false,
    })
}

/// Inserts jobs the way a producer's plain SQL would: prompt and params
/// only, defaults for the rest, no validation beyond the table's CHECKs.
pub async fn insert_plain(
    pool: &PgPool,
    prompts: &[String],
    params: &[Value],
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO genq.jobs (prompt, params) SELECT * FROM unnest($1::text[], $2::jsonb[])",
    )
    .bind(prompts)
    .bind(params)
    .execute(pool)
    .await
    .map_err(StoreError::classify)?;
    Ok(done.rows_affected())
}

/// The claim's write, shared by [`claim`] and [`claim_model`]: the rows in
/// `picked` become `running` under a lease; $3 is the worker, $4 the lease
/// in seconds. Each claim counts an attempt.
macro_rules! take_picked {
    () => {
        "UPDATE genq.jobs j
            SET state = 'running', attempts = j.attempts + 1, locked_by = $3,
                lease_expires_at = now() + make_interval(secs => $4),
                started_at = now(), updated_at = now()
           FROM picked
          WHERE j.id = picked.id
         RETURNING j.*"
    };
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
    const CLAIM: &str = concat!(
        "WITH picked AS (
            SELECT id FROM genq.jobs
             WHERE state = 'queued' AND queue = $1 AND run_at <= now()
               AND (expires_at IS NULL OR expires_at > now())
             ORDER BY priority DESC, run_at, seq
             LIMIT $2
             FOR UPDATE SKIP LOCKED) ",
        take_picked!()
    );
    let mut jobs: Vec<Job> = Vec::with_capacity(limit);
    for queue in queues {
        if jobs.len() >= limit {
            break;
        }
        let claimed: Vec<Job> = sqlx::query_as(CLAIM)
            .bind(queue)
            .bind((limit - jobs.len()) as i64)
            .bind(worker)
            .bind(lease.as_secs_f64())
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
    const CLAIM: &str = concat!(
        "WITH picked AS (
            SELECT id FROM genq.jobs
             WHERE state = 'queued' AND queue = $1 AND model = $5 AND run_at <= now()
               AND (expires_at IS NULL OR expires_at > now())
               AND ($6::text IS NULL OR (params ? 'fallback_models' AND params->'fallback_models' ? $6))
             ORDER BY priority DESC, run_at, seq
             LIMIT $2
             FOR UPDATE SKIP LOCKED) ",
        take_picked!()
    );
    let (model, fallback) = match serve {
        Serve::Model(model) => (model, None),
        Serve::Fallback { model, fallback } => (model, Some(fallback)),
    };
    let mut jobs: Vec<Job> = sqlx::query_as(CLAIM)
        .bind(queue)
        .bind(limit as i64)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(model)
        .bind(fallback)
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
    const DUE: &str = "
        WITH RECURSIVE models AS (
            (SELECT model FROM genq.jobs WHERE state = 'queued' AND queue = $1 ORDER BY model LIMIT 1)
            UNION ALL
            SELECT (SELECT j.model FROM genq.jobs j
                     WHERE j.state = 'queued' AND j.queue = $1 AND j.model > m.model
                     ORDER BY j.model LIMIT 1)
              FROM models m WHERE m.model IS NOT NULL
        )
        SELECT m.model, h.n FROM models m
         CROSS JOIN LATERAL (
            SELECT j.priority, j.run_at, j.seq,
                   CASE WHEN jsonb_typeof(j.params->'n') = 'number'
                        THEN greatest(1, least(100, (j.params->>'n')::numeric))::int ELSE 1 END AS n
              FROM genq.jobs j
             WHERE j.state = 'queued' AND j.queue = $1 AND j.model = m.model AND j.run_at <= now()
             ORDER BY j.priority DESC, j.run_at, j.seq
             LIMIT 1) h
         WHERE m.model IS NOT NULL
         ORDER BY h.priority DESC, h.run_at, h.seq";
    let rows: Vec<(String, i32)> = sqlx::query_as(DUE).bind(queue).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(model, n)| DueModel {
            model,
            cost: n.max(1) as u32,
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
    const FALLBACKS: &str = "
        SELECT f.model FROM (
            SELECT params->'fallback_models' AS models FROM genq.jobs
             WHERE state = 'queued' AND queue = $1 AND model = $2 AND run_at <= now()
               AND params ? 'fallback_models'
             ORDER BY priority DESC, run_at, seq
             LIMIT 16) j
         CROSS JOIN LATERAL jsonb_array_elements_text(
                CASE WHEN jsonb_typeof(j.models) = 'array' THEN j.models ELSE '[]' END)
                WITH ORDINALITY AS f(model, ord)
         GROUP BY f.model
         ORDER BY min(f.ord), f.model";
    Ok(sqlx::query_scalar(FALLBACKS)
        .bind(queue)
        .bind(model)
        .fetch_all(pool)
        .await?)
}

/// Fails queued jobs whose `expires_at` has passed: they waited for capacity
/// past their deadline and were never claimed. Safe from every worker at once.
pub async fn expire(pool: &PgPool, limit: i64) -> Result<u64, StoreError> {
    const EXPIRE: &str = "
        WITH doomed AS (
            SELECT id FROM genq.jobs
             WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= now()
             ORDER BY expires_at
             LIMIT $1
               FOR UPDATE SKIP LOCKED)
        UPDATE genq.jobs j
           SET state = 'failed', finished_at = now(), updated_at = now(),
               last_error = format('expired at %s while waiting for capacity%s', j.expires_at,
                                   CASE WHEN j.last_error IS NULL THEN '' ELSE ': ' || j.last_error END)
          FROM doomed d
         WHERE j.id = d.id";
    let done = sqlx::query(EXPIRE).bind(limit).execute(pool).await?;
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
    const HEARTBEAT: &str = "
        UPDATE genq.jobs j SET lease_expires_at = now() + make_interval(secs => $2)
          FROM unnest($3::uuid[], $4::int[]) AS h(id, attempt)
         WHERE j.id = h.id AND j.attempts = h.attempt
           AND j.state = 'running' AND j.locked_by = $1";
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(HEARTBEAT)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(ids)
        .bind(attempts)
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
    const COMPLETE: &str = "
        WITH input AS (
            SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::bool[], $6::jsonb[],
                                 $7::text[], $8::float8[], $9::text[], $10::text[],
                                 $11::int[], $12::text[], $13::int8[], $14::timestamptz[])
                AS t(id, attempt, state, refund, result, error, delay_secs,
                     call_outcome, key_id, http_status, call_error, retry_after_ms, call_started_at)
        ), updated AS (
            UPDATE genq.jobs j
               SET state = i.state,
                   attempts = CASE WHEN i.refund THEN j.attempts - 1 ELSE j.attempts END,
                   result = coalesce(i.result, j.result),
                   last_error = i.error,
                   run_at = CASE WHEN i.delay_secs IS NULL THEN j.run_at
                                 ELSE now() + make_interval(secs => i.delay_secs) END,
                   finished_at = CASE WHEN i.state = 'queued' THEN NULL ELSE now() END,
                   locked_by = NULL, lease_expires_at = NULL, updated_at = now()
              FROM input i
             WHERE j.id = i.id AND j.state = 'running' AND j.locked_by = $1
               AND j.attempts = i.attempt
            RETURNING j.id
        ), recorded AS (
            INSERT INTO genq.attempts (job_id, attempt, worker, key_id, started_at, outcome,
                                       http_status, error, retry_after_ms)
            SELECT i.id, i.attempt, $1, i.key_id, i.call_started_at, i.call_outcome,
                   i.http_status, i.call_error, i.retry_after_ms
              FROM input i JOIN updated u ON u.id = i.id
             WHERE i.call_outcome IS NOT NULL
        )
        SELECT id FROM updated";

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
    }
    let applied = sqlx::query_scalar(COMPLETE)
        .bind(worker)
        .bind(&ids)
        .bind(&attempts)
        .bind(&states)
        .bind(&refunds)
        .bind(&results)
        .bind(&errors)
        .bind(&delays)
        .bind(&call_outcomes)
        .bind(&key_ids)
        .bind(&statuses)
        .bind(&call_errors)
        .bind(&waits)
        .bind(&call_starts)
        .fetch_all(pool)
        .await?;
    Ok(applied)
}

/// Returns jobs whose lease expired (their worker died or lost the database)
/// to the queue, recording the lost attempt. A job that has used all its
/// attempts this way is failed. Safe to run from every worker at once.
pub async fn reap(pool: &PgPool, limit: i64) -> Result<u64, StoreError> {
    const REAP: &str = "
        WITH lost AS (
            SELECT id, locked_by, attempts, started_at FROM genq.jobs
             WHERE state = 'running' AND lease_expires_at < now()
             ORDER BY lease_expires_at
             LIMIT $1
               FOR UPDATE SKIP LOCKED
        ), updated AS (
            UPDATE genq.jobs j
               SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'queued' END,
                   finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
                   last_error = format('lease expired: worker %s stopped renewing it (crashed or lost the database)', l.locked_by),
                   run_at = now(), locked_by = NULL, lease_expires_at = NULL, updated_at = now()
              FROM lost l
             WHERE j.id = l.id
            RETURNING j.id
        )
        INSERT INTO genq.attempts (job_id, attempt, worker, started_at, outcome, error)
        SELECT l.id, l.attempts, l.locked_by, coalesce(l.started_at, now()), 'lost',
               'lease expired before the worker reported an outcome'
          FROM lost l JOIN updated u ON u.id = l.id";
    let done = sqlx::query(REAP).bind(limit).execute(pool).await?;
    Ok(done.rows_affected())
}

/// Puts every job `worker` still holds back in the queue without spending an
/// attempt (graceful shutdown). Records a `released` attempt for visibility,
/// since a provider call may have been in flight.
pub async fn release_all(pool: &PgPool, worker: &str) -> Result<u64, StoreError> {
    const RELEASE: &str = "
        WITH released AS (
            UPDATE genq.jobs
               SET state = 'queued', attempts = attempts - 1, run_at = now(),
                   locked_by = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE state = 'running' AND locked_by = $1
            RETURNING id, attempts + 1 AS attempt, started_at
        )
        INSERT INTO genq.attempts (job_id, attempt, worker, started_at, outcome, error)
        SELECT id, attempt, $1, coalesce(started_at, now()), 'released',
               'worker shut down before the job finished; returned to the queue'
          FROM released";
    let done = sqlx::query(RELEASE).bind(worker).execute(pool).await?;
    Ok(done.rows_affected())
}

/// One job by id.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Job>, StoreError> {
    Ok(sqlx::query_as("SELECT * FROM genq.jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// Every attempt of a job, oldest first.
pub async fn attempts(pool: &PgPool, job_id: Uuid) -> Result<Vec<Attempt>, StoreError> {
    Ok(
        sqlx::query_as("SELECT * FROM genq.attempts WHERE job_id = $1 ORDER BY id")
            .bind(job_id)
            .fetch_all(pool)
            .await?,
    )
}

/// Number of jobs in each state (states with none are omitted).
pub async fn count_by_state(db: impl PgExecutor<'_>) -> Result<Vec<(JobState, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT state, count(*) FROM genq.jobs GROUP BY state ORDER BY state")
            .fetch_all(db)
            .await?,
    )
}

/// Failed jobs grouped by their error, most common first.
pub async fn failure_reasons(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT coalesce(last_error, 'no error recorded'), count(*) FROM genq.jobs
          WHERE state = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .fetch_all(pool)
    .await?)
}

/// Deletes up to `batch` finished jobs (and, by cascade, their attempts):
/// succeeded ones older than `succeeded_age`, failed and cancelled ones older
/// than `other_age`. Only one caller prunes at a time (a transaction-scoped
/// advisory lock); the others return `None` at once. Never touches a queued
/// or running job.
pub async fn prune(
    pool: &PgPool,
    succeeded_age: Duration,
    other_age: Duration,
    batch: i64,
) -> Result<Option<u64>, StoreError> {
    let mut tx = pool.begin().await?;
    let elected: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('genq.prune'))")
            .fetch_one(&mut *tx)
            .await?;
    if !elected {
        return Ok(None);
    }
    let done = sqlx::query(
        "WITH doomed AS (
            SELECT id FROM genq.jobs
             WHERE finished_at IS NOT NULL
               AND ((state = 'succeeded' AND finished_at < now() - make_interval(secs => $1))
                 OR (state IN ('failed', 'cancelled') AND finished_at < now() - make_interval(secs => $2)))
             ORDER BY finished_at
             LIMIT $3
               FOR UPDATE SKIP LOCKED)
         DELETE FROM genq.jobs j USING doomed d WHERE j.id = d.id",
    )
    .bind(succeeded_age.as_secs_f64())
    .bind(other_age.as_secs_f64())
    .bind(batch)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(done.rows_affected()))
}
