//! Memory: peak resident set of one `genq worker` process while 100,000
//! queued jobs wait and drain (no-op provider). The worker never holds more
//! jobs than its slots, so this should not grow with the queue.
//!
//! `cargo bench --bench memory -- [jobs=100000] [concurrency=64]`

mod support;

use std::time::{Duration, Instant};
use support::{Scratch, WorkerProcess, arg};

fn main() {
    let jobs: i64 = arg("jobs", 100_000);
    let concurrency: usize = arg("concurrency", 64);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("memory").await;
        sqlx::query("INSERT INTO genq.jobs (prompt) SELECT 'memory ' || i FROM generate_series(1, $1) i")
            .bind(jobs)
            .execute(&db.pool)
            .await
            .unwrap();
        let worker = WorkerProcess::start(
            &db.url,
            &["--provider", "noop", "--concurrency", &concurrency.to_string()],
            &[],
        );
        let start = Instant::now();
        let mut peak = 0;
        while db.count("succeeded").await < jobs {
            peak = peak.max(worker.peak_rss_kib().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak = peak.max(worker.peak_rss_kib().unwrap_or(0));
        let elapsed = start.elapsed();
        drop(worker);
        db.finish().await;
        println!(
            "memory: 1 worker process, {jobs} queued jobs drained in {:.1} s (concurrency {concurrency}): peak RSS {:.1} MiB",
            elapsed.as_secs_f64(),
            peak as f64 / 1024.0
        );
    });
}
