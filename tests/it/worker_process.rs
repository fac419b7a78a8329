//! `genq worker` as real processes: several replicas drain one queue, a
//! SIGKILLed worker loses nothing, SIGTERM finishes or releases in-flight jobs,
//! and a developer's `.env` never reaches the processes tests start.

use genq_testkit::process::{genq, scratch_dir};
use genq_testkit::{TestDb, count_state, insert_jobs, wait_until};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `genq worker` child process in a scratch directory of its own, killed if the
/// test ends early.
struct WorkerProcess(Child, PathBuf);

impl WorkerProcess {
    fn start(db: &TestDb, extra: &[&str]) -> WorkerProcess {
        let dir = scratch_dir("worker");
        let child = genq(&dir)
            .args([
                "worker",
                "--provider",
                "noop",
                "--poll-ms",
                "200",
                "--reap-ms",
                "200",
            ])
            .args(extra)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting genq worker");
        WorkerProcess(child, dir)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    async fn exit_within(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "worker did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

async fn attempt_outcomes(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT outcome FROM genq.attempts ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_worker_processes_drain_2000_jobs_each_exactly_once() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 2000, json!({})).await;
    let mut workers = [
        WorkerProcess::start(&db, &["--concurrency", "8"]),
        WorkerProcess::start(&db, &["--concurrency", "8"]),
    ];
    wait_until(Duration::from_secs(120), "2000 jobs to succeed", || async {
        count_state(&db.pool, "succeeded").await == 2000
    })
    .await;
    for w in &workers {
        w.signal("-TERM");
    }
    for w in &mut workers {
        assert!(w.exit_within(Duration::from_secs(20)).await.success());
    }
    // Exactly once: one attempt per job, and that attempt succeeded.
    let (jobs, attempts, runs_per_job): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM genq.jobs WHERE attempts = 1),
                (SELECT count(*) FROM genq.attempts WHERE outcome = 'succeeded'),
                (SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM genq.attempts GROUP BY job_id) t)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((jobs, attempts, runs_per_job), (2000, 2000, 1));
    // Both replicas took part.
    let workers: i64 = sqlx::query_scalar("SELECT count(DISTINCT worker) FROM genq.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 2);
}

#[tokio::test]
async fn a_sigkilled_worker_loses_nothing() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 1, json!({ "noop_delay_ms": 1500 })).await;
    let mut doomed = WorkerProcess::start(&db, &["--lease-secs", "1"]);
    wait_until(Duration::from_secs(20), "the job to start", || async {
        count_state(&db.pool, "running").await == 1
    })
    .await;
    doomed.0.kill().unwrap(); // SIGKILL: no chance to clean up
    doomed.0.wait().unwrap();

    let _survivor = WorkerProcess::start(&db, &["--lease-secs", "1"]);
    wait_until(
        Duration::from_secs(30),
        "the job to run again and succeed",
        || async { count_state(&db.pool, "succeeded").await == 1 },
    )
    .await;
    assert_eq!(attempt_outcomes(&db).await, ["lost", "succeeded"]);
    let (attempts, error): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM genq.jobs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((attempts, error), (2, None));
    let lost: String = sqlx::query_scalar("SELECT error FROM genq.attempts WHERE outcome = 'lost'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(lost.contains("lease expired"), "{lost}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_jobs_finish_within_the_grace_period() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 3, json!({ "noop_delay_ms": 1000 })).await;
    let mut worker = WorkerProcess::start(&db, &["--concurrency", "4", "--grace-secs", "20"]);
    wait_until(Duration::from_secs(20), "the jobs to start", || async {
        count_state(&db.pool, "running").await == 3
    })
    .await;
    worker.signal("-TERM");
    assert!(worker.exit_within(Duration::from_secs(20)).await.success());
    assert_eq!(count_state(&db.pool, "succeeded").await, 3);
    assert_eq!(
        attempt_outcomes(&db).await,
        ["succeeded", "succeeded", "succeeded"]
    );
}

#[tokio::test]
async fn sigterm_releases_jobs_still_running_after_the_grace_period() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 2, json!({ "noop_delay_ms": 60000 })).await;
    let mut worker = WorkerProcess::start(&db, &["--concurrency", "4", "--grace-secs", "0.5"]);
    wait_until(Duration::from_secs(20), "the jobs to start", || async {
        count_state(&db.pool, "running").await == 2
    })
    .await;
    worker.signal("-TERM");
    assert!(worker.exit_within(Duration::from_secs(10)).await.success());
    // Back in the queue, no attempt spent, the interrupted run visible.
    let (queued, attempts): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(attempts) FROM genq.jobs WHERE state = 'queued' AND locked_by IS NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((queued, attempts), (2, 0));
    assert_eq!(attempt_outcomes(&db).await, ["released", "released"]);
}

#[tokio::test]
async fn cli_submit_enqueues_and_refuses_bad_input() {
    let db = TestDb::new().await;
    let dir = scratch_dir("submit");
    let run = |args: &[&str]| {
        genq(&dir)
            .arg("submit")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap()
    };
    let args = [
        "--prompt",
        "a fox",
        "--param",
        "size=1024x1024",
        "--param",
        "n=2",
        "--priority",
        "5",
        "--idempotency-key",
        "k1",
    ];
    let ok = run(&args);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(first["created"], true);
    let again = run(&args);
    let second: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (second["id"].clone(), second["created"].clone()),
        (first["id"].clone(), json!(false))
    );
    // The same key for a different job is refused, saying why.
    let other = run(&["--prompt", "a fox", "--idempotency-key", "k1"]);
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("was already used for job"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let (params, priority): (serde_json::Value, i32) =
        sqlx::query_as("SELECT params, priority FROM genq.jobs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (params, priority),
        (json!({"size": "1024x1024", "n": 2}), 5)
    );

    for (args, want) in [
        (&["--prompt", ""][..], "prompt is empty"),
        (
            &["--prompt", "fox", "--priority", "-3"][..],
            "priority -3 is out of range",
        ),
        (
            &["--prompt", "fox", "--param", "size"][..],
            "is not key=value",
        ),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(want),
            "{args:?}: {stderr}"
        );
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Set only in the copy of this test binary that
/// `a_dotenv_where_the_tests_run_is_never_read_by_their_processes` starts.
const INSIDE_A_DIR_WITH_A_DOTENV: &str = "GENQ_TEST_INSIDE_A_DIR_WITH_A_DOTENV";

/// A `.env` that would stop any genq worker that read it.
const POISONED_DOTENV: &str = "GENQ_LEASE_SECS=read-from-dotenv\n";

#[tokio::test]
async fn a_dotenv_where_the_tests_run_is_never_read_by_their_processes() {
    if std::env::var_os(INSIDE_A_DIR_WITH_A_DOTENV).is_some() {
        return;
    }
    let db = TestDb::new().await;
    let dir = scratch_dir("dotenv");
    std::fs::write(dir.join(".env"), POISONED_DOTENV).unwrap();
    // The control: genq started in that directory does read it, and refuses to start.
    let control = Command::new(env!("CARGO_BIN_EXE_genq"))
        .args(["worker", "--provider", "noop"])
        .env("DATABASE_URL", &db.url)
        .env_remove("GENQ_LEASE_SECS")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&control.stderr);
    assert!(
        !control.status.success() && stderr.contains("read-from-dotenv"),
        "genq did not read the .env in its directory: {stderr}"
    );
    // This test binary, run from that directory (as `cargo test` is run from a
    // checkout holding a developer's .env), starts its workers and they work.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "worker_process::workers_started_from_a_directory_with_a_dotenv_ignore_it",
            "--nocapture",
        ])
        .env(INSIDE_A_DIR_WITH_A_DOTENV, "1")
        .env_remove("GENQ_LEASE_SECS")
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs only inside `a_dotenv_where_the_tests_run_is_never_read_by_their_processes`,
/// whose directory holds [`POISONED_DOTENV`].
#[tokio::test]
async fn workers_started_from_a_directory_with_a_dotenv_ignore_it() {
    if std::env::var_os(INSIDE_A_DIR_WITH_A_DOTENV).is_none() {
        return;
    }
    let here = std::env::current_dir().unwrap();
    assert_eq!(
        std::fs::read_to_string(here.join(".env")).unwrap(),
        POISONED_DOTENV
    );
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 1, json!({})).await;
    let mut worker = WorkerProcess::start(&db, &[]);
    wait_until(Duration::from_secs(20), "the job to succeed", || {
        let exited = worker.0.try_wait().unwrap();
        assert!(exited.is_none(), "the worker exited: {exited:?}");
        async { count_state(&db.pool, "succeeded").await == 1 }
    })
    .await;
}
