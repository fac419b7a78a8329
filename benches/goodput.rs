//! Rate-limit goodput: K keys × R requests/min on `genq sim` allowing no
//! burst, P `genq worker` processes, N jobs. Judged from the provider's
//! side: the sim's successful requests as a share of what its keys could
//! serve from the first request to the last success (with no burst, a key
//! serves one request at once and one per interval after), and the 429
//! share of all requests.
//!
//! `cargo bench --bench goodput -- [jobs=600] [keys=3] [rpm=60] [processes=2] [mode=configured|learned|aimd]`
//! - configured: the keys file states each key's real limit.
//! - learned: no limits configured and a default 10× too high; the sim
//!   announces `x-ratelimit-limit-requests`, so genq learns from headers and 429s.
//! - aimd: as learned, but the sim sends no rate-limit headers: 429s only.

use std::time::{Duration, Instant};

use genq_sim::{Sim, SimConfig, SimKey};
use genq_testkit::bench::{Scratch, WorkerProcess, arg};

fn main() {
    let jobs: i64 = arg("jobs", 600);
    let keys: usize = arg("keys", 3);
    let rpm: u32 = arg("rpm", 60);
    let processes: usize = arg("processes", 2);
    let mode: String = arg("mode", "configured".to_string());
    let limit = Duration::from_secs(arg("max_secs", 300));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("goodput").await;
        let pool = db.pool.clone();
        let secrets: Vec<String> = (0..keys).map(|i| format!("sk-goodput-{i}")).collect();
        // No burst: a request a moment early is a 429, as a strict provider answers it.
        let sim = Sim::new(SimConfig {
            keys: secrets
                .iter()
                .map(|s| SimKey { burst: Some(1), send_ratelimit_headers: mode != "aimd", ..SimKey::new(s, rpm) })
                .collect(),
            ..SimConfig::default()
        });
        let (base_url, stop) = genq_testkit::rig::serve_sim(&sim).await;

        let dir = std::env::temp_dir().join(format!("genq-goodput-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut toml = String::new();
        for (i, s) in secrets.iter().enumerate() {
            toml.push_str(&format!("[[keys]]\nname = \"k{i}\"\nsecret = \"{s}\"\n"));
            if mode == "configured" {
                toml.push_str(&format!("[keys.limits.\"*\"]\nrequests_per_minute = {rpm}\n"));
            }
        }
        std::fs::write(dir.join("keys.toml"), toml).unwrap();

        sqlx::query("INSERT INTO genq.jobs (prompt) SELECT 'goodput ' || i FROM generate_series(1, $1) i")
            .bind(jobs)
            .execute(&pool)
            .await
            .unwrap();
        let start = Instant::now();
        let env = [
            ("OPENAI_BASE_URL", base_url.clone()),
            ("GENQ_KEYS_FILE", dir.join("keys.toml").display().to_string()),
            ("GENQ_OUTPUT_DIR", dir.join("out").display().to_string()),
            ("GENQ_DEFAULT_RPM", (rpm * 10).to_string()),
        ];
        let workers: Vec<WorkerProcess> =
            (0..processes).map(|_| WorkerProcess::start(&db.url, &["--concurrency", "8"], &env)).collect();
        let mut done = 0i64;
        while done < jobs && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(250)).await;
            done = sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = 'succeeded'")
                .fetch_one(&pool)
                .await
                .unwrap();
        }
        let elapsed = start.elapsed();
        drop(workers);
        stop.cancel();
        let log = sim.log();
        let ok = log.iter().filter(|r| r.status == 200).count();
        let rate_limited = log.iter().filter(|r| r.status == 429).count();
        let span = match (log.first(), log.iter().rfind(|r| r.status == 200)) {
            (Some(first), Some(last)) => (last.at - first.at).as_seconds_f64(),
            _ => 0.0,
        };
        let capacity = keys as f64 * (1.0 + span * f64::from(rpm) / 60.0).floor();
        let share_429 = 100.0 * rate_limited as f64 / log.len().max(1) as f64;
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = 'failed'")
            .fetch_one(&pool)
            .await
            .unwrap();
        println!(
            "goodput: mode={mode} keys={keys}x{rpm}/min processes={processes} jobs={done}/{jobs} in {:.1}s: \
             {ok} successes = {:.1}% of capacity ({capacity:.0} over {span:.1}s, sim log, burst 1); \
             requests={} 429s={rate_limited} ({share_429:.2}%); failed={failed}",
            elapsed.as_secs_f64(),
            100.0 * ok as f64 / capacity.max(1.0),
            log.len(),
        );
        db.finish().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
