//! Queue throughput: how fast `genq worker` processes drain a backlog with a
//! provider that answers at once, every job's row and attempt history kept.
//!
//! `cargo bench --bench throughput -- [jobs=50000] [processes=1]
//!     [concurrency=512] [batch=256] [provider=noop|dry-run]`
//!
//! `provider=dry-run` runs the real provider with four keys of very high
//! limits and sends nothing: every job reserves its slot in the shared
//! buckets and books the call, so the difference is the limiter's cost.
//! Prints one line of figures; asserts nothing about speed.

use genq_testkit::bench::{Scratch, WorkerProcess, arg};
use std::time::{Duration, Instant};

fn main() {
    let jobs: i64 = arg("jobs", 50_000);
    let processes: usize = arg("processes", 1);
    let concurrency: usize = arg("concurrency", 512);
    let batch: usize = arg("batch", 256);
    let provider: String = arg("provider", "noop".to_string());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("throughput").await;
        sqlx::query("INSERT INTO genq.jobs (prompt) SELECT 'bench ' || i FROM generate_series(1, $1) i")
            .bind(jobs)
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("ANALYZE genq.jobs").execute(&db.pool).await.unwrap();
        let dir = std::env::temp_dir().join(format!("genq-throughput-{}", std::process::id()));
        let env = match provider.as_str() {
            "noop" => vec![],
            "dry-run" => limiter_env(&dir),
            other => panic!("provider={other}: noop or dry-run"),
        };
        let (db, before) = db.transactions().await;

        let args = [
            "--provider", &provider,
            "--concurrency", &concurrency.to_string(),
            "--claim-batch", &batch.to_string(),
        ];
        let start = Instant::now();
        let workers: Vec<WorkerProcess> =
            (0..processes).map(|_| WorkerProcess::start(&db.url, &args, &env)).collect();
        let mut polls = 0;
        while !db.drained().await {
            polls += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = start.elapsed();
        drop(workers);
        let (db, after) = db.transactions().await;
        let statements = after - before - polls - 1;

        let succeeded = db.count("succeeded").await;
        let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.attempts WHERE outcome = 'succeeded'")
            .fetch_one(&db.pool).await.unwrap();
        assert_eq!((succeeded, attempts), (jobs, jobs), "every job succeeded once, with its attempt row");
        db.finish().await;
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "throughput: {jobs} jobs drained by {processes} worker process(es) (provider {provider}, \
             concurrency {concurrency}, claim batch {batch}) in {:.2} s = {:.0} jobs/s; \
             {:.3} statements (round trips) per job",
            elapsed.as_secs_f64(),
            jobs as f64 / elapsed.as_secs_f64(),
            statements as f64 / jobs as f64,
        );
    });
}

/// Four keys, each allowed a million requests a minute: never the limit here.
fn limiter_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut toml = String::new();
    for i in 1..=4 {
        toml.push_str(&format!(
            "[[keys]]\nname = \"bench-{i}\"\nsecret = \"sk-bench-{i}\"\n\
             [keys.limits.\"*\"]\nrequests_per_minute = 1000000\n\n"
        ));
    }
    let file = dir.join("keys.toml");
    std::fs::write(&file, toml).unwrap();
    vec![
        ("GENQ_KEYS_FILE", file.display().to_string()),
        ("GENQ_OUTPUT_DIR", dir.join("out").display().to_string()),
    ]
}
