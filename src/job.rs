//! A job as producers describe it ([`NewJob`]) and as the queue holds it ([`Job`]).
//!
//! What a producer may submit is checked in `crate::validation`.

use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use crate::input::InputRef;

pub use crate::provider::catalog::DEFAULT_MODEL;
/// The queue used when a producer names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Real failures a job may have before it is failed for good.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
/// Priorities run from 0 (the default, lowest) to this; higher runs first.
pub const MAX_PRIORITY: i32 = 1000;
/// Upper bound on `max_attempts`.
pub const MAX_MAX_ATTEMPTS: i32 = 100;

/// Where a job is in its life. Stored as text (the table CHECKs the same
/// set); a `sqlx::Type` through `as_str` and `FromStr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Final states never change again (except by an explicit retry).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::str::FromStr for JobState {
    type Err = InvalidJob;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                InvalidJob(format!(
                    "unknown state {s:?}; use one of queued, running, succeeded, failed, cancelled"
                ))
            })
    }
}

crate::store::text_enum!(JobState);

/// What a job asks of the Images API. Stored as text (the table CHECKs the
/// same set); `generate` is the column's default, so plain SQL inserts and
/// rows from before edits existed are generations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `POST /images/generations`: images from a prompt.
    #[default]
    Generate,
    /// `POST /images/edits`: the job's input images (and mask) changed as
    /// the prompt says.
    Edit,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Generate => "generate",
            Operation::Edit => "edit",
        }
    }
}

impl std::str::FromStr for Operation {
    type Err = InvalidJob;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "generate" => Ok(Operation::Generate),
            "edit" => Ok(Operation::Edit),
            _ => Err(InvalidJob(format!(
                "unknown operation {s:?}; use \"generate\" or \"edit\""
            ))),
        }
    }
}

crate::store::text_enum!(Operation);

/// What one execution of a job came to, as `genq.attempts.outcome` records
/// it. Stored as text (the table CHECKs the same set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The provider answered with images, and they were stored.
    Succeeded,
    /// The job failed for good (the provider refused it, or attempts ran out).
    Failed,
    /// A real failure that spends an attempt; the job runs again after a backoff.
    Retry,
    /// A 429: the key cools down and the job goes back in line, no attempt spent.
    RateLimited,
    /// The key was refused (quota, 401, 403) and disabled; the job goes back in line.
    KeyRejected,
    /// The worker's lease lapsed (it died or stalled); the reaper took the job back.
    Lost,
    /// The worker shut down before the job finished and gave it back.
    Released,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 7] = [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Failed,
        AttemptOutcome::Retry,
        AttemptOutcome::RateLimited,
        AttemptOutcome::KeyRejected,
        AttemptOutcome::Lost,
        AttemptOutcome::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::KeyRejected => "key_rejected",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::Released => "released",
        }
    }
}

impl std::str::FromStr for AttemptOutcome {
    type Err = InvalidJob;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == s)
            .ok_or_else(|| InvalidJob(format!("unknown attempt outcome {s:?}")))
    }
}

crate::store::text_enum!(AttemptOutcome);

/// Input refused before anything is written. The text says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidJob(pub String);

/// A job as a producer submits it. Everything but the prompt has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub max_attempts: Option<i32>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// `generate` or `edit`; omitted, an edit when `inputs` are given.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// An edit's input images, in order (at most 16).
    #[serde(default)]
    pub inputs: Vec<InputRef>,
    /// An edit's mask: where it is transparent, the first image is changed.
    #[serde(default)]
    pub mask: Option<InputRef>,
    /// Where to POST the job's JSON when it ends (else its queue's
    /// `GENQ_WEBHOOK_URL`).
    #[serde(default)]
    pub callback_url: Option<String>,
}

impl NewJob {
    pub fn new(prompt: impl Into<String>) -> Self {
        NewJob {
            prompt: prompt.into(),
            ..NewJob::default()
        }
    }

    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or(DEFAULT_MODEL)
    }

    pub fn queue(&self) -> &str {
        self.queue.as_deref().unwrap_or(DEFAULT_QUEUE)
    }

    /// The operation given, else an edit when inputs are given, else a generation.
    pub fn operation(&self) -> Operation {
        self.operation
            .unwrap_or(if self.inputs.is_empty() && self.mask.is_none() {
                Operation::Generate
            } else {
                Operation::Edit
            })
    }
}

/// `t` as PostgreSQL keeps it (microseconds).
fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or(t)
}

impl NewJob {
    /// The fields in which `existing` is not the job this request describes,
    /// for a repeated idempotency key: empty when it is the same job.
    /// Omitted fields mean their defaults (queue `default`, model
    /// `gpt-image-2`, params `{}`, priority 0, max_attempts 5, no
    /// expires_at), except `run_at`: compared only when given, and only
    /// before the job's first attempt (retries move it).
    pub fn differences(&self, existing: &Job) -> Vec<&'static str> {
        let mut differs = Vec::new();
        let empty = Value::Object(Default::default());
        let rows: [(&'static str, bool); 10] = [
            ("callback_url", self.callback_url == existing.callback_url),
            ("operation", self.operation() == existing.operation),
            ("queue", self.queue() == existing.queue),
            ("model", self.model() == existing.model),
            ("prompt", self.prompt == existing.prompt),
            (
                "params",
                *self.params.as_ref().unwrap_or(&empty) == existing.params,
            ),
            ("priority", self.priority.unwrap_or(0) == existing.priority),
            (
                "max_attempts",
                self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS) == existing.max_attempts,
            ),
            (
                "run_at",
                match self.run_at {
                    Some(run_at) if existing.attempts == 0 => stored(run_at) == existing.run_at,
                    _ => true,
                },
            ),
            (
                "expires_at",
                self.expires_at.map(stored) == existing.expires_at,
            ),
        ];
        for (field, same) in rows {
            if !same {
                differs.push(field);
            }
        }
        differs
    }
}

/// A job row as the queue holds it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub queue: String,
    pub model: String,
    pub prompt: String,
    pub params: Value,
    pub priority: i32,
    pub state: JobState,
    pub operation: Operation,
    /// Queued but not claimable until its input jobs have succeeded.
    pub awaiting_input: bool,
    /// Where its completion webhook goes (else its queue's default).
    pub callback_url: Option<String>,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub locked_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Enqueue order: the last tie-break of a job's place in line.
    pub seq: i64,
}

impl Job {
    /// The images its result records (`result.images`): none until it has
    /// succeeded.
    pub fn images(&self) -> &[Value] {
        self.result
            .as_ref()
            .and_then(|r| r.get("images"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// One execution of a job, as recorded in `genq.attempts`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Attempt {
    pub id: i64,
    pub job_id: Uuid,
    pub attempt: i32,
    pub worker: Option<String>,
    pub key_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub retry_after_ms: Option<i64>,
    /// What the provider billed for it (`None`: nothing, or no price known).
    pub cost_usd: Option<crate::cost::Usd>,
    pub cost_source: Option<crate::cost::CostSource>,
    pub input_tokens: Option<i32>,
    pub output_tokens: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_unknown() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        let err = "done".parse::<JobState>().unwrap_err();
        assert!(err.0.contains("unknown state \"done\""), "{err}");
        assert!(err.0.contains("queued, running"), "{err}");
    }

    fn stored_job(attempts: i32) -> Job {
        let at = "2030-01-01T00:00:00.123456Z".parse().unwrap();
        Job {
            id: Uuid::nil(),
            queue: "default".into(),
            model: DEFAULT_MODEL.into(),
            prompt: "fox".into(),
            params: serde_json::json!({"size": "1024x1024", "n": 1}),
            priority: 0,
            state: JobState::Queued,
            operation: Operation::Generate,
            awaiting_input: false,
            callback_url: None,
            run_at: at,
            attempts,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            idempotency_key: Some("k".into()),
            result: None,
            last_error: None,
            locked_by: None,
            lease_expires_at: None,
            expires_at: None,
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            seq: 1,
        }
    }

    #[test]
    fn a_repeated_key_is_the_same_job_only_with_the_same_body() {
        let base = NewJob {
            params: Some(serde_json::json!({"n": 1, "size": "1024x1024"})),
            idempotency_key: Some("k".into()),
            ..NewJob::new("fox")
        };
        let later: DateTime<Utc> = "2031-01-01T00:00:00Z".parse().unwrap();
        // (request, attempts so far, fields that differ)
        let rows: Vec<(NewJob, i32, Vec<&str>)> = vec![
            (base.clone(), 0, vec![]),
            (
                NewJob {
                    queue: Some("default".into()),
                    model: Some(DEFAULT_MODEL.into()),
                    priority: Some(0),
                    max_attempts: Some(5),
                    ..base.clone()
                },
                0,
                vec![],
            ),
            (
                NewJob {
                    run_at: Some("2030-01-01T00:00:00.123456789Z".parse().unwrap()),
                    ..base.clone()
                },
                0,
                vec![],
            ),
            (
                NewJob {
                    prompt: "wolf".into(),
                    ..base.clone()
                },
                0,
                vec!["prompt"],
            ),
            (
                NewJob {
                    params: None,
                    ..base.clone()
                },
                0,
                vec!["params"],
            ),
            (
                NewJob {
                    queue: Some("bulk".into()),
                    priority: Some(3),
                    ..base.clone()
                },
                0,
                vec!["queue", "priority"],
            ),
            (
                NewJob {
                    model: Some("gpt-image-1".into()),
                    max_attempts: Some(2),
                    ..base.clone()
                },
                0,
                vec!["model", "max_attempts"],
            ),
            (
                NewJob {
                    run_at: Some(later),
                    ..base.clone()
                },
                0,
                vec!["run_at"],
            ),
            (
                NewJob {
                    run_at: Some(later),
                    ..base.clone()
                },
                1,
                vec![],
            ),
            (
                NewJob {
                    expires_at: Some(later),
                    ..base.clone()
                },
                0,
                vec!["expires_at"],
            ),
        ];
        for (request, attempts, want) in rows {
            assert_eq!(
                request.differences(&stored_job(attempts)),
                want,
                "{request:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<NewJob>(r#"{"prompt":"fox","prio":3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `prio`"), "{err}");
    }
}
