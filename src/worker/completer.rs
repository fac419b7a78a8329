//! Writes job completions in batches: one round trip for everything that
//! finished since the last write.

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use super::wake::NextDue;
use crate::store::jobs::{self, Completion, Finish};

const MAX_BATCH: usize = 512;
/// Tries before a batch is abandoned (about a minute and a half of outage).
const GIVE_UP_AFTER: u32 = 20;

/// Drains `done` until every sender is dropped, then returns how many
/// completions it wrote. A write that fails is retried: the jobs' leases are
/// still heartbeated, so nothing is lost while the database is away.
pub(super) async fn run(
    pool: PgPool,
    worker: String,
    mut done: mpsc::UnboundedReceiver<(Completion, OwnedSemaphorePermit)>,
    slot_freed: Arc<Notify>,
    next_due: Arc<NextDue>,
) -> u64 {
    let mut written = 0u64;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while done.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let completions: Vec<Completion> = batch.iter().map(|(c, _)| c.clone()).collect();
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
                    written += applied.len() as u64;
                    // Wake up when the jobs this worker put back become due.
                    for c in &completions {
                        if let Finish::Requeue { run_at, .. } = &c.finish {
                            next_due.note(*run_at);
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
        batch.clear(); // frees the slots
        slot_freed.notify_one();
    }
    written
}
