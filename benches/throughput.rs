//! Queue throughput: how fast one `genq worker` process drains jobs with the
//! no-op provider (every job's row and attempt history kept).
//!
//! `cargo bench --bench throughput [-- JOBS [CONCURRENCY]]` (default 20000, 64).
//! Uses `DATABASE_URL` if set (a scratch database is created on it), else a
//! private cluster. Prints one line of figures; asserts nothing about speed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use genq::embedded_pg::EmbeddedPg;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let jobs: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_cluster, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let pg = EmbeddedPg::start().expect("starting a private PostgreSQL");
            let url = pg.url();
            (Some(pg), url)
        }
    };
    rt.block_on(async {
        let admin = genq::db::connect(&url, 1).await.unwrap();
        let name = format!("genq_bench_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
        let db_url = url.rsplit_once('/').map(|(base, _)| format!("{base}/{name}")).unwrap();
        let pool = genq::db::connect(&db_url, 4).await.unwrap();
        genq::store::migrate::run(&pool).await.unwrap();

        let mut worker = Command::new(env!("CARGO_BIN_EXE_genq"))
            .args(["worker", "--provider", "noop", "--concurrency", &concurrency.to_string()])
            .env("DATABASE_URL", &db_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Warm up: the worker is connected and listening once one job is done.
        sqlx::query("INSERT INTO genq.jobs (prompt) VALUES ('warm-up')").execute(&pool).await.unwrap();
        wait_for(&pool, 1).await;

        let start = Instant::now();
        sqlx::query("INSERT INTO genq.jobs (prompt) SELECT 'bench ' || i FROM generate_series(1, $1) i")
            .bind(jobs)
            .execute(&pool)
            .await
            .unwrap();
        let enqueued = start.elapsed();
        wait_for(&pool, jobs + 1).await;
        let elapsed = start.elapsed();
        let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.attempts").fetch_one(&pool).await.unwrap();
        assert_eq!(attempts, jobs + 1, "every job has its attempt row");

        let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
        let _ = worker.wait();
        pool.close().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin).await;
        println!(
            "throughput: {jobs} jobs drained by 1 worker process (noop provider, concurrency {concurrency}) in {:.2} s \
             = {:.0} jobs/s (enqueue of all jobs took {:.2} s, included)",
            elapsed.as_secs_f64(),
            jobs as f64 / elapsed.as_secs_f64(),
            enqueued.as_secs_f64(),
        );
    });
}

async fn wait_for(pool: &sqlx::PgPool, succeeded: i64) {
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = 'succeeded'")
            .fetch_one(pool)
            .await
            .unwrap();
        if n >= succeeded {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
