//! Limits shared beyond one key, judged by the sim's own witness over
//! every request it received: keys the provider's headers show to share a
//! project share its budget, and a daily cap is used to its count and no
//! further.

use genq_sim::{SimConfig, SimKey};
use genq_testkit::rig::{Rig, sim_id};
use genq_testkit::{count_state, insert_jobs, wait_until};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn keys_of_one_project_found_by_headers_share_its_budget() {
    // The project allows 30 a minute for both keys; each key is configured
    // as if it had 30 of its own, and no account is configured.
    let key = |secret: &str| SimKey {
        organization: Some("org-sim".into()),
        project: Some("proj_shared".into()),
        send_ratelimit_headers: false,
        ..SimKey::new(secret, 30)
    };
    let rig = Rig::with_config(SimConfig {
        keys: vec![key("sk-p1"), key("sk-p2")],
        ..SimConfig::default()
    })
    .await;
    let file = r#"
        [[keys]]
        name = "p1"
        secret = "sk-p1"
        [keys.limits."*"]
        requests_per_minute = 30
        [[keys]]
        name = "p2"
        secret = "sk-p2"
        [keys.limits."*"]
        requests_per_minute = 30
    "#;
    let keys = genq::keys::parse_keys_file(file, |_| None).unwrap();
    let (worker, stop) = rig.worker(keys, 4).await;
    insert_jobs(&rig.db.pool, 8, json!({})).await;
    wait_until(Duration::from_secs(30), "every job", || async {
        count_state(&rig.db.pool, "succeeded").await == 8
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let arrivals: Vec<(u64, String, u16)> = rig
        .sim
        .log()
        .iter()
        .map(|r| (r.arrived_ns / 1_000_000, r.key_id.clone(), r.status))
        .collect();
    assert_eq!(
        rig.sim.windows_over_limit(),
        Default::default(),
        "a key or the project was sent more than its limit: {arrivals:?}"
    );
    assert_eq!(rig.sim.stats().total.rate_limited, 0);
    let listed = genq::store::keys::list(&rig.db.pool).await.unwrap();
    for key in &listed {
        assert_eq!(
            (key.account.as_deref(), key.account_source.as_deref()),
            (Some("org-sim/proj_shared"), Some("provider headers")),
            "{}",
            key.id
        );
    }
    // Both keys did work.
    assert!(!rig.log_for(&sim_id("sk-p1")).is_empty() && !rig.log_for(&sim_id("sk-p2")).is_empty());
}

#[tokio::test]
async fn a_daily_cap_is_used_to_its_count_and_the_rest_wait() {
    let rig = Rig::with_config(SimConfig {
        keys: vec![SimKey {
            requests_per_day: Some(20),
            ..SimKey::new("sk-daily", 600)
        }],
        day_window_secs: 30,
        ..SimConfig::default()
    })
    .await;
    let file = r#"
        [[keys]]
        name = "d"
        secret = "sk-daily"
        [keys.limits."*"]
        requests_per_minute = 600
        requests_per_day = 20
        daily_window_secs = 30
    "#;
    let keys = genq::keys::parse_keys_file(file, |_| None).unwrap();
    let (worker, stop) = rig.worker(keys, 4).await;
    insert_jobs(&rig.db.pool, 30, json!({})).await;
    // Well inside the day even on a loaded machine: the window is 30 s.
    wait_until(Duration::from_secs(25), "the day's 20", || async {
        count_state(&rig.db.pool, "succeeded").await == 20
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count_state(&rig.db.pool, "succeeded").await, 20);
    assert_eq!(
        count_state(&rig.db.pool, "queued").await,
        10,
        "the rest wait"
    );
    assert_eq!(rig.sim.log().len(), 20, "nothing was sent past the cap");
    wait_until(Duration::from_secs(45), "the next day's 10", || async {
        count_state(&rig.db.pool, "succeeded").await == 30
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(count_state(&rig.db.pool, "failed").await, 0);
    assert_eq!(rig.sim.stats().total.rate_limited, 0);
}
