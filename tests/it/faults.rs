//! The fault suite: crashes, database outages, bad input at scale, slow and
//! hanging providers. Each test states what must hold afterwards: every
//! job ends `succeeded` or rightly `failed`, none is lost, and any job that
//! ran twice shows why in `genq.attempts`.

use genq::job::NewJob;
use genq::provider::noop::NoopProvider;
use genq::worker::{Worker, WorkerConfig};
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{TestDb, count_state, insert_jobs, wait_until};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use genq_testkit::ChildGuard as Proc;

fn worker_process(db: &TestDb, extra: &[&str]) -> Proc {
    Proc(
        genq_testkit::process::genq(&genq_testkit::process::scratch_dir("faults"))
            .args([
                "worker",
                "--provider",
                "noop",
                "--poll-ms",
                "100",
                "--reap-ms",
                "200",
                "--lease-secs",
                "1",
            ])
            .args(extra)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// (jobs with exactly one succeeded attempt, jobs with a lost attempt, attempt rows).
async fn attempt_shape(db: &TestDb) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT job_id FROM genq.attempts WHERE outcome = 'succeeded'
                                        GROUP BY job_id HAVING count(*) = 1) t),
                (SELECT count(DISTINCT job_id) FROM genq.attempts WHERE outcome = 'lost'),
                (SELECT count(*) FROM genq.attempts)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_worker_killed_under_load_loses_nothing() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 300, json!({ "noop_delay_ms": 30 })).await;
    let mut first = worker_process(&db, &["--concurrency", "16"]);
    wait_until(Duration::from_secs(60), "some progress", || async {
        count_state(&db.pool, "succeeded").await >= 60
    })
    .await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _second = worker_process(&db, &["--concurrency", "16"]);
    wait_until(Duration::from_secs(90), "every job to succeed", || async {
        count_state(&db.pool, "succeeded").await == 300
    })
    .await;
    let (once, lost, rows) = attempt_shape(&db).await;
    assert_eq!(once, 300, "each job succeeded exactly once");
    assert!(
        lost <= 16,
        "only jobs in flight at the kill ran twice: {lost}"
    );
    assert_eq!(rows, 300 + lost, "each rerun is visible as a lost attempt");
}

#[tokio::test]
async fn workers_ride_out_killed_database_connections() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 400, json!({ "noop_delay_ms": 10 })).await;
    let mut worker = worker_process(&db, &["--concurrency", "8"]);
    for round in 1..=3 {
        wait_until(Duration::from_secs(60), "progress", || async {
            count_state(&db.pool, "succeeded").await >= round * 80
        })
        .await;
        // Kill every connection to this database but the one doing the killing.
        let killer = genq::db::connect(&db.url, 1).await.unwrap();
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&killer)
        .await
        .unwrap();
        assert!(killed > 0);
        killer.close().await;
    }
    wait_until(Duration::from_secs(90), "every job to succeed", || async {
        // The test's own pool lost its connections too; a failed query just means "not yet".
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM genq.jobs WHERE state = 'succeeded'")
            .fetch_one(&db.pool)
            .await
            .is_ok_and(|n| n == 400)
    })
    .await;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker kept running"
    );
    let (once, lost, rows) = attempt_shape(&db).await;
    assert_eq!(once, 400);
    assert_eq!(rows, 400 + lost);
}

#[tokio::test]
async fn bad_input_at_scale_is_refused_or_failed_clearly_and_good_jobs_run() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    // 1,000 malformed HTTP submissions.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop_api = CancellationToken::new();
    tokio::spawn(genq::api::serve(
        listener,
        genq::api::ApiState::new(rig.db.pool.clone(), None),
        stop_api.clone(),
    ));
    let client = reqwest::Client::new();
    let bodies = [
        r#"{"prompt": ""}"#,
        r#"{"prompt": "fox", "params": {"size": "512x512"}}"#,
        r#"{"prompt": "fox", "params": {"n": 0}}"#,
        r#"{"prompt": "fox", "model": "dall-e-3"}"#,
        r#"{"prompt": "fox", "colour": "red"}"#,
        r#"{"prompt": "fox", "priority": -4}"#,
        r#"{"prompt": "fox""#,
        r#"[1, 2]"#,
    ];
    for i in 0..1000 {
        let resp = client
            .post(format!("{base}/v1/jobs"))
            .header("content-type", "application/json")
            .body(bodies[i % bodies.len()])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{}", bodies[i % bodies.len()]);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| e.len() > 10),
            "{body}"
        );
    }
    stop_api.cancel();
    assert_eq!(
        count_state(&rig.db.pool, "queued").await,
        0,
        "nothing half-written"
    );

    // Plain SQL skips validation: 200 bad rows among 100 good ones.
    insert_jobs(&rig.db.pool, 100, json!({ "size": "1024x1024" })).await;
    insert_jobs(&rig.db.pool, 100, json!({ "size": "640x480" })).await;
    insert_jobs(&rig.db.pool, 100, json!({ "n": 20 })).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 8).await;
    wait_until(Duration::from_secs(90), "every job to end", || async {
        count_state(&rig.db.pool, "succeeded").await + count_state(&rig.db.pool, "failed").await
            == 300
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(count_state(&rig.db.pool, "succeeded").await, 100);
    let reasons = genq::store::jobs::failure_reasons(&rig.db.pool)
        .await
        .unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|(r, n)| *n == 100 && r.contains("is not supported")),
        "{reasons:?}"
    );
    // Bad jobs never reached the provider: every answer but 429s is a 200 for a good job.
    let answered: Vec<u16> = rig
        .sim
        .log()
        .iter()
        .map(|r| r.status)
        .filter(|s| *s != 429)
        .collect();
    assert_eq!(answered.len(), 100);
    assert!(answered.iter().all(|s| *s == 200));
}

#[tokio::test]
async fn heartbeats_keep_the_lease_of_a_slow_job() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 2, json!({ "noop_delay_ms": 3000 })).await;
    let config = WorkerConfig {
        lease: Duration::from_secs(1),
        reap_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(db.pool.clone(), config, NoopProvider).run(stop.clone()));
    // A second worker reaps eagerly: it must find nothing to reap.
    let other = WorkerConfig {
        lease: Duration::from_secs(1),
        reap_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let stop_other = CancellationToken::new();
    let reaper =
        tokio::spawn(Worker::new(db.pool.clone(), other, NoopProvider).run(stop_other.clone()));
    wait_until(Duration::from_secs(30), "both jobs to succeed", || async {
        count_state(&db.pool, "succeeded").await == 2
    })
    .await;
    stop.cancel();
    stop_other.cancel();
    worker.await.unwrap();
    reaper.await.unwrap();
    let (once, lost, _) = attempt_shape(&db).await;
    assert_eq!(
        (once, lost),
        (2, 0),
        "a 3 s job under a 1 s lease was never taken away"
    );
}

#[tokio::test]
async fn a_slow_provider_times_out_and_a_hanging_one_does_not_block_shutdown() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    // Calls time out after 500 ms; the sim answers this prompt after 5 s.
    let provider = rig.provider_with_timeout(keys(&[("a", "sk-a")]), Duration::from_millis(500));
    let (worker, stop) = rig.worker_with(provider, 2).await;
    let slow = NewJob {
        max_attempts: Some(2),
        ..NewJob::new("slow [sim:sleep=5000]")
    };
    let id = genq::submit::submit(&rig.db.pool, &slow).await.unwrap().id;
    wait_until(Duration::from_secs(30), "the slow job to fail", || async {
        count_state(&rig.db.pool, "failed").await == 1
    })
    .await;
    let job = genq::store::jobs::get(&rig.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.attempts, 2);
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("did not answer in time"),
        "{:?}",
        job.last_error
    );
    stop.cancel();
    worker.await.unwrap();

    // A provider that hangs (10 minutes) with a long client timeout: shutdown
    // still ends within the grace period (2 s in the rig) and releases the job.
    let provider = rig.provider_with_timeout(keys(&[("a", "sk-a")]), Duration::from_secs(3600));
    let (worker, stop) = rig.worker_with(provider, 2).await;
    let hung = genq::submit::submit(&rig.db.pool, &NewJob::new("hang [sim:sleep=600000]"))
        .await
        .unwrap()
        .id;
    wait_until(Duration::from_secs(20), "the call to start", || async {
        count_state(&rig.db.pool, "running").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    stop.cancel();
    let report = worker.await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        asked.elapsed()
    );
    assert_eq!(report.released, 1);
    let job = genq::store::jobs::get(&rig.db.pool, hung)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.state, job.attempts), (genq::job::JobState::Queued, 0));
}
