//! The worker's limit on image bytes in flight. Each job holds, while it
//! runs, the most memory its answer can take ([`Provider::footprint`]);
//! past the limit the next job waits before it calls the provider, and
//! while any job waits, the claim loop claims nothing more. A job larger
//! than the whole limit runs alone.
//!
//! [`Provider::footprint`]: crate::provider::Provider::footprint

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in KiB, so a permit count stays small.
const UNIT: u64 = 1024;

#[derive(Debug)]
pub(super) struct MemoryBudget {
    room: Arc<Semaphore>,
    units: u64,
    waiting: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit_bytes: u64) -> Self {
        let units = (limit_bytes / UNIT).max(1);
        MemoryBudget {
            room: Arc::new(Semaphore::new(units as usize)),
            units,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Holds `bytes` of the budget until the permit drops; waits for room.
    /// None when the job needs no image memory.
    pub async fn reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        if bytes == 0 {
            return None;
        }
        let units = bytes.div_ceil(UNIT).min(self.units) as u32;
        if let Ok(permit) = self.room.clone().try_acquire_many_owned(units) {
            return Some(permit);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = self.room.clone().acquire_many_owned(units).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        permit.ok()
    }

    /// Whether a job waits for room: then claiming more would only add waiters.
    pub fn claims_wait(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_limit_jobs_wait_and_claims_stop() {
        let budget = Arc::new(MemoryBudget::new(100 * UNIT));
        assert!(budget.reserve(0).await.is_none());
        let big = budget.reserve(70 * UNIT).await.unwrap();
        let small = budget.reserve(30 * UNIT).await.unwrap();
        assert!(!budget.claims_wait());

        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.reserve(50 * UNIT).await });
        while !budget.claims_wait() {
            tokio::task::yield_now().await;
        }
        drop(small);
        assert!(budget.claims_wait(), "30 units free, 50 needed");
        drop(big);
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.num_permits(), 50);
        assert!(!budget.claims_wait());

        // A job bigger than the whole limit runs alone, not never.
        drop(got);
        let huge = budget.reserve(1000 * UNIT).await.unwrap();
        assert_eq!(huge.num_permits(), 100);
    }
}
