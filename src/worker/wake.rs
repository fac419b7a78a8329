//! When the claim loop should look again without a notification: the
//! earliest `run_at` this worker gave a job it put back (NOTIFY only fires
//! for jobs due now) or the soonest moment a waiting model's keys have room,
//! else the poll interval.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The earliest due time of a job this worker rescheduled.
#[derive(Debug, Default)]
pub(super) struct NextDue(Mutex<Option<Instant>>);

impl NextDue {
    /// Remembers that something may be claimable at `at`: a job put back
    /// becomes due, or a waiting model's keys have room again.
    pub fn note(&self, at: Instant) {
        let mut next = self.0.lock().expect("next-due lock");
        if next.is_none_or(|n| at < n) {
            *next = Some(at);
        }
    }

    /// When to look again: the earliest noted due time or `poll` from now,
    /// whichever comes first. A due time that has passed is returned once
    /// (as "now") and then forgotten.
    pub fn deadline(&self, poll: Duration) -> Instant {
        let now = Instant::now();
        let mut next = self.0.lock().expect("next-due lock");
        let poll_at = now + poll;
        match *next {
            Some(due) if due <= now => {
                *next = None;
                now
            }
            Some(due) if due < poll_at => due,
            _ => poll_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_earliest_due_time_wins_and_is_used_once() {
        let next = NextDue::default();
        let poll = Duration::from_secs(10);
        let now = Instant::now();
        assert!(next.deadline(poll) >= now + poll);
        next.note(Instant::now() + Duration::from_secs(3));
        next.note(Instant::now() + Duration::from_secs(1));
        next.note(Instant::now() + Duration::from_secs(2));
        let d = next.deadline(poll);
        assert!(
            d <= Instant::now() + Duration::from_millis(1100)
                && d >= now + Duration::from_millis(900)
        );
        assert_eq!(next.deadline(poll), d, "kept until it passes");
        next.note(Instant::now() - Duration::from_secs(1));
        assert!(next.deadline(poll) <= Instant::now());
        assert!(
            next.deadline(poll) >= Instant::now() + poll - Duration::from_millis(50),
            "a passed time is used once"
        );
    }
}
