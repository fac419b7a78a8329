//! Completion events inside PostgreSQL: `LISTEN genq_job_done` hears every
//! job that reaches a final state, once, with its id, state and queue.

use sqlx::postgres::PgListener;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

use genq::InputRef;
use genq::job::NewJob;
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{count_state, wait_until};

#[tokio::test]
async fn every_final_state_is_announced_once_on_genq_job_done() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let mut listener = PgListener::connect_with(&rig.db.pool).await.unwrap();
    listener.listen("genq_job_done").await.unwrap();

    let submit = |job: NewJob| {
        let pool = rig.db.pool.clone();
        async move { genq::submit(&pool, &job).await.unwrap().id }
    };
    let ok = submit(NewJob::new("a red fox")).await;
    let refused = submit(NewJob {
        max_attempts: Some(1),
        ..NewJob::new("something FORBIDDEN")
    })
    .await;
    // Fails with its input job, by the database's trigger, not a worker.
    let chained = submit(NewJob {
        inputs: vec![InputRef::from_job(refused, 0)],
        ..NewJob::new("the same, in blue")
    })
    .await;
    let later = submit(NewJob {
        run_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        queue: Some("later".into()),
        ..NewJob::new("tomorrow's fox")
    })
    .await;

    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 2).await;
    wait_until(Duration::from_secs(30), "three jobs to end", || async {
        count_state(&rig.db.pool, "succeeded").await + count_state(&rig.db.pool, "failed").await
            == 3
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    genq::store::inspect::cancel(&rig.db.pool, later)
        .await
        .unwrap();

    let mut heard = BTreeSet::new();
    while heard.len() < 4 {
        let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a completion event within 10 s")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(note.payload()).unwrap();
        let id: Uuid = event["id"].as_str().unwrap().parse().unwrap();
        let entry = (
            id,
            event["state"].as_str().unwrap().to_string(),
            event["queue"].as_str().unwrap().to_string(),
        );
        assert!(heard.insert(entry.clone()), "heard twice: {entry:?}");
    }
    let want: BTreeSet<(Uuid, String, String)> = [
        (ok, "succeeded", "default"),
        (refused, "failed", "default"),
        (chained, "failed", "default"),
        (later, "cancelled", "later"),
    ]
    .into_iter()
    .map(|(id, state, queue)| (id, state.to_string(), queue.to_string()))
    .collect();
    assert_eq!(heard, want);
    // Nothing more: each job is announced once.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_err(),
        "an extra event"
    );
}
