//! What recording cost adds to a completion: batches of claimed jobs are
//! completed through `genq::store::jobs::complete`, with billed calls (each
//! priced, so the statement also adds to each job's cost and to the
//! `genq.spend` row of its day, queue, model and key) or with unbilled ones,
//! by `tasks` concurrent writers that all add to the same few spend rows.
//!
//! `cargo bench --bench completion -- [jobs=100000] [batch=256] [tasks=4] [keys=2]`
//!
//! Prints one line per mode; asserts nothing about speed.

use std::time::{Duration, Instant};

use chrono::Utc;
use genq::cost::{Cost, CostSource, Tokens, Usd};
use genq::job::AttemptOutcome;
use genq::provider::Call;
use genq::store::jobs::{self, Completion, Finish};
use genq_testkit::bench::{Scratch, arg};
use serde_json::json;

fn main() {
    let jobs: i32 = arg("jobs", 100_000);
    let batch: usize = arg("batch", 256);
    let tasks: usize = arg("tasks", 4);
    let keys: usize = arg("keys", 2);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("completion").await;
        for billed in [false, true, false, true] {
            sqlx::query("TRUNCATE genq.jobs CASCADE")
                .execute(&db.pool)
                .await
                .unwrap();
            genq_testkit::insert_jobs(&db.pool, jobs, json!({})).await;
            sqlx::query("ANALYZE genq.jobs").execute(&db.pool).await.unwrap();
            let started = Instant::now();
            let mut writers = tokio::task::JoinSet::new();
            for task in 0..tasks {
                let pool = db.pool.clone();
                writers.spawn(async move { drain(&pool, task, batch, keys, billed).await });
            }
            let mut completing = Duration::ZERO;
            let mut batches = 0u32;
            while let Some(done) = writers.join_next().await {
                let (time, n) = done.unwrap();
                completing += time;
                batches += n;
            }
            let elapsed = started.elapsed();
            let spend_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.spend")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            println!(
                "completion: billed={billed} jobs={jobs} batch={batch} tasks={tasks} keys={keys}: {:.0} jobs/s claim+complete, complete {:.2} ms per batch ({batches} batches), spend rows {spend_rows}",
                jobs as f64 / elapsed.as_secs_f64(),
                completing.as_secs_f64() * 1000.0 / f64::from(batches.max(1)),
            );
        }
    });
}

/// Claims and completes until nothing is queued: time spent completing,
/// and how many batches.
async fn drain(
    pool: &sqlx::PgPool,
    task: usize,
    batch: usize,
    keys: usize,
    billed: bool,
) -> (Duration, u32) {
    let worker = format!("bench-{task}");
    let queues = ["default".to_string()];
    let (mut time, mut batches) = (Duration::ZERO, 0);
    loop {
        let claimed = jobs::claim(pool, &worker, &queues, batch, Duration::from_secs(60))
            .await
            .unwrap();
        if claimed.is_empty() {
            return (time, batches);
        }
        let completions: Vec<Completion> = claimed
            .iter()
            .enumerate()
            .map(|(i, job)| Completion {
                job_id: job.id,
                attempt: job.attempts,
                finish: Finish::Succeeded {
                    result: json!({"images": []}),
                },
                refund: false,
                call: Some(Call {
                    outcome: AttemptOutcome::Succeeded,
                    key_id: Some(format!("key-{}", i % keys)),
                    http_status: Some(200),
                    error: None,
                    retry_after: None,
                    started_at: Utc::now(),
                    cost: billed.then(|| Cost {
                        model: job.model.clone(),
                        usd: Some(Usd::from_nanos(8_170_000)),
                        source: CostSource::Usage,
                        tokens: Some(Tokens {
                            text_input: 2,
                            image_input: 0,
                            output: 272,
                        }),
                    }),
                }),
            })
            .collect();
        let started = Instant::now();
        let applied = jobs::complete(pool, &worker, &completions).await.unwrap();
        time += started.elapsed();
        batches += 1;
        assert_eq!(applied.len(), completions.len());
    }
}
