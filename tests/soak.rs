//! Three `genq worker` processes over five keys for a minute and a half,
//! every worker restarted halfway while a key cools down. Four keys have
//! their limits configured right; the fifth is configured ten times too fast,
//! so the provider keeps answering it 429 with a Retry-After.
//!
//! - no key ever goes over its limit (the sim's own count of 200s that broke it);
//! - only the misconfigured key sees 429s, and every 429 is honoured: the
//!   next request on that key is a 200, before and after the restart;
//! - the restarted workers send nothing to the cooling key until its
//!   persisted cooldown ends;
//! - every job succeeds exactly once.

mod common;

use chrono::{DateTime, Utc};
use common::{ChildGuard, TestDb, count_state, insert_jobs, wait_until};
use genq::sim::{Sim, SimConfig, SimKey};
use std::process::Command;
use std::time::Duration;

const WORKERS: usize = 3;
const JOBS: i32 = 600;

/// SIGTERM, then wait: the graceful stop an orchestrator does.
fn stop_gracefully(workers: Vec<ChildGuard>) {
    for w in &workers {
        Command::new("kill")
            .args(["-TERM", &w.0.id().to_string()])
            .status()
            .unwrap();
    }
    for mut w in workers {
        let status = w.0.wait().unwrap();
        assert!(status.success(), "worker exited with {status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_over_five_keys_stay_within_limits_across_a_restart() {
    let db = TestDb::new().await;
    let good = ["sk-soak-0", "sk-soak-1", "sk-soak-2", "sk-soak-3"];
    let slow = "sk-soak-slow";
    let mut sim_keys: Vec<SimKey> = good
        .iter()
        .map(|s| SimKey {
            burst: Some(2),
            ..SimKey::new(*s, 120)
        })
        .collect();
    sim_keys.push(SimKey {
        send_ratelimit_headers: false,
        ..SimKey::new(slow, 6)
    });
    let sim = Sim::new(SimConfig {
        keys: sim_keys,
        ..SimConfig::default()
    });
    let (base_url, stop_sim) = common::rig::serve_sim(&sim).await;

    let dir = std::env::temp_dir().join(format!("genq-soak-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = String::new();
    for (i, s) in good.iter().enumerate() {
        toml.push_str(&format!(
            "[[keys]]\nname = \"k{i}\"\nsecret = \"{s}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 120\nburst = 2\n\n"
        ));
    }
    // Ten times what the provider allows: it will answer 429 with Retry-After.
    toml.push_str(&format!(
        "[[keys]]\nname = \"slow\"\nsecret = \"{slow}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 60\n"
    ));
    std::fs::write(dir.join("keys.toml"), toml).unwrap();

    insert_jobs(&db.pool, JOBS, serde_json::json!({})).await;
    let workers: Vec<ChildGuard> = (0..WORKERS)
        .map(|_| common::rig::worker_process(&db.url, &base_url, &dir))
        .collect();

    // Halfway, restart every worker at a moment the slow key is cooling.
    wait_until(
        Duration::from_secs(120),
        "half the jobs to succeed",
        || async { count_state(&db.pool, "succeeded").await >= i64::from(JOBS / 2) },
    )
    .await;
    let cooling_until: DateTime<Utc> = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let until: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT cooldown_until FROM genq.api_keys
                  WHERE id = 'slow' AND cooldown_until > now() + interval '3 s'",
            )
            .fetch_optional(&db.pool)
            .await
            .unwrap();
            if let Some(until) = until {
                break until;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the slow key never cooled down"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    stop_gracefully(workers);
    let restarted_at = Utc::now();
    let workers: Vec<ChildGuard> = (0..WORKERS)
        .map(|_| common::rig::worker_process(&db.url, &base_url, &dir))
        .collect();

    wait_until(Duration::from_secs(180), "every job to succeed", || async {
        count_state(&db.pool, "succeeded").await == i64::from(JOBS)
    })
    .await;
    stop_gracefully(workers);
    stop_sim.cancel();

    let stats = sim.stats();
    assert_eq!(
        stats.limit_exceeded, 0,
        "a key went over its limit: {stats:?}"
    );
    let log = sim.log();
    let slow_id = genq::sim::key_id(slow);
    // Over every request received: the keys configured right were never
    // sent too much, and the misconfigured one never inside a 429's wait.
    let over = sim.windows_over_limit();
    assert!(
        over.keys().all(|k| *k == slow_id),
        "a correctly configured key was sent more than its limit: {over:?}"
    );
    assert_eq!(sim.early_after_429(&slow_id), Vec::<Duration>::new());
    let limited: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert!(
        limited.iter().all(|r| r.key_id == slow_id),
        "only the misconfigured key may see 429s: {limited:?}"
    );
    assert!(
        !limited.is_empty(),
        "the misconfigured key should have been answered 429"
    );
    let slow_log: Vec<_> = log.iter().filter(|r| r.key_id == slow_id).collect();
    for pair in slow_log.windows(2) {
        assert!(
            !(pair[0].status == 429 && pair[1].status == 429),
            "a Retry-After was not honoured: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let early: Vec<_> = slow_log
        .iter()
        .filter(|r| r.at > restarted_at && r.at < cooling_until)
        .collect();
    assert!(
        early.is_empty(),
        "restarted workers used the key before its cooldown ended at {cooling_until}: {early:?}"
    );

    let (succeeded_once, twice, workers_seen): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n > 1),
                (SELECT count(DISTINCT worker) FROM genq.attempts)
           FROM (SELECT job_id, count(*) AS n FROM genq.attempts
                  WHERE outcome = 'succeeded' GROUP BY job_id) s",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((succeeded_once, twice), (i64::from(JOBS), 0));
    assert_eq!(
        workers_seen,
        2 * WORKERS as i64,
        "every worker of both generations worked"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
