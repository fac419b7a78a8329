//! Pickup latency on an idle queue: from a plain SQL INSERT to the claim,
//! measured with the database's own clock (`started_at - created_at`), one
//! job at a time so only LISTEN/NOTIFY can make it fast (the worker polls
//! once a minute).
//!
//! `cargo bench --bench pickup -- [jobs=300]`

use genq_testkit::bench::{Scratch, WorkerProcess, arg};
use std::time::Duration;

fn main() {
    let jobs: usize = arg("jobs", 300);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("pickup").await;
        let worker = WorkerProcess::start(&db.url, &["--provider", "noop", "--poll-ms", "60000"], &[]);
        sqlx::query("INSERT INTO genq.jobs (prompt) VALUES ('warm-up')").execute(&db.pool).await.unwrap();
        db.wait_succeeded(1, Duration::from_millis(5)).await;
        let mut latencies = Vec::with_capacity(jobs);
        for i in 0..jobs {
            let id: uuid::Uuid = sqlx::query_scalar("INSERT INTO genq.jobs (prompt) VALUES ('pickup') RETURNING id")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            let ms = loop {
                let gap: Option<f64> = sqlx::query_scalar(
                    "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 FROM genq.jobs WHERE id = $1 AND started_at IS NOT NULL",
                )
                .bind(id)
                .fetch_optional(&db.pool)
                .await
                .unwrap()
                .flatten();
                if let Some(ms) = gap {
                    break ms;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            latencies.push(ms);
            db.wait_succeeded(i as i64 + 2, Duration::from_millis(1)).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(worker);
        db.finish().await;
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "pickup: {jobs} jobs, enqueue → claim on an idle queue (LISTEN/NOTIFY, poll 60 s): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(0.50),
            pct(0.95),
            pct(0.99),
            latencies[latencies.len() - 1]
        );
    });
}
