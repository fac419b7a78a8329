//! Writes job completions in batches: one round trip for everything that
//! finished since the last write, two writes in flight at most.

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;

use super::wake::NextDue;
use crate::store::jobs::{self, Completion, Finish};

/// Most completions in one statement.
const MAX_BATCH: usize = 256;
/// Statements in flight at once: while one batch is written the next one
/// is, too, so claims and completions keep both sides of the wire busy.
const IN_FLIGHT: usize = 2;
/// Tries before a batch is abandoned (about a minute and a half of outage).
const GIVE_UP_AFTER: u32 = 20;

type Done = (Completion, OwnedSemaphorePermit);

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

/// Writes one batch, retrying while the database is away; frees the
/// batch's slots when done. Returns how many completions applied.
async fn write(
    pool: PgPool,
    worker: String,
    batch: Vec<Done>,
    slot_freed: Arc<Notify>,
    next_due: Arc<NextDue>,
) -> u64 {
    let (completions, permits): (Vec<Completion>, Vec<OwnedSemaphorePermit>) =
        batch.into_iter().unzip();
    let mut written = 0;
    let mut delay = Duration::from_millis(50);
    for attempt in 1.. {
        match jobs::complete(&pool, &worker, &completions).await {
            Ok(applied) => {
                if applied.len() < completions.len() {
                    tracing::warn!(
                        lost = completions.len() - applied.len(),
                        "lease lost before completion: those jobs were reclaimed and will run again"
                    );
                }
                written = applied.len() as u64;
                // Wake up when the jobs this worker put back become due.
                for c in &completions {
                    if let Finish::Requeue { delay, .. } = &c.finish {
                        next_due.note(tokio::time::Instant::now() + delay.unwrap_or_default());
                    }
                }
                break;
            }
            Err(err) if attempt >= GIVE_UP_AFTER => {
                // Their leases lapse and the reaper re-queues them: re-run, not lost.
                tracing::error!(error = %err, jobs = completions.len(), "giving up on writing completions");
                break;
            }
            Err(err) => {
                tracing::warn!(error = %err, jobs = completions.len(), retry_in = ?delay, "writing completions failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    drop(permits); // frees the slots
    slot_freed.notify_one();
    written
}
