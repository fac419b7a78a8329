//! The worker's background duties: LISTEN for new jobs, heartbeat leases,
//! reap jobs whose worker died, prune old finished jobs. Each runs until its token is cancelled and
//! survives database outages by retrying.

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::output::OutputStore;

use super::WorkerConfig;
use super::held::Held;
use crate::store::jobs;

/// The channel the jobs trigger notifies.
pub const CHANNEL: &str = "genq_jobs";
/// The channel the key triggers notify: a key may serve sooner than planned.
pub const KEYS_CHANNEL: &str = "genq_keys";

/// Wakes the claim loop on every notification of new jobs in its queues,
/// and on every key change (then it also forgets which models it found
/// without room). Reconnects after errors; the poll fallback covers
/// notifications sent while disconnected.
pub(super) async fn listen(
    pool: PgPool,
    cfg: Arc<WorkerConfig>,
    wake: Arc<Notify>,
    keys_changed: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed; polling meanwhile");
                if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if let Err(err) = listener.listen_all([CHANNEL, KEYS_CHANNEL]).await {
            tracing::warn!(error = %err, "LISTEN failed; polling meanwhile");
            if sleep_or_stop(&stop, Duration::from_secs(1)).await {
                return;
            }
            continue;
        }
        // A reconnect may have missed notifications: look once.
        keys_changed.store(true, Ordering::SeqCst);
        wake.notify_one();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(n)) if n.channel() == KEYS_CHANNEL => {
                        keys_changed.store(true, Ordering::SeqCst);
                        wake.notify_one();
                    }
                    Ok(Some(n)) => {
                        if cfg.queues.iter().any(|q| q == n.payload()) {
                            wake.notify_one();
                        }
                    }
                    // The connection dropped; try_recv reconnects on the next call.
                    Ok(None) => {
                        keys_changed.store(true, Ordering::SeqCst);
                        wake.notify_one();
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "LISTEN connection lost");
                        break;
                    }
                }
            }
        }
    }
}

/// Renews the leases of the jobs this worker holds, three times per lease.
/// Only what [`Held`] tracks is renewed: a row the worker no longer tracks
/// lapses and goes back to the queue within one lease.
pub(super) async fn heartbeat(
    pool: PgPool,
    cfg: Arc<WorkerConfig>,
    held: Arc<Held>,
    stop: CancellationToken,
) {
    let every = cfg.lease / 3;
    while !sleep_or_stop(&stop, every).await {
        let (ids, attempts) = held.snapshot();
        if let Err(err) = jobs::heartbeat(&pool, &cfg.id, &ids, &attempts, cfg.lease).await {
            tracing::warn!(error = %err, "heartbeat failed; leases expire if this persists");
        }
    }
}

/// Returns jobs with expired leases to the queue, and fails queued jobs
/// whose `expires_at` passed while they waited. Every worker does this;
/// SKIP LOCKED keeps them out of each other's way.
pub(super) async fn reap(pool: PgPool, cfg: Arc<WorkerConfig>, stop: CancellationToken) {
    while !sleep_or_stop(&stop, cfg.reap_interval).await {
        match jobs::reap(&pool, 1000).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                "reaped jobs whose worker stopped renewing its lease"
            ),
            Err(err) => tracing::warn!(error = %err, "reaping failed"),
        }
        match jobs::expire(&pool, 1000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "failed queued jobs whose expires_at passed"),
            Err(err) => tracing::warn!(error = %err, "expiring jobs failed"),
        }
    }
}

/// Deletes finished jobs past their retention, in small batches so no lock
/// is held for long, their images in `images`, and the uploads no job names. Every worker runs this;
/// an advisory lock lets one prune at a time.
pub(super) async fn prune(
    pool: PgPool,
    retention: super::Retention,
    images: Option<OutputStore>,
    stop: CancellationToken,
) {
    const BATCH: i64 = 1000;
    while !sleep_or_stop(&stop, retention.every).await {
        let mut pruned = 0;
        loop {
            match jobs::prune(&pool, retention.succeeded, retention.failed, BATCH).await {
                Ok(Some(ids)) => {
                    let n = ids.len();
                    pruned += n;
                    if let Some(images) = &images {
                        for id in ids {
                            if let Err(err) = images.remove_job(id).await {
                                tracing::warn!(error = %err, job_id = %id, "deleting a pruned job's images failed");
                            }
                        }
                    }
                    if (n as i64) < BATCH || stop.is_cancelled() {
                        break;
                    }
                }
                Ok(None) => break, // another worker is pruning
                Err(err) => {
                    tracing::warn!(error = %err, "pruning failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(jobs = pruned, "pruned finished jobs past their retention");
        }
        // Uploads go with the last job that named them (or, never named,
        // once as old as a succeeded job's retention).
        match crate::store::inputs::prune_uploads(&pool, retention.succeeded, BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "pruned uploads no job names"),
            Err(err) => tracing::warn!(error = %err, "pruning uploads failed"),
        }
    }
}

/// Sleeps for `d`; true if `stop` was cancelled first.
async fn sleep_or_stop(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
