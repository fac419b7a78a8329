//! The worker: claim → execute → complete, many jobs at once.
//!
//! - The claim loop never fetches more jobs than it has free slots; a slot is
//!   held from claim until the job's completion is written. For a
//!   rate-limited provider, `producer` also reserves a key's room before
//!   it claims, so jobs that would only wait stay untouched in line.
//! - It wakes on LISTEN/NOTIFY (new jobs, changed keys), on a freed slot, at
//!   the soonest moment a waiting model may have room, or on a poll tick
//!   (for missed notifications and future `run_at`s).
//! - `background` keeps leases alive, reaps jobs of dead workers, listens
//!   for notifications and prunes old finished jobs; `settle` turns a
//!   provider's verdict into a completion, and `completer` writes
//!   completions in batches (splitting a batch the database refuses).
//! - `held` is what the worker holds: the heartbeat renews exactly those
//!   jobs, so a row it no longer tracks lapses within one lease.
//! - `memory` bounds the image bytes its jobs hold at once; past it, jobs
//!   wait before calling and claims stop.
//! - Shutdown (the token): stop claiming, let in-flight jobs finish within the
//!   grace period, release the rest back to `queued`, return.

mod background;
mod completer;
mod held;
mod memory;
mod producer;
mod settle;
mod wake;

use futures::FutureExt;
use sqlx::PgPool;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::Job;
use crate::provider::{Execution, Outcome, Provider};
use crate::retry::Backoff;
use crate::store::jobs::{self, Completion, Finish};
use held::Hold;

/// How a worker runs. [`WorkerConfig::default`] suits production.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique per process; stored in `locked_by`.
    pub id: String,
    /// Queues to claim from.
    pub queues: Vec<String>,
    /// Jobs in flight at once.
    pub concurrency: usize,
    /// Most jobs claimed in one round trip.
    pub claim_batch: usize,
    /// How long a claim stays valid without a heartbeat.
    pub lease: Duration,
    /// Poll even without a notification this often.
    pub poll_interval: Duration,
    /// How often to look for jobs of dead workers.
    pub reap_interval: Duration,
    /// On shutdown, how long in-flight jobs may run before they are released.
    pub grace: Duration,
    /// Delays between real failures.
    pub backoff: Backoff,
    /// How long finished jobs are kept; None keeps them forever.
    pub retention: Option<Retention>,
    /// A job listing `fallback_models` runs on one of them when its own
    /// model's keys have no room for longer than this.
    pub fallback_after: Duration,
    /// Most image memory jobs may hold at once ([`Provider::footprint`]);
    /// past it, jobs wait before calling and claims wait.
    pub image_bytes_in_flight: u64,
    /// Where this worker's images are written: retention deletes a pruned
    /// job's images there with its row. `None` leaves files alone.
    pub images: Option<crate::output::OutputStore>,
    /// Delivers completion webhooks (`crate::webhook`); `None` leaves them
    /// to other workers.
    pub webhooks: Option<crate::webhook::WebhookConfig>,
}

/// How long finished jobs (and their attempts) are kept before pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub succeeded: Duration,
    /// Failed and cancelled jobs: kept longer, to see what went wrong.
    pub failed: Duration,
    /// How often to prune.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded: Duration::from_secs(7 * 24 * 3600),
            failed: Duration::from_secs(30 * 24 * 3600),
            every: Duration::from_secs(60),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: default_worker_id(),
            queues: vec![crate::job::DEFAULT_QUEUE.to_string()],
            concurrency: 16,
            claim_batch: 64,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            reap_interval: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            backoff: Backoff::DEFAULT,
            retention: Some(Retention::default()),
            fallback_after: Duration::from_secs(30),
            image_bytes_in_flight: 512 * 1024 * 1024,
            images: None,
            webhooks: None,
        }
    }
}

/// `host:pid:random`, unique enough to fence one process's claims.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &tag[..8])
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    pub claimed: u64,
    pub completed: u64,
    /// Jobs handed back to the queue at shutdown.
    pub released: u64,
}

/// A worker process's claim loop and its helpers.
pub struct Worker<P> {
    pool: PgPool,
    config: WorkerConfig,
    provider: Arc<P>,
}

impl<P: Provider> Worker<P> {
    pub fn new(pool: PgPool, config: WorkerConfig, provider: P) -> Self {
        Worker {
            pool,
            config,
            provider: Arc::new(provider),
        }
    }

    /// Runs until `shutdown` is cancelled, then drains and returns.
    pub async fn run(self, shutdown: CancellationToken) -> WorkerReport {
        let Worker {
            pool,
            config,
            provider,
        } = self;
        let cfg = Arc::new(config);
        let wake = Arc::new(Notify::new());
        let slot_freed = Arc::new(Notify::new());
        let next_due = Arc::new(wake::NextDue::default());
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let held = Arc::new(held::Held::default());
        let memory = Arc::new(memory::MemoryBudget::new(cfg.image_bytes_in_flight));
        let keys_changed = Arc::new(AtomicBool::new(false));
        let mut producer = producer::Producer::new(
            pool.clone(),
            cfg.clone(),
            provider.clone(),
            keys_changed.clone(),
        );
        // Background tasks outlive the claim loop: heartbeats must keep leases
        // alive until every job is completed or released.
        let background_stop = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(background::listen(
            pool.clone(),
            cfg.clone(),
            wake.clone(),
            keys_changed,
            background_stop.clone(),
        ));
        background.spawn(background::heartbeat(
            pool.clone(),
            cfg.clone(),
            held.clone(),
            background_stop.clone(),
        ));
        background.spawn(background::reap(
            pool.clone(),
            cfg.clone(),
            background_stop.clone(),
        ));
        if let Some(retention) = cfg.retention {
            background.spawn(background::prune(
                pool.clone(),
                retention,
                cfg.images.clone(),
                background_stop.clone(),
            ));
        }
        if let Some(webhooks) = cfg.webhooks.clone() {
            background.spawn(crate::webhook::deliver::run(
                pool.clone(),
                webhooks,
                background_stop.clone(),
            ));
        }
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let completer = tokio::spawn(completer::run(
            pool.clone(),
            cfg.id.clone(),
            done_rx,
            slot_freed.clone(),
            next_due.clone(),
        ));

        tracing::info!(worker = %cfg.id, concurrency = cfg.concurrency, queues = ?cfg.queues, "worker started");
        let mut report = WorkerReport::default();
        let mut tasks = JoinSet::new();
        let mut db_backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            // Jobs waiting for image memory: claiming more would only add waiters.
            let want = if memory.claims_wait() {
                0
            } else {
                slots.available_permits().min(cfg.claim_batch)
            };
            let mut more = false;
            if want > 0 {
                match producer.claim(want).await {
                    Ok(round) => {
                        db_backoff = Duration::from_millis(100);
                        more = round.more;
                        if let Some(at) = round.retry_at {
                            next_due.note(at);
                        }
                        report.claimed += round.jobs.len() as u64;
                        for job in round.jobs {
                            let slot = slots
                                .clone()
                                .try_acquire_owned()
                                .expect("claimed only free slots");
                            let hold = held.hold(job.id, job.attempts, slot);
                            tasks.spawn(execute(
                                provider.clone(),
                                memory.clone(),
                                cfg.backoff,
                                job,
                                hold,
                                done_tx.clone(),
                            ));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, retry_in = ?db_backoff, "claim failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(db_backoff) => {}
                        }
                        db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let queue_may_have_more = want > 0 && more;
            if queue_may_have_more && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = slot_freed.notified(), if queue_may_have_more || want == 0 => {}
                _ = tokio::time::sleep_until(next_due.deadline(cfg.poll_interval)) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }

        tracing::info!(worker = %cfg.id, in_flight = tasks.len(), grace = ?cfg.grace, "shutting down: no new claims");
        let grace = tokio::time::sleep(cfg.grace);
        tokio::pin!(grace);
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = &mut grace => break,
            }
        }
        let unfinished = tasks.len();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        drop(done_tx);
        report.completed = completer.await.unwrap_or_default();
        // Completed jobs are written; what this worker still holds is unfinished.
        report.released = release_with_retry(&pool, &cfg.id).await;
        if unfinished > 0 || report.released > 0 {
            tracing::warn!(worker = %cfg.id, released = report.released, "grace period over: unfinished jobs returned to the queue");
        }
        background_stop.cancel();
        while background.join_next().await.is_some() {}
        tracing::info!(worker = %cfg.id, claimed = report.claimed, completed = report.completed, released = report.released, "worker stopped");
        report
    }
}

/// Releases this worker's jobs, retrying while the database is unreachable
/// (for a while: if it never comes back, the reaper returns them later).
async fn release_with_retry(pool: &PgPool, worker: &str) -> u64 {
    for attempt in 1..=5 {
        match jobs::release_all(pool, worker).await {
            Ok(n) => return n,
            Err(err) => {
                tracing::warn!(error = %err, attempt, "release failed");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
    0
}

/// Runs one job and hands its completion to the completer. The hold
/// travels with the completion: the lease is renewed, and the slot taken,
/// until the completion is written or given up.
async fn execute<P: Provider>(
    provider: Arc<P>,
    memory: Arc<memory::MemoryBudget>,
    backoff: Backoff,
    job: Job,
    hold: Hold,
    done: mpsc::UnboundedSender<(Completion, Hold)>,
) {
    let span =
        tracing::info_span!("job", job_id = %job.id, model = %job.model, attempt = job.attempts);
    let completion = async {
        let _memory = memory.reserve(provider.footprint(&job)).await;
        run_one(provider.as_ref(), &job, backoff).await
    }
    .instrument(span)
    .await;
    // The completer only stops after every sender is gone, so this cannot fail.
    let _ = done.send((completion, hold));
}

async fn run_one<P: Provider>(provider: &P, job: &Job, backoff: Backoff) -> Completion {
    if let Some(claimed) = job.started_at {
        crate::metrics::job_claimed((claimed - job.run_at).as_seconds_f64());
    }
    // A job past its expires_at is never claimed (the claim checks it by the
    // database's clock), and the expiry sweep fails it.
    let execution = match AssertUnwindSafe(provider.execute(job)).catch_unwind().await {
        Ok(execution) => execution,
        Err(_) => Execution::without_call(Outcome::Retry {
            error: "the provider panicked while running this job".into(),
        }),
    };
    let completion = settle::settle(job, execution, backoff, &mut rand::rng());
    tracing::debug!(finish = ?completion.finish, "job executed");
    let since_created = || Some((chrono::Utc::now() - job.created_at).as_seconds_f64());
    match &completion.finish {
        Finish::Succeeded { .. } => crate::metrics::job_finished("succeeded", since_created()),
        Finish::Failed { .. } => crate::metrics::job_finished("failed", since_created()),
        Finish::Requeue { .. } if completion.refund => {
            crate::metrics::job_finished("rescheduled", None)
        }
        Finish::Requeue { .. } => crate::metrics::job_finished("retry", None),
    }
    completion
}
