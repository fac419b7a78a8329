//! Turns a provider's verdict on a claimed job into the write that ends the
//! worker's hold on it. Pure: the job as claimed, the execution and the dice
//! go in; a [`Completion`] comes out.
//!
//! The worker decides here, not in SQL, whether a failure gives up: the
//! claimed row already holds `attempts` and `max_attempts`, and the
//! completion is fenced on `attempts`, so the row cannot have moved on in
//! between. A job that waits past `expires_at` is failed by the expiry sweep
//! (`store::jobs::expire`), by the database's clock.

use rand::Rng;

use crate::job::Job;
use crate::provider::{Execution, Outcome};
use crate::retry::Backoff;
use crate::store::jobs::{Completion, Finish};

/// What to write for `job` after `execution`. Delays are relative: the
/// database adds them to its own `now()`.
pub(super) fn settle(
    job: &Job,
    execution: Execution,
    backoff: Backoff,
    rng: &mut impl Rng,
) -> Completion {
    let mut refund = false;
    let finish = match execution.outcome {
        Outcome::Succeeded { result } => Finish::Succeeded { result },
        Outcome::Failed { error } => Finish::Failed { error },
        Outcome::Retry { error } if job.attempts >= job.max_attempts => Finish::Failed {
            error: format!("gave up after {} attempts: {error}", job.attempts),
        },
        Outcome::Retry { error } => Finish::Requeue {
            error,
            delay: Some(backoff.delay(job.attempts.max(1) as u32, rng)),
        },
        Outcome::Reschedule { reason } => {
            // Back in line where it was; the expiry sweep fails it if its
            // deadline passes while it waits.
            refund = true;
            Finish::Requeue {
                error: reason,
                delay: None,
            }
        }
    };
    let call = execution.call;
    Completion {
        job_id: job.id,
        attempt: job.attempts,
        finish,
        refund,
        call,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{AttemptOutcome, JobState};
    use crate::provider::Call;
    use chrono::{DateTime, Utc};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use serde_json::json;
    use std::time::Duration;

    fn claimed(attempts: i32, max_attempts: i32, expires_at: Option<DateTime<Utc>>) -> Job {
        let now = Utc::now();
        Job {
            id: uuid::Uuid::new_v4(),
            queue: "default".into(),
            model: "gpt-image-2".into(),
            prompt: "a fox".into(),
            params: json!({}),
            priority: 0,
            state: JobState::Running,
            operation: crate::job::Operation::Generate,
            awaiting_input: false,
            callback_url: None,
            run_at: now,
            attempts,
            max_attempts,
            idempotency_key: None,
            result: None,
            last_error: None,
            locked_by: Some("w".into()),
            lease_expires_at: Some(now),
            expires_at,
            created_at: now,
            updated_at: now,
            started_at: Some(now),
            finished_at: None,
            seq: 1,
        }
    }

    fn run(job: &Job, outcome: Outcome) -> Completion {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
        };
        settle(
            job,
            Execution::without_call(outcome),
            backoff,
            &mut StdRng::seed_from_u64(7),
        )
    }

    #[test]
    fn a_failure_with_attempts_left_is_retried_after_backoff() {
        let job = claimed(2, 5, None);
        let done = run(
            &job,
            Outcome::Retry {
                error: "HTTP 503".into(),
            },
        );
        let Finish::Requeue { error, delay } = done.finish else {
            panic!("not requeued: {:?}", done.finish)
        };
        assert_eq!(error, "HTTP 503");
        // Attempt 2: base 2 s · 2 = 4 s, equal jitter: between 2 s and 4 s.
        let wait = delay.expect("a retry backs off");
        assert!(
            wait >= Duration::from_secs(2) && wait <= Duration::from_secs(4),
            "{wait:?}"
        );
        assert!(!done.refund);
        assert_eq!((done.job_id, done.attempt), (job.id, 2));
    }

    #[test]
    fn the_last_failure_gives_up_and_says_so() {
        let job = claimed(4, 4, None);
        let done = run(
            &job,
            Outcome::Retry {
                error: "HTTP 503".into(),
            },
        );
        assert_eq!(
            done.finish,
            Finish::Failed {
                error: "gave up after 4 attempts: HTTP 503".into()
            }
        );
        assert!(!done.refund);
    }

    #[test]
    fn a_reschedule_keeps_the_place_and_gives_the_attempt_back_even_on_the_last_one() {
        let job = claimed(4, 4, Some(Utc::now()));
        let done = run(
            &job,
            Outcome::Reschedule {
                reason: "HTTP 429: key a cools".into(),
            },
        );
        assert_eq!(
            done.finish,
            Finish::Requeue {
                error: "HTTP 429: key a cools".into(),
                delay: None
            }
        );
        assert!(done.refund);
    }

    #[test]
    fn success_and_fatal_failure_pass_through_with_their_call() {
        let now = Utc::now();
        let job = claimed(1, 5, None);
        let execution = Execution {
            outcome: Outcome::Succeeded {
                result: json!({"images": 1}),
            },
            call: Some(Call {
                outcome: AttemptOutcome::Succeeded,
                key_id: Some("key-1".into()),
                http_status: Some(200),
                error: None,
                retry_after: Some(Duration::from_millis(1500)),
                started_at: now,
                cost: None,
            }),
        };
        let done = settle(&job, execution, Backoff::DEFAULT, &mut rand::rng());
        assert_eq!(
            done.finish,
            Finish::Succeeded {
                result: json!({"images": 1})
            }
        );
        let call = done.call.unwrap();
        assert_eq!(
            (call.http_status, call.retry_after, call.key_id.as_deref()),
            (Some(200), Some(Duration::from_millis(1500)), Some("key-1"))
        );

        let done = run(
            &job,
            Outcome::Failed {
                error: "content policy".into(),
            },
        );
        assert_eq!(
            done.finish,
            Finish::Failed {
                error: "content policy".into()
            }
        );
    }
}
