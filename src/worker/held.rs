//! The jobs this worker holds, as it knows them: the heartbeat renews
//! exactly these and nothing else.
//!
//! A row can carry the worker's id in `locked_by` without the worker
//! holding it: a claim whose reply was lost, a completion that could not be
//! written, a task that panicked. Renewing by `locked_by` would keep such a
//! row `running` for as long as the worker lives; renewing only what is
//! tracked here lets its lease lapse, so the reaper returns it to the queue
//! within one lease.
//!
//! A [`Hold`] is taken when a claim returns and travels with the job and its
//! completion; dropping it (completion written or given up, task aborted or
//! panicked) stops the renewals and frees the worker's slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

/// Every job the worker holds, with the attempt it holds it for.
#[derive(Debug, Default)]
pub(super) struct Held(Mutex<HashMap<Uuid, i32>>);

impl Held {
    /// Starts tracking `job_id` at `attempt`, for as long as the returned
    /// [`Hold`] lives. The hold also keeps the worker's slot taken.
    pub fn hold(self: &Arc<Self>, job_id: Uuid, attempt: i32, slot: OwnedSemaphorePermit) -> Hold {
        self.lock().insert(job_id, attempt);
        Hold {
            held: self.clone(),
            job_id,
            _slot: slot,
        }
    }

    /// The jobs to renew, as `(ids, attempts)` for the heartbeat.
    pub fn snapshot(&self) -> (Vec<Uuid>, Vec<i32>) {
        self.lock()
            .iter()
            .map(|(id, attempt)| (*id, *attempt))
            .unzip()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, i32>> {
        // A panic while holding this lock cannot leave the map half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The worker's hold on one claimed job. Dropping it ends the hold.
#[derive(Debug)]
pub(super) struct Hold {
    held: Arc<Held>,
    job_id: Uuid,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.held.lock().remove(&self.job_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[test]
    fn a_dropped_hold_is_no_longer_renewed_and_frees_its_slot() {
        let held = Arc::new(Held::default());
        let slots = Arc::new(Semaphore::new(2));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let hold_a = held.hold(a, 1, slots.clone().try_acquire_owned().unwrap());
        let hold_b = held.hold(b, 3, slots.clone().try_acquire_owned().unwrap());
        let (mut ids, _) = held.snapshot();
        ids.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(slots.available_permits(), 0);

        drop(hold_a);
        assert_eq!(held.snapshot(), (vec![b], vec![3]));
        assert_eq!(slots.available_permits(), 1);

        // A task that panics drops its hold while unwinding.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _hold = hold_b;
            panic!("the job's task panicked");
        }));
        assert!(unwound.is_err());
        assert_eq!(held.snapshot(), (vec![], vec![]));
        assert_eq!(slots.available_permits(), 2);
    }
}
