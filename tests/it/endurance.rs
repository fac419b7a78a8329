//! Three `genq worker` processes over five keys for a minute and a half,
//! every worker restarted halfway while a key cools down. Four keys have
//! their limits configured right; the fifth is configured ten times too fast,
//! so the provider keeps answering it 429 with a Retry-After.
//!
//! - no correctly configured key is ever sent more than its limit, judged
//!   by the sim over every request it received (admitted or refused), and
//!   none of them sees a 429;
//! - only the misconfigured key sees 429s, and every 429 is honoured: no
//!   request comes inside a wait the sim announced, and no 429 follows
//!   another, before and after the restart;
//! - the restarted workers send nothing to the cooling key until the wait
//!   the sim announced ends (by the sim's clock), then use it again;
//! - every job succeeds exactly once.

use chrono::{DateTime, Utc};
use genq_sim::{RequestRecord, Sim, SimConfig, SimKey};
use genq_testkit::rig::{consecutive_429s, sim_instant_at};
use genq_testkit::{ChildGuard, TestDb, count_state, insert_jobs, wait_until};
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
    let (base_url, stop_sim) = genq_testkit::rig::serve_sim(&sim).await;

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
        .map(|_| genq_testkit::process::worker_process(&db.url, &base_url, &dir))
        .collect();

    // Halfway, restart every worker at a moment the slow key is cooling.
    wait_until(
        Duration::from_secs(120),
        "half the jobs to succeed",
        || async { count_state(&db.pool, "succeeded").await >= i64::from(JOBS / 2) },
    )
    .await;
    // The sim's own 429 to the slow key, with more than 3 s of its announced
    // wait still to run.
    let slow_id = genq_sim::key_id(slow);
    let (cooling, cooling_until): (RequestRecord, DateTime<Utc>) = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let open = sim.log().into_iter().rev().find_map(|r| {
                let ends = sim_instant_at(&r, r.retry_deadline_ns?);
                (r.key_id == slow_id && ends > Utc::now() + chrono::Duration::seconds(3))
                    .then_some((r, ends))
            });
            if let Some(open) = open {
                break open;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the slow key was never answered 429"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    stop_gracefully(workers);
    let workers: Vec<ChildGuard> = (0..WORKERS)
        .map(|_| genq_testkit::process::worker_process(&db.url, &base_url, &dir))
        .collect();
    let restarted_at = Utc::now();
    assert!(
        restarted_at < cooling_until,
        "the test proves nothing: the workers restarted at {restarted_at}, after the wait ended at {cooling_until}"
    );

    wait_until(Duration::from_secs(180), "every job to succeed", || async {
        count_state(&db.pool, "succeeded").await == i64::from(JOBS)
    })
    .await;
    stop_gracefully(workers);
    stop_sim.cancel();

    let log = sim.log();
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
    let slow_log: Vec<_> = log
        .iter()
        .filter(|r| r.key_id == slow_id)
        .cloned()
        .collect();
    assert_eq!(
        consecutive_429s(&slow_log),
        0,
        "a Retry-After was not honoured"
    );
    // Across the restart, by the sim's clock: nothing reached the slow key
    // from when the 429 it was cooling from was sent until the wait that 429
    // announced was over, and the key served again after it.
    let cooling_ends = cooling.retry_deadline_ns.unwrap();
    let after: Vec<(u64, u16)> = slow_log
        .iter()
        .filter(|r| r.arrived_ns > cooling.sent_ns.unwrap())
        .map(|r| (r.arrived_ns, r.status))
        .collect();
    assert!(
        after.iter().all(|&(at, _)| at >= cooling_ends),
        "restarted workers used the key before the wait ended at {cooling_ends} ns: {after:?}"
    );
    assert!(
        after.iter().any(|&(_, status)| status == 200),
        "the slow key never served again after its wait: {after:?}"
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
