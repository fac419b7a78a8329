//! Unknown limits, no headers: keys whose limits nobody configured and the
//! provider never announces (40, 50 and 90 requests/min by default), a
//! default guess of 60/min, P `genq worker` processes and a deep backlog.
//! Judged by the sim's own log (no burst allowed): the share of the keys'
//! capacity used over minutes 0–3 and 3–`minutes`, the 429 share, and,
//! after every worker is restarted, over the first minute.
//!
//! `cargo bench --bench discovery -- [limits=40,50,90] [processes=2] [minutes=10] [jobs=5000]`

use std::time::Duration;

use genq_sim::{RequestRecord, Sim, SimConfig, SimKey};
use genq_testkit::bench::{Scratch, WorkerProcess, arg};

fn main() {
    let limits: Vec<u32> = arg("limits", "40,50,90".to_string())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let processes: usize = arg("processes", 2);
    let minutes: u64 = arg("minutes", 10);
    let jobs: i64 = arg("jobs", 5000);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("discovery").await;
        let secrets: Vec<String> = (0..limits.len())
            .map(|i| format!("sk-discover-{i}"))
            .collect();
        let sim = Sim::new(SimConfig {
            keys: secrets
                .iter()
                .zip(&limits)
                .map(|(s, rpm)| SimKey {
                    send_ratelimit_headers: false,
                    ..SimKey::new(s, *rpm)
                })
                .collect(),
            ..SimConfig::default()
        });
        let (base_url, stop) = genq_testkit::rig::serve_sim(&sim).await;
        let keys: Vec<String> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| format!("k{i}={s}"))
            .collect();
        let env = [
            ("OPENAI_BASE_URL", base_url.clone()),
            ("OPENAI_API_KEYS", keys.join(",")),
            ("GENQ_DEFAULT_RPM", "60".to_string()),
            (
                "GENQ_OUTPUT_DIR",
                std::env::temp_dir()
                    .join(format!("genq-discovery-{}", std::process::id()))
                    .display()
                    .to_string(),
            ),
        ];
        sqlx::query(
            "INSERT INTO genq.jobs (prompt) SELECT 'discover ' || i FROM generate_series(1, $1) i",
        )
        .bind(jobs)
        .execute(&db.pool)
        .await
        .unwrap();
        let start = |env: &[(&str, String)]| -> Vec<WorkerProcess> {
            (0..processes)
                .map(|_| WorkerProcess::start(&db.url, &["--concurrency", "8"], env))
                .collect()
        };
        let workers = start(&env);
        tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
        drop(workers);
        let first_run = sim.log();
        let restarted_at = first_run.last().map_or(0, |r| r.arrived_ns);
        let workers = start(&env);
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(workers);
        stop.cancel();

        let capacity_per_min: f64 = limits.iter().map(|l| f64::from(*l)).sum();
        let t0 = first_run.first().map_or(0, |r| r.arrived_ns);
        let window = |log: &[RequestRecord], from_ns: u64, to_ns: u64| {
            let inside: Vec<&RequestRecord> = log
                .iter()
                .filter(|r| r.arrived_ns >= from_ns && r.arrived_ns < to_ns)
                .collect();
            let ok = inside.iter().filter(|r| r.status == 200).count() as f64;
            let limited = inside.iter().filter(|r| r.status == 429).count() as f64;
            let minutes = (to_ns - from_ns) as f64 / 60e9;
            (
                100.0 * ok / (capacity_per_min * minutes),
                100.0 * limited / inside.len().max(1) as f64,
            )
        };
        let min = 60_000_000_000u64;
        let (early, early_429) = window(&first_run, t0, t0 + 3 * min);
        let (steady, steady_429) = window(&first_run, t0 + 3 * min, t0 + minutes * min);
        let log = sim.log();
        let after_start = log
            .iter()
            .find(|r| r.arrived_ns > restarted_at)
            .map_or(restarted_at, |r| r.arrived_ns);
        let (restart, restart_429) = window(&log, after_start, after_start + min);
        println!(
            "discovery: limits={limits:?}/min unannounced, default 60/min, processes={processes}: \
             minutes 0-3 {early:.1}% of capacity ({early_429:.2}% 429s); \
             minutes 3-{minutes} {steady:.1}% ({steady_429:.2}% 429s); \
             first minute after a restart {restart:.1}% ({restart_429:.2}% 429s)"
        );
        db.finish().await;
    });
}
