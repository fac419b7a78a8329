//! Memory: peak resident set of one `genq worker` process.
//!
//! - `provider=noop` (default): 100,000 queued jobs wait and drain. The
//!   worker never holds more jobs than its slots, so this should not grow
//!   with the queue.
//! - `provider=sim`: jobs asking for n = 10 large images (1536x1024, which
//!   `genq sim` sends as uncompressed PNGs: 6 MiB each, 84 MB of base64 per
//!   answer) through the real client, at concurrency 16. The worker's limit
//!   on image bytes in flight (`image_mib=`, GENQ_IMAGE_MIB_IN_FLIGHT)
//!   bounds what it holds.
//!
//! `cargo bench --bench memory -- [provider=noop|sim] [jobs=N] [concurrency=N] [image_mib=512]`

use genq_sim::{Sim, SimConfig, SimKey};
use genq_testkit::bench::{Scratch, WorkerProcess, arg};
use std::time::{Duration, Instant};

fn main() {
    let provider: String = arg("provider", "noop".to_string());
    let sim = provider == "sim";
    let jobs: i64 = arg("jobs", if sim { 48 } else { 100_000 });
    let concurrency: usize = arg("concurrency", if sim { 16 } else { 64 });
    let image_mib: u64 = arg("image_mib", 512);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("memory").await;
        let params = if sim {
            serde_json::json!({ "size": "1536x1024", "n": 10 })
        } else {
            serde_json::json!({})
        };
        sqlx::query(
            "INSERT INTO genq.jobs (prompt, params) SELECT 'memory ' || i, $2 FROM generate_series(1, $1) i",
        )
        .bind(jobs)
        .bind(&params)
        .execute(&db.pool)
        .await
        .unwrap();
        let dir = std::env::temp_dir().join(format!("genq-memory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let concurrency_arg = concurrency.to_string();
        let mut args = vec!["--concurrency", &concurrency_arg];
        let mut env = vec![
            ("GENQ_IMAGE_MIB_IN_FLIGHT", image_mib.to_string()),
            ("GENQ_OUTPUT_DIR", dir.join("out").display().to_string()),
        ];
        let mut served = None;
        if sim {
            let sim = Sim::new(SimConfig {
                keys: vec![SimKey::new("sk-memory", 100_000)],
                full_size_images: true,
                ..SimConfig::default()
            });
            let (base_url, stop) = genq_testkit::rig::serve_sim(&sim).await;
            env.push(("OPENAI_BASE_URL", base_url));
            env.push(("OPENAI_API_KEYS", "sk-memory".into()));
            env.push(("GENQ_DEFAULT_RPM", "100000".into()));
            served = Some(stop);
        } else {
            args.extend(["--provider", "noop"]);
        }
        let worker = WorkerProcess::start(&db.url, &args, &env);
        let start = Instant::now();
        let mut peak = 0;
        while db.count("succeeded").await + db.count("failed").await < jobs {
            peak = peak.max(worker.peak_rss_kib().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        peak = peak.max(worker.peak_rss_kib().unwrap_or(0));
        let elapsed = start.elapsed();
        let failed = db.count("failed").await;
        drop(worker);
        if let Some(stop) = served {
            stop.cancel();
        }
        db.finish().await;
        let _ = std::fs::remove_dir_all(&dir);
        let what = if sim {
            format!("{jobs} jobs of n=10 at 1536x1024 through genq sim, image budget {image_mib} MiB")
        } else {
            format!("{jobs} queued jobs, no-op provider")
        };
        println!(
            "memory: 1 worker process, {what}, drained in {:.1} s (concurrency {concurrency}, {failed} failed): peak RSS {:.1} MiB",
            elapsed.as_secs_f64(),
            peak as f64 / 1024.0
        );
    });
}
