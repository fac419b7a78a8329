//! Two `genq worker` processes share three keys through the buckets in
//! Postgres: with limits configured right, the provider never answers 429
//! and no key is ever sent more than its limit allows (the sim's witness over
//! every request it received, refused or not).

use genq_sim::{Sim, SimConfig, SimKey};
use genq_testkit::{TestDb, count_state, insert_jobs, wait_until};
use std::time::Duration;

#[tokio::test]
async fn two_processes_sharing_three_keys_stay_within_every_limit() {
    let db = TestDb::new().await;
    let secrets = ["sk-one", "sk-two", "sk-three"];
    let sim = Sim::new(SimConfig {
        keys: secrets
            .iter()
            .map(|s| SimKey {
                burst: Some(2),
                ..SimKey::new(*s, 120)
            })
            .collect(),
        ..SimConfig::default()
    });
    let (base_url, stop) = genq_testkit::rig::serve_sim(&sim).await;

    let dir = std::env::temp_dir().join(format!("genq-shared-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys_file = dir.join("keys.toml");
    let mut toml = String::new();
    for (i, s) in secrets.iter().enumerate() {
        toml.push_str(&format!(
            "[[keys]]\nname = \"k{i}\"\nsecret = \"{s}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 120\nburst = 2\n"
        ));
    }
    std::fs::write(&keys_file, toml).unwrap();

    insert_jobs(&db.pool, 36, serde_json::json!({})).await;
    let workers: Vec<_> = (0..2)
        .map(|_| genq_testkit::process::worker_process(&db.url, &base_url, &dir))
        .collect();
    wait_until(Duration::from_secs(90), "36 jobs to succeed", || async {
        count_state(&db.pool, "succeeded").await == 36
    })
    .await;
    drop(workers);
    stop.cancel();

    let stats = sim.stats();
    assert_eq!(stats.total.ok, 36);
    assert_eq!(stats.total.rate_limited, 0, "{stats:?}");
    // Over every request the sim received, not just those it admitted.
    assert_eq!(sim.windows_over_limit(), Default::default(), "{stats:?}");
    // Both processes did work.
    let workers: i64 = sqlx::query_scalar("SELECT count(DISTINCT worker) FROM genq.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
