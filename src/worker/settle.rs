//! Turns a provider's verdict on a claimed job into the write that ends the
//! worker's hold on it. Pure: the job as claimed, the execution, the clock
//! and the dice go in; a [`Completion`] comes out.
//!
//! The worker decides here, not in SQL, whether a failure gives up and
//! whether a wait passes `expires_at`: the claimed row already holds
//! `attempts`, `max_attempts` and `expires_at`, and the completion is fenced
//! on `attempts`, so the row cannot have moved on in between.

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::job::Job;
use crate::provider::{Execution, Outcome};
use crate::retry::Backoff;
use crate::store::jobs::{CallRecord, Completion, Finish};

/// What to write for `job` after `execution`, decided at `now`.
pub(super) fn settle(
    job: &Job,
    execution: Execution,
    backoff: Backoff,
    now: DateTime<Utc>,
    rng: &mut impl Rng,
) -> Completion {
    let mut refund = false;
    let finish = match execution.outcome {
        Outcome::Succeeded { result } => Finish::Succeeded { result },
        Outcome::Failed { error } => Finish::Failed { error },
        Outcome::Retry { error } if job.attempts >= job.max_attempts => Finish::Failed {
            error: format!("gave up after {} attempts: {error}", job.attempts),
        },
        Outcome::Retry { error } => {
            let delay = backoff.delay(job.attempts.max(1) as u32, rng);
            let run_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            Finish::Requeue { error, run_at }
        }
        Outcome::Reschedule { reason, run_at } => {
            refund = true;
            match job.expires_at {
                Some(expires) if run_at > expires => Finish::Failed {
                    error: format!("expired at {expires} while waiting: {reason}"),
                },
                _ => Finish::Requeue {
                    error: reason,
                    run_at,
                },
            }
        }
    };
    let call = execution.call.map(|c| CallRecord {
        outcome: c.outcome,
        key_id: c.key_id,
        http_status: c.http_status.map(i32::from),
        error: c.error,
        retry_after_ms: c
            .retry_after
            .map(|d| d.as_millis().min(i64::MAX as u128) as i64),
        started_at: c.started_at,
    });
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
    use crate::job::JobState;
    use crate::provider::Call;
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
        }
    }

    fn run(job: &Job, outcome: Outcome, now: DateTime<Utc>) -> Completion {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(600),
        };
        settle(
            job,
            Execution::without_call(outcome),
            backoff,
            now,
            &mut StdRng::seed_from_u64(7),
        )
    }

    #[test]
    fn a_failure_with_attempts_left_is_retried_after_backoff() {
        let now = Utc::now();
        let job = claimed(2, 5, None);
        let done = run(
            &job,
            Outcome::Retry {
                error: "HTTP 503".into(),
            },
            now,
        );
        let Finish::Requeue { error, run_at } = done.finish else {
            panic!("not requeued: {:?}", done.finish)
        };
        assert_eq!(error, "HTTP 503");
        // Attempt 2: base 2 s · 2 = 4 s, equal jitter: between 2 s and 4 s.
        let wait = (run_at - now).to_std().unwrap();
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
            Utc::now(),
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
    fn a_reschedule_gives_the_attempt_back_even_on_the_last_one() {
        let now = Utc::now();
        let job = claimed(4, 4, None);
        let run_at = now + chrono::Duration::seconds(30);
        let done = run(
            &job,
            Outcome::Reschedule {
                reason: "all keys cooling down".into(),
                run_at,
            },
            now,
        );
        assert_eq!(
            done.finish,
            Finish::Requeue {
                error: "all keys cooling down".into(),
                run_at
            }
        );
        assert!(done.refund);
    }

    #[test]
    fn a_wait_past_expiry_fails_the_job_without_spending_an_attempt() {
        let now = Utc::now();
        let expires = now + chrono::Duration::seconds(10);
        let job = claimed(1, 5, Some(expires));
        let done = run(
            &job,
            Outcome::Reschedule {
                reason: "waiting for capacity".into(),
                run_at: now + chrono::Duration::seconds(11),
            },
            now,
        );
        assert_eq!(
            done.finish,
            Finish::Failed {
                error: format!("expired at {expires} while waiting: waiting for capacity")
            }
        );
        assert!(done.refund);

        // A wait that ends exactly at expiry still runs.
        let done = run(
            &job,
            Outcome::Reschedule {
                reason: "waiting".into(),
                run_at: expires,
            },
            now,
        );
        assert!(matches!(done.finish, Finish::Requeue { .. }));
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
                outcome: "succeeded",
                key_id: Some("key-1".into()),
                http_status: Some(200),
                error: None,
                retry_after: Some(Duration::from_millis(1500)),
                started_at: now,
            }),
        };
        let done = settle(&job, execution, Backoff::DEFAULT, now, &mut rand::rng());
        assert_eq!(
            done.finish,
            Finish::Succeeded {
                result: json!({"images": 1})
            }
        );
        let call = done.call.unwrap();
        assert_eq!(
            (
                call.http_status,
                call.retry_after_ms,
                call.key_id.as_deref()
            ),
            (Some(200), Some(1500), Some("key-1"))
        );

        let done = run(
            &job,
            Outcome::Failed {
                error: "content policy".into(),
            },
            now,
        );
        assert_eq!(
            done.finish,
            Finish::Failed {
                error: "content policy".into()
            }
        );
    }
}
