//! The queue core in one process against real PostgreSQL: enqueue paths,
//! NOTIFY pickup, exactly-once draining, backoff, idempotency, bad input.

use chrono::Utc;
use genq::job::{AttemptOutcome, Job, NewJob};
use genq::provider::{Call, Execution, Outcome, Provider};
use genq::retry::Backoff;
use genq::store::jobs;
use genq::submit::SubmitError;
use genq::worker::{Worker, WorkerConfig};
use genq_testkit::{TestDb, count_state, insert_jobs, wait_until};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn config(concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        poll_interval: Duration::from_millis(200),
        reap_interval: Duration::from_millis(200),
        grace: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

fn call(outcome: AttemptOutcome) -> Option<Call> {
    Some(Call {
        outcome,
        key_id: None,
        http_status: None,
        error: None,
        retry_after: None,
        started_at: Utc::now(),
        cost: None,
    })
}

/// Counts how often each job ran.
#[derive(Clone, Default)]
struct Counting(Arc<Mutex<HashMap<Uuid, u32>>>);

impl Provider for Counting {
    async fn execute(&self, job: &Job) -> Execution {
        *self.0.lock().unwrap().entry(job.id).or_default() += 1;
        tokio::task::yield_now().await;
        Execution {
            outcome: Outcome::Succeeded {
                result: json!({"ok": true}),
            },
            call: call(AttemptOutcome::Succeeded),
        }
    }
}

/// Waits, from the database's own view (`pg_stat_activity`), until a backend of this
/// database has finished a `LISTEN` and another has since finished a claim: from then on
/// a quick pickup of a new job can only come from its notification.
async fn listening_and_looked(db: &TestDb) {
    wait_until(Duration::from_secs(10), "LISTEN, then a claim", || async {
        sqlx::query_scalar::<_, bool>(
            "WITH l AS (
                SELECT max(state_change) AS at FROM pg_stat_activity
                 WHERE datname = current_database() AND state = 'idle'
                   AND query ILIKE 'LISTEN%genq_jobs%')
             SELECT coalesce(bool_or(a.query_start > l.at), false)
               FROM pg_stat_activity a, l
              WHERE a.datname = current_database() AND a.state = 'idle'
                AND a.query LIKE '%WITH picked AS%'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    })
    .await;
}

#[tokio::test]
async fn plain_sql_insert_is_picked_up_through_notify() {
    let db = TestDb::new().await;
    // Poll rarely, so a quick pickup can only come from the notification.
    let cfg = WorkerConfig {
        poll_interval: Duration::from_secs(60),
        ..config(4)
    };
    let stop = CancellationToken::new();
    let worker =
        tokio::spawn(Worker::new(db.pool.clone(), cfg, Counting::default()).run(stop.clone()));
    // Wait until the worker LISTENs, and has looked at the queue since.
    listening_and_looked(&db).await;

    let start = Instant::now();
    sqlx::query("INSERT INTO genq.jobs (prompt) VALUES ('a red fox')")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the job to succeed", || async {
        count_state(&db.pool, "succeeded").await == 1
    })
    .await;
    let latency = start.elapsed();
    eprintln!("insert → succeeded in {latency:?}");
    assert!(
        latency < Duration::from_secs(5),
        "took {latency:?}: the notification did not wake the worker"
    );

    let job: Job = sqlx::query_as("SELECT * FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        (job.model.as_str(), job.queue.as_str(), job.attempts),
        ("gpt-image-2", "default", 1)
    );
    assert!(job.finished_at.is_some() && job.locked_by.is_none());
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn four_workers_drain_2000_jobs_each_exactly_once() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 2000, json!({})).await;
    let seen = Counting::default();
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(Worker::new(db.pool.clone(), config(8), seen.clone()).run(stop.clone()))
        })
        .collect();
    wait_until(Duration::from_secs(60), "2000 jobs to succeed", || async {
        count_state(&db.pool, "succeeded").await == 2000
    })
    .await;
    stop.cancel();
    let mut claimed = 0;
    for w in workers {
        claimed += w.await.unwrap().claimed;
    }
    let runs = seen.0.lock().unwrap().clone();
    assert_eq!(runs.len(), 2000, "every job ran");
    assert!(runs.values().all(|&n| n == 1), "some job ran twice");
    assert_eq!(claimed, 2000);
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.attempts WHERE outcome = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 2000);
}

/// Checks, from inside each call, how many jobs its worker holds.
#[derive(Clone)]
struct SlotWatcher {
    pool: sqlx::PgPool,
    most_held: Arc<AtomicUsize>,
}

impl Provider for SlotWatcher {
    async fn execute(&self, job: &Job) -> Execution {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM genq.jobs WHERE state = 'running' AND locked_by = $1",
        )
        .bind(&job.locked_by)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        self.most_held.fetch_max(held as usize, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Execution {
            outcome: Outcome::Succeeded { result: json!({}) },
            call: call(AttemptOutcome::Succeeded),
        }
    }
}

#[tokio::test]
async fn a_worker_never_holds_more_jobs_than_its_slots() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 60, json!({})).await;
    let most_held = Arc::new(AtomicUsize::new(0));
    let provider = SlotWatcher {
        pool: db.pool.clone(),
        most_held: most_held.clone(),
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(db.pool.clone(), config(3), provider).run(stop.clone()));
    wait_until(Duration::from_secs(30), "60 jobs to succeed", || async {
        count_state(&db.pool, "succeeded").await == 60
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let most = most_held.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "held {most} jobs with 3 slots");
}

/// Fails every call with a transient error.
#[derive(Clone, Default)]
struct AlwaysTransient;

impl Provider for AlwaysTransient {
    async fn execute(&self, _job: &Job) -> Execution {
        Execution {
            outcome: Outcome::Retry {
                error: "HTTP 503: upstream unavailable".into(),
            },
            call: call(AttemptOutcome::Retry),
        }
    }
}

#[tokio::test]
async fn failed_attempts_back_off_then_fail_with_the_last_error() {
    let db = TestDb::new().await;
    let job = NewJob {
        max_attempts: Some(4),
        ..NewJob::new("a fox")
    };
    let id = genq::submit::submit(&db.pool, &job).await.unwrap().id;
    let base = Duration::from_millis(100);
    let cfg = WorkerConfig {
        poll_interval: Duration::from_millis(10),
        backoff: Backoff {
            base,
            max: Duration::from_secs(60),
        },
        ..config(2)
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(db.pool.clone(), cfg, AlwaysTransient).run(stop.clone()));

    // Watch run_at after each failed attempt: it must move further out each time.
    let mut run_ats = Vec::new();
    let mut last_attempts = 0;
    let start = Instant::now();
    loop {
        let job = jobs::get(&db.pool, id).await.unwrap().unwrap();
        if job.state == genq::job::JobState::Failed {
            break;
        }
        if job.state == genq::job::JobState::Queued && job.attempts > last_attempts {
            last_attempts = job.attempts;
            run_ats.push(job.run_at);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the job never failed: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    worker.await.unwrap();

    let job = jobs::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.attempts, 4);
    assert_eq!(
        job.last_error.as_deref(),
        Some("gave up after 4 attempts: HTTP 503: upstream unavailable")
    );
    assert!(job.finished_at.is_some());
    let attempts = jobs::attempts(&db.pool, id).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(attempts.iter().all(|a| a.outcome == AttemptOutcome::Retry));
    // Equal jitter: attempt k waits between base·2^(k-1)/2 and base·2^(k-1),
    // counted from when it ran (the provider answers at once).
    let delays: Vec<Duration> = run_ats
        .iter()
        .zip(&attempts)
        .map(|(run_at, a)| (*run_at - a.started_at).to_std().unwrap_or_default())
        .collect();
    assert!(delays.len() >= 2, "saw the delays {delays:?}");
    for (i, d) in delays.iter().enumerate() {
        let cap = base * (1 << i);
        assert!(
            *d >= cap / 2 - Duration::from_millis(5) && *d <= cap + Duration::from_millis(5),
            "delay {i} = {d:?}, cap {cap:?}"
        );
    }
    assert!(
        delays.windows(2).all(|w| w[1] >= w[0]),
        "run_at did not grow: {delays:?}"
    );
}

#[tokio::test]
async fn idempotency_keys_return_the_first_job() {
    let db = TestDb::new().await;
    let job = NewJob {
        idempotency_key: Some("order-42".into()),
        ..NewJob::new("a fox")
    };
    let first = genq::submit::submit(&db.pool, &job).await.unwrap();
    assert!(first.created);
    let again = genq::submit::submit(&db.pool, &job).await.unwrap();
    assert_eq!((again.id, again.created), (first.id, false));
    // The same key for a different job is refused, not silently answered.
    let other = genq::submit::submit(
        &db.pool,
        &NewJob {
            prompt: "another prompt".into(),
            ..job.clone()
        },
    )
    .await
    .unwrap_err();
    assert!(other.to_string().contains("different prompt"), "{other}");

    // Racing producers with one key still make one job.
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let pool = db.pool.clone();
            let job = NewJob {
                idempotency_key: Some("race".into()),
                ..NewJob::new("a cat")
            };
            tokio::spawn(async move { genq::submit::submit(&pool, &job).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for r in racers {
        ids.push(r.await.unwrap());
    }
    assert_eq!(ids.iter().filter(|e| e.created).count(), 1);
    assert!(ids.iter().all(|e| e.id == ids[0].id));
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 2);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message_and_nothing_written() {
    let db = TestDb::new().await;
    let cases = [
        (NewJob::new(""), "prompt is empty"),
        (
            NewJob {
                priority: Some(-5),
                ..NewJob::new("fox")
            },
            "priority -5 is out of range; use 0 to 1000",
        ),
        (
            NewJob {
                max_attempts: Some(0),
                ..NewJob::new("fox")
            },
            "max_attempts 0 is out of range",
        ),
        (
            NewJob {
                params: Some(json!("big")),
                ..NewJob::new("fox")
            },
            "params must be a JSON object",
        ),
    ];
    for (job, want) in cases {
        match genq::submit::submit(&db.pool, &job).await {
            Err(err @ (SubmitError::Field(_) | SubmitError::Params(_))) => {
                let msg = err.to_string();
                assert!(msg.contains(want), "got {msg:?}, want {want:?}")
            }
            other => panic!("{job:?} was not refused: {other:?}"),
        }
    }
    // Plain SQL is guarded by the table itself.
    let sql_cases = [
        (
            "INSERT INTO genq.jobs (prompt, state) VALUES ('fox', 'done')",
            "jobs_state_valid",
        ),
        (
            "INSERT INTO genq.jobs (prompt, priority) VALUES ('fox', -1)",
            "jobs_priority_range",
        ),
        (
            "INSERT INTO genq.jobs (prompt) VALUES ('   ')",
            "jobs_prompt_not_empty",
        ),
        (
            "INSERT INTO genq.jobs (prompt, params) VALUES ('fox', '[1]')",
            "jobs_params_is_object",
        ),
        (
            "INSERT INTO genq.jobs (prompt, state) VALUES ('fox', 'succeeded')",
            "jobs_finished_at_iff_final",
        ),
    ];
    for (sql, constraint) in sql_cases {
        let err = sqlx::query(sql).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains(constraint), "{sql}: {err}");
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 0, "a refused job left a row behind");
}

#[tokio::test]
async fn migrations_are_safe_to_run_concurrently_and_again() {
    let db = TestDb::new().await;
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move { genq::store::migrate::run(&pool).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_completion_after_the_lease_was_lost_is_ignored() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 1, json!({})).await;
    let queues = vec!["default".to_string()];
    let mut claimed = jobs::claim(&db.pool, "w1", &queues, 10, Duration::from_millis(1))
        .await
        .unwrap();
    let job = claimed.pop().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(jobs::reap(&db.pool, 10).await.unwrap(), 1);
    let again = jobs::claim(&db.pool, "w2", &queues, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);

    let late = jobs::Completion {
        job_id: job.id,
        attempt: job.attempts,
        finish: jobs::Finish::Failed {
            error: "late".into(),
        },
        refund: false,
        call: None,
    };
    assert!(
        jobs::complete(&db.pool, "w1", &[late])
            .await
            .unwrap()
            .is_empty()
    );
    let now = jobs::get(&db.pool, job.id).await.unwrap().unwrap();
    assert_eq!(
        (now.state, now.attempts, now.locked_by.as_deref()),
        (genq::job::JobState::Running, 2, Some("w2"))
    );
    let outcomes: Vec<AttemptOutcome> = jobs::attempts(&db.pool, job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, [AttemptOutcome::Lost]);
}

/// The SQL default of `genq.jobs.model` is the model genq's own ways in use
/// when a producer names none, so a plain INSERT and `genq submit` agree.
#[tokio::test]
async fn plain_sql_gets_the_same_default_model() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 1, json!({})).await;
    let model: String = sqlx::query_scalar("SELECT model FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(model, genq::job::DEFAULT_MODEL);
    assert_eq!(NewJob::new("fox").model(), genq::job::DEFAULT_MODEL);
}
