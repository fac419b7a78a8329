//! `--provider dry-run`: the real provider over a client that sends
//! nothing. Slots are reserved and successes booked exactly as for real
//! calls, and the provider never hears of it.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use genq::keys::Keyring;
use genq::output::OutputStore;
use genq::provider::images::{ImagesProvider, ImagesSettings};
use genq::provider::images_api::DryRun;
use genq::worker::{Worker, WorkerConfig};
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{count_state, insert_jobs, wait_until};

#[tokio::test]
async fn a_dry_run_books_every_job_on_its_key_and_sends_nothing() {
    let rig = Rig::new(vec![SimKey::new("sk-dry", 6000)]).await;
    let provider = ImagesProvider::new(
        rig.db.pool.clone(),
        DryRun,
        OutputStore::new(&rig.output),
        Keyring::new(keys(&[("dry", "sk-dry")]), 6000.0),
        ImagesSettings::default(),
    );
    provider.register_keys().await.unwrap();
    insert_jobs(&rig.db.pool, 5, serde_json::json!({"size": "1024x1024"})).await;
    let stop = CancellationToken::new();
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let worker = tokio::spawn(Worker::new(rig.db.pool.clone(), config, provider).run(stop.clone()));
    wait_until(Duration::from_secs(20), "5 dry-run jobs", || async {
        count_state(&rig.db.pool, "succeeded").await == 5
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    assert!(rig.sim.log().is_empty(), "a dry run sent a request");
    let results: Vec<serde_json::Value> = sqlx::query_scalar("SELECT result FROM genq.jobs")
        .fetch_all(&rig.db.pool)
        .await
        .unwrap();
    for result in results {
        assert_eq!(result["dry_run"], true, "{result}");
        assert_eq!(result["key_id"], "dry", "{result}");
    }
    // Booked like real successes: the key's counter (written in batches) and one attempt each.
    wait_until(Duration::from_secs(5), "the key's 5 successes", || async {
        sqlx::query_scalar::<_, i64>("SELECT ok_count FROM genq.api_keys WHERE id = 'dry'")
            .fetch_one(&rig.db.pool)
            .await
            .unwrap()
            == 5
    })
    .await;
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.attempts WHERE key_id = 'dry' AND outcome = 'succeeded'",
    )
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 5);
    assert!(
        !rig.output.exists() || std::fs::read_dir(&rig.output).unwrap().next().is_none(),
        "a dry run wrote images"
    );
}
