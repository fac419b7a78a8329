//! Slow keys, deep backlog: the limits users really have. J queued jobs, K
//! keys at R requests/min on `genq sim` (no burst), P `genq worker`
//! processes. Two phases:
//!
//! 1. **Cooling:** every key cools for `cool_secs` (as after a long
//!    Retry-After) while the workers run. Prints the statements per second
//!    each worker process sends meanwhile (the database's own transaction
//!    count; workers are stopped to flush it).
//! 2. **Serving:** `secs` seconds with the keys free. Prints the job-row
//!    updates per success (`pg_stat_user_tables.n_tup_upd`), the share of
//!    the keys' capacity used by the sim's own log (first request to last
//!    success), 429s, whether the first N jobs to succeed were the N oldest,
//!    and each worker's RSS after one minute and at the end.
//!
//! `cargo bench --bench backlog -- [jobs=100000] [keys=2] [rpm=5] [processes=2] [secs=600] [cool_secs=60]`

use std::time::{Duration, Instant};

use genq_sim::{Sim, SimConfig, SimKey};
use genq_testkit::bench::{Scratch, WorkerProcess, arg};

fn main() {
    let jobs: i64 = arg("jobs", 100_000);
    let keys: usize = arg("keys", 2);
    let rpm: u32 = arg("rpm", 5);
    let processes: usize = arg("processes", 2);
    let secs: u64 = arg("secs", 600);
    let cool_secs: f64 = arg("cool_secs", 60.0);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("backlog").await;
        let secrets: Vec<String> = (0..keys).map(|i| format!("sk-backlog-{i}")).collect();
        let sim = Sim::new(SimConfig {
            keys: secrets.iter().map(|s| SimKey::new(s, rpm)).collect(),
            ..SimConfig::default()
        });
        let (base_url, stop) = genq_testkit::rig::serve_sim(&sim).await;

        let dir = std::env::temp_dir().join(format!("genq-backlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut toml = String::new();
        for (i, s) in secrets.iter().enumerate() {
            toml.push_str(&format!(
                "[[keys]]\nname = \"k{i}\"\nsecret = \"{s}\"\n[keys.limits.\"*\"]\nrequests_per_minute = {rpm}\n"
            ));
        }
        std::fs::write(dir.join("keys.toml"), toml).unwrap();
        let env = [
            ("OPENAI_BASE_URL", base_url.clone()),
            ("GENQ_KEYS_FILE", dir.join("keys.toml").display().to_string()),
            ("GENQ_OUTPUT_DIR", dir.join("out").display().to_string()),
        ];
        let url = db.url.clone();
        let start_workers = || -> Vec<WorkerProcess> {
            (0..processes)
                .map(|_| WorkerProcess::start(&url, &["--concurrency", "16"], &env))
                .collect()
        };

        sqlx::query(
            "INSERT INTO genq.jobs (prompt) SELECT 'backlog ' || i FROM generate_series(1, $1) i",
        )
        .bind(jobs)
        .execute(&db.pool)
        .await
        .unwrap();
        // The keys' rows and buckets, as a first worker would make them, cooling.
        for i in 0..keys {
            sqlx::query(
                "INSERT INTO genq.api_keys (id, state, cooldown_until, last_error)
                 VALUES ($1, 'cooling', now() + make_interval(secs => $2), 'bench: cooling')",
            )
            .bind(format!("k{i}"))
            .bind(cool_secs)
            .execute(&db.pool)
            .await
            .unwrap();
        }

        // Phase 1: every key cooling.
        let (db, before) = db.transactions().await;
        let t = Instant::now();
        let workers = start_workers();
        tokio::time::sleep(Duration::from_secs_f64(cool_secs - 2.0)).await;
        drop(workers);
        let cooling = t.elapsed();
        let sent_while_cooling = sim.stats().total.requests;
        let (db, after) = db.transactions().await;
        let per_worker = (after - before) as f64 / cooling.as_secs_f64() / processes as f64;
        println!(
            "backlog-cooling: jobs={jobs} keys={keys}x{rpm}/min processes={processes}: \
             {per_worker:.2} statements/s per worker process while every key cooled \
             ({} in {:.0}s, start-up included); requests sent={sent_while_cooling}",
            after - before,
            cooling.as_secs_f64()
        );
        // Let the cooldown run out before serving.
        let left: f64 = sqlx::query_scalar(
            "SELECT greatest(0, extract(epoch FROM max(cooldown_until) - now()))::float8 FROM genq.api_keys",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs_f64(left)).await;

        // Phase 2: serving.
        let updates_before = tuple_updates(&db).await;
        let t = Instant::now();
        let workers = start_workers();
        tokio::time::sleep(Duration::from_secs(60.min(secs))).await;
        let rss_1m: Vec<u64> = workers.iter().filter_map(WorkerProcess::rss_kib).collect();
        tokio::time::sleep(Duration::from_secs(secs.saturating_sub(60))).await;
        let rss_end: Vec<u64> = workers.iter().filter_map(WorkerProcess::rss_kib).collect();
        drop(workers);
        let served = t.elapsed();
        stop.cancel();
        let (db, _) = db.transactions().await;
        let updates = tuple_updates(&db).await - updates_before;

        let log = sim.log();
        let ok: Vec<_> = log.iter().filter(|r| r.status == 200).collect();
        let rate_limited = log.iter().filter(|r| r.status == 429).count();
        let (Some(first), Some(last)) = (log.first(), ok.last()) else {
            println!("backlog: nothing succeeded in {:.0}s", served.as_secs_f64());
            return;
        };
        let span = (last.at - first.at).as_seconds_f64();
        // With no burst, a key can serve one request now and one per interval after.
        let capacity = keys as f64 * (1.0 + span * f64::from(rpm) / 60.0).floor();
        let succeeded = db.count("succeeded").await;
        let in_order: bool = sqlx::query_scalar(
            "SELECT count(*) = 0 FROM (SELECT seq FROM genq.jobs WHERE state = 'succeeded'
                                        EXCEPT SELECT seq FROM genq.jobs ORDER BY seq LIMIT $1) x",
        )
        .bind(succeeded)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let rewritten: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM genq.jobs WHERE state = 'queued' AND updated_at > created_at",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        println!(
            "backlog: jobs={jobs} keys={keys}x{rpm}/min processes={processes} {:.0}s: \
             succeeded={succeeded} = {:.1}% of capacity ({capacity:.0} over {span:.0}s, sim log); \
             429s={rate_limited}; job-row updates per success={:.2} ({updates}); \
             queued jobs ever rewritten={rewritten}; first {succeeded} to succeed are the oldest: {in_order}; \
             RSS KiB at 1 min {rss_1m:?}, at end {rss_end:?}",
            served.as_secs_f64(),
            100.0 * ok.len() as f64 / capacity,
            updates as f64 / succeeded.max(1) as f64,
        );
        db.finish().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Rows of `genq.jobs` updated so far (flushed: read with the workers stopped).
async fn tuple_updates(db: &Scratch) -> i64 {
    sqlx::query_scalar(
        "SELECT n_tup_upd FROM pg_stat_user_tables
          WHERE schemaname = 'genq' AND relname = 'jobs'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}
