//! Jobs that cannot be served now: fallback models take over when the
//! primary's wait is too long, and a job past its `expires_at` fails with a
//! clear error instead of waiting forever.

use chrono::Utc;
use genq::job::{JobState, NewJob};
use genq_sim::SimKey;
use genq_testkit::rig::Rig;
use genq_testkit::{count_state, wait_until};
use serde_json::json;
use std::time::Duration;

/// Key a serves gpt-image-2 at one request a minute; key b serves only gpt-image-1-mini.
fn keys() -> Vec<genq::keys::ApiKey> {
    let file = r#"
        [[keys]]
        name = "a"
        secret = "sk-a"
        models = ["gpt-image-2"]
        [keys.limits."*"]
        requests_per_minute = 1
        [[keys]]
        name = "b"
        secret = "sk-b"
        models = ["gpt-image-1-mini"]
        [keys.limits."*"]
        requests_per_minute = 600
    "#;
    genq::keys::parse_keys_file(file, |_| None).unwrap()
}

#[tokio::test]
async fn a_fallback_model_serves_the_job_when_the_primary_must_wait_too_long() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 1), SimKey::new("sk-b", 600)]).await;
    let (worker, stop) = rig.worker(keys(), 1).await;
    let first = genq::submit::submit(&rig.db.pool, &NewJob::new("first"))
        .await
        .unwrap()
        .id;
    wait_until(Duration::from_secs(20), "the first job", || async {
        count_state(&rig.db.pool, "succeeded").await == 1
    })
    .await;
    let job = NewJob {
        params: Some(json!({"fallback_models": ["gpt-image-1-mini"]})),
        ..NewJob::new("second")
    };
    let second = genq::submit::submit(&rig.db.pool, &job).await.unwrap().id;
    wait_until(Duration::from_secs(20), "the second job", || async {
        count_state(&rig.db.pool, "succeeded").await == 2
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let result = |id| {
        let pool = rig.db.pool.clone();
        async move {
            genq::store::jobs::get(&pool, id)
                .await
                .unwrap()
                .unwrap()
                .result
                .unwrap()
        }
    };
    assert_eq!(result(first).await["model"], "gpt-image-2");
    assert_eq!(
        (
            result(second).await["model"].clone(),
            result(second).await["key_id"].clone()
        ),
        (json!("gpt-image-1-mini"), json!("b"))
    );
    assert_eq!(rig.sim.stats().total.rate_limited, 0);
}

#[tokio::test]
async fn a_job_that_waits_past_its_deadline_fails_with_a_clear_error() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 1), SimKey::new("sk-b", 600)]).await;
    let (worker, stop) = rig.worker(keys(), 1).await;
    genq::submit::submit(&rig.db.pool, &NewJob::new("first"))
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), "the first job", || async {
        count_state(&rig.db.pool, "succeeded").await == 1
    })
    .await;
    let job = NewJob {
        expires_at: Some(Utc::now() + chrono::Duration::seconds(5)),
        ..NewJob::new("impatient")
    };
    let id = genq::submit::submit(&rig.db.pool, &job).await.unwrap().id;
    wait_until(Duration::from_secs(20), "the job to fail", || async {
        count_state(&rig.db.pool, "failed").await == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let job = genq::store::jobs::get(&rig.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Failed, 0));
    let error = job.last_error.unwrap();
    assert!(
        error.starts_with("expired at") && error.contains("waiting for capacity"),
        "{error}"
    );
    assert_eq!(
        rig.log_for(&genq_sim::key_id("sk-a")).len(),
        1,
        "no request was sent for the expired job"
    );
}
