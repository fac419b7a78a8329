//! Queue throughput: how fast one `genq worker` process drains jobs with the
//! no-op provider, every job's row and attempt history kept.
//!
//! `cargo bench --bench throughput -- [jobs=20000] [concurrency=64] [batch=64]`
//! Prints one line of figures; asserts nothing about speed.

mod support;

use std::time::{Duration, Instant};
use support::{Scratch, WorkerProcess, arg};

fn main() {
    let jobs: i64 = arg("jobs", 20_000);
    let concurrency: usize = arg("concurrency", 64);
    let batch: usize = arg("batch", 64);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("throughput").await;
        let worker = WorkerProcess::start(
            &db.url,
            &[
                "--provider",
                "noop",
                "--concurrency",
                &concurrency.to_string(),
                "--claim-batch",
                &batch.to_string(),
            ],
            &[],
        );
        // Warm up: the worker is connected and listening once one job is done.
        sqlx::query("INSERT INTO genq.jobs (prompt) VALUES ('warm-up')").execute(&db.pool).await.unwrap();
        db.wait_succeeded(1, Duration::from_millis(10)).await;

        let start = Instant::now();
        sqlx::query("INSERT INTO genq.jobs (prompt) SELECT 'bench ' || i FROM generate_series(1, $1) i")
            .bind(jobs)
            .execute(&db.pool)
            .await
            .unwrap();
        let enqueued = start.elapsed();
        db.wait_succeeded(jobs + 1, Duration::from_millis(25)).await;
        let elapsed = start.elapsed();
        let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.attempts").fetch_one(&db.pool).await.unwrap();
        assert_eq!(attempts, jobs + 1, "every job has its attempt row");
        drop(worker);
        db.finish().await;
        println!(
            "throughput: {jobs} jobs drained by 1 worker process (noop provider, concurrency {concurrency}, claim batch {batch}) in {:.2} s \
             = {:.0} jobs/s (enqueue of all jobs took {:.2} s, included)",
            elapsed.as_secs_f64(),
            jobs as f64 / elapsed.as_secs_f64(),
            enqueued.as_secs_f64(),
        );
    });
}
