//! Retention: old finished jobs and their attempts are pruned in batches by
//! one worker at a time; queued and running jobs are never touched.

use genq::store::jobs;
use genq_testkit::{TestDb, insert_jobs};
use std::time::Duration;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

#[tokio::test]
async fn old_finished_jobs_are_pruned_and_nothing_else() {
    let db = TestDb::new().await;
    insert_jobs(&db.pool, 40, serde_json::json!({})).await;
    // Ten each: succeeded 8 days ago, failed 8 days ago, failed 31 days ago,
    // succeeded just now; plus the queued and running ones left untouched.
    sqlx::query(
        "WITH n AS (SELECT id, row_number() OVER (ORDER BY id) AS i FROM genq.jobs)
         UPDATE genq.jobs j SET
            state = CASE WHEN n.i <= 10 OR n.i > 30 THEN 'succeeded' ELSE 'failed' END,
            finished_at = now() - CASE WHEN n.i <= 20 THEN interval '8 days'
                                       WHEN n.i <= 30 THEN interval '31 days' ELSE interval '1 minute' END
           FROM n WHERE j.id = n.id",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO genq.attempts (job_id, attempt, started_at, outcome) SELECT id, 1, now(), 'succeeded' FROM genq.jobs")
        .execute(&db.pool)
        .await
        .unwrap();
    insert_jobs(&db.pool, 5, serde_json::json!({})).await;
    sqlx::query(
        "UPDATE genq.jobs SET created_at = now() - interval '90 days' WHERE state = 'queued'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let held = jobs::claim(
        &db.pool,
        "w",
        &["default".to_string()],
        2,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(held.len(), 2);

    // Small batches: 7 at a time until done.
    let mut pruned = 0;
    while let Some(ids) = jobs::prune(&db.pool, WEEK, MONTH, 7).await.unwrap() {
        let n = ids.len();
        pruned += n;
        if n < 7 {
            break;
        }
    }
    assert_eq!(pruned, 20, "succeeded > 7 days and failed > 30 days");
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM genq.jobs GROUP BY state ORDER BY state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        [
            ("failed".into(), 10),
            ("queued".into(), 3),
            ("running".into(), 2),
            ("succeeded".into(), 10)
        ]
    );
    let orphans: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.attempts a WHERE NOT EXISTS (SELECT 1 FROM genq.jobs j WHERE j.id = a.job_id)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(orphans, 0);
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 20, "the pruned jobs' attempts went with them");
}

#[tokio::test]
async fn only_one_caller_prunes_at_a_time() {
    let db = TestDb::new().await;
    let mut tx = db.pool.begin().await.unwrap();
    let elected: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('genq.prune'))")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert!(elected);
    assert_eq!(
        jobs::prune(&db.pool, WEEK, MONTH, 100).await.unwrap(),
        None,
        "another caller holds the lock"
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        jobs::prune(&db.pool, WEEK, MONTH, 100).await.unwrap(),
        Some(Vec::new())
    );
}
