//! Writes job completions in batches: one round trip for everything that
//! finished since the last write, two writes in flight at most.

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::held::Hold;
use super::wake::NextDue;
use crate::provider::Call;
use crate::store::StoreError;
use crate::store::jobs::{self, Completion, Finish};

/// Most completions in one statement.
const MAX_BATCH: usize = 256;
/// Statements in flight at once: while one batch is written the next one
/// is, too, so claims and completions keep both sides of the wire busy.
const IN_FLIGHT: usize = 2;
/// Tries before a batch is abandoned (about a minute and a half of outage).
const GIVE_UP_AFTER: u32 = 20;

type Done = (Completion, Hold);

/// Drains `done` until every sender is dropped, then returns how many
/// completions it wrote. A write that fails is retried: the jobs' leases are
/// still heartbeated, so nothing is lost while the database is away.
pub(super) async fn run(
    pool: PgPool,
    worker: String,
    mut done: mpsc::UnboundedReceiver<Done>,
    slot_freed: Arc<Notify>,
    next_due: Arc<NextDue>,
) -> u64 {
    let mut written = 0u64;
    let mut writes = JoinSet::new();
    loop {
        if writes.len() >= IN_FLIGHT {
            written += writes.join_next().await.map_or(0, |w| w.unwrap_or(0));
            continue;
        }
        let mut batch = Vec::with_capacity(MAX_BATCH);
        tokio::select! {
            received = done.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    break;
                }
                writes.spawn(write(
                    pool.clone(),
                    worker.clone(),
                    batch,
                    slot_freed.clone(),
                    next_due.clone(),
                ));
            }
            Some(w) = writes.join_next(), if !writes.is_empty() => written += w.unwrap_or(0),
        }
    }
    while let Some(w) = writes.join_next().await {
        written += w.unwrap_or(0);
    }
    written
}

/// Writes one batch and then ends the worker's hold on its jobs (their
/// leases stop being renewed, their slots free). Returns how many
/// completions applied.
async fn write(
    pool: PgPool,
    worker: String,
    batch: Vec<Done>,
    slot_freed: Arc<Notify>,
    next_due: Arc<NextDue>,
) -> u64 {
    let (completions, holds): (Vec<Completion>, Vec<Hold>) = batch.into_iter().unzip();
    let requeued: Vec<Duration> = completions
        .iter()
        .filter_map(|c| match &c.finish {
            Finish::Requeue { delay, .. } => Some(delay.unwrap_or_default()),
            _ => None,
        })
        .collect();
    let written = store(&pool, &worker, completions).await;
    // Wake up when the jobs this worker put back become due.
    for delay in requeued {
        next_due.note(tokio::time::Instant::now() + delay);
    }
    // A job whose completion was not written is no longer renewed either:
    // its lease lapses and the reaper returns it (re-run, not lost).
    drop(holds);
    slot_freed.notify_one();
    written
}

/// Writes `batch`, retrying while the database is away. A batch the
/// database refuses (one row it cannot store fails them all) is split in
/// halves until the refused row stands alone; that job is then failed with
/// a message saying why, rather than left running. Returns how many
/// completions applied.
async fn store(pool: &PgPool, worker: &str, batch: Vec<Completion>) -> u64 {
    let mut written = 0;
    let mut pending = vec![batch];
    while let Some(part) = pending.pop() {
        match write_with_retry(pool, worker, &part).await {
            Ok(applied) => written += applied,
            Err(err) if part.len() > 1 => {
                tracing::warn!(error = %err, jobs = part.len(), "the database refused a completion batch; splitting it");
                let mut part = part;
                let second = part.split_off(part.len() / 2);
                pending.push(second);
                pending.push(part);
            }
            Err(err) => {
                let failed = unstorable(&part[0], &err);
                tracing::error!(job_id = %failed.job_id, error = %err, "the database refused a job's completion; failing the job");
                match write_with_retry(pool, worker, std::slice::from_ref(&failed)).await {
                    Ok(applied) => written += applied,
                    Err(err) => {
                        tracing::error!(job_id = %failed.job_id, error = %err, "could not fail the job either; its lease lapses and it runs again");
                    }
                }
            }
        }
    }
    written
}

/// What to write instead of a completion the database refused: the job
/// fails, saying so, and the attempt keeps what is known of its call.
fn unstorable(refused: &Completion, err: &StoreError) -> Completion {
    let why = format!(
        "genq could not store this attempt's outcome ({err}); the job is failed rather than left running"
    );
    Completion {
        finish: Finish::Failed { error: why.clone() },
        refund: false,
        call: refused.call.clone().map(|call| Call {
            error: Some(why),
            ..call
        }),
        ..refused.clone()
    }
}

/// Writes one batch, retrying transient failures (database away,
/// restarting) with backoff. Err when the database refuses the statement,
/// or after [`GIVE_UP_AFTER`] tries.
async fn write_with_retry(
    pool: &PgPool,
    worker: &str,
    batch: &[Completion],
) -> Result<u64, StoreError> {
    let mut delay = Duration::from_millis(50);
    for attempt in 1.. {
        match jobs::complete(pool, worker, batch).await {
            Ok(applied) => {
                if applied.len() < batch.len() {
                    tracing::warn!(
                        lost = batch.len() - applied.len(),
                        "lease lost before completion: those jobs were reclaimed and will run again"
                    );
                }
                return Ok(applied.len() as u64);
            }
            Err(err) if !err.is_transient() => return Err(err),
            Err(err) if attempt >= GIVE_UP_AFTER => {
                // Their leases lapse and the reaper re-queues them: re-run, not lost.
                tracing::error!(error = %err, jobs = batch.len(), "giving up on writing completions");
                return Ok(0);
            }
            Err(err) => {
                tracing::warn!(error = %err, jobs = batch.len(), retry_in = ?delay, "writing completions failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    unreachable!("the loop returns")
}
