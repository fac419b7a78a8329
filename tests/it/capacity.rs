//! Capacity before claim: a job is claimed only when a key can serve its
//! model, so waiting writes nothing, order is kept, a model with no room
//! never blocks one with room, queues are served fairly, operators' key
//! changes reach every worker at once, and a job the client cannot send
//! never charges a key.

use genq::keys::ApiKey;
use genq::provider::noop::NoopProvider;
use genq::worker::{Worker, WorkerConfig};
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, sim_id};
use genq_testkit::{TestDb, count_state, insert_jobs, wait_until};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Keys from a keys file, each `(name, secret, model or "*", requests per minute)`.
fn keys(specs: &[(&str, &str, &str, f64)]) -> Vec<ApiKey> {
    let mut file = String::new();
    for (name, secret, model, rpm) in specs {
        file.push_str(&format!(
            "[[keys]]\nname = \"{name}\"\nsecret = \"{secret}\"\n"
        ));
        if *model != "*" {
            file.push_str(&format!("models = [\"{model}\"]\n"));
        }
        file.push_str(&format!(
            "[keys.limits.\"*\"]\nrequests_per_minute = {rpm}\n"
        ));
    }
    genq::keys::parse_keys_file(&file, |_| None).unwrap()
}

/// Every queued job's row version (`xmin` changes on every UPDATE).
async fn row_versions(pool: &sqlx::PgPool) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as("SELECT id, xmin::text FROM genq.jobs WHERE state = 'queued' ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn waiting_jobs_are_never_written_and_run_in_line_order() {
    // One key at 2 requests a minute: the first job goes at once, the next
    // 30 s later. 300 jobs wait meanwhile.
    let rig = Rig::new(vec![SimKey::new("sk-slow", 2)]).await;
    insert_jobs(&rig.db.pool, 300, json!({})).await;
    let before = row_versions(&rig.db.pool).await;
    let (worker, stop) = rig.worker(keys(&[("slow", "sk-slow", "*", 2.0)]), 4).await;
    wait_until(Duration::from_secs(10), "the first job", || async {
        count_state(&rig.db.pool, "succeeded").await == 1
    })
    .await;
    // Idle for a while with 299 due jobs and no room.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    worker.await.unwrap();

    let after = row_versions(&rig.db.pool).await;
    assert_eq!(after.len(), 299);
    let written = after
        .iter()
        .zip(&before[1..])
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        written, 0,
        "waiting jobs were written (claimed and put back)"
    );
    let first: (String, i32) =
        sqlx::query_as("SELECT prompt, attempts FROM genq.jobs WHERE state = 'succeeded'")
            .fetch_one(&rig.db.pool)
            .await
            .unwrap();
    let oldest: String = sqlx::query_scalar("SELECT prompt FROM genq.jobs ORDER BY seq LIMIT 1")
        .fetch_one(&rig.db.pool)
        .await
        .unwrap();
    assert_eq!(first, (oldest, 1), "the oldest job ran first, once");
    assert_eq!(rig.log_for(&sim_id("sk-slow")).len(), 1);
    assert_eq!(rig.sim.stats().total.rate_limited, 0);
}

#[tokio::test]
async fn a_model_without_room_never_blocks_one_with_room() {
    // Model A's only key allows 1 request a minute; model B's key 600.
    let rig = Rig::new(vec![SimKey::new("sk-a", 1), SimKey::new("sk-b", 600)]).await;
    let pool = &rig.db.pool;
    // A's jobs come first in line, B's after them.
    sqlx::query(
        "INSERT INTO genq.jobs (prompt, model)
         SELECT 'a ' || i, 'gpt-image-2' FROM generate_series(1, 50) i",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO genq.jobs (prompt, model)
         SELECT 'b ' || i, 'gpt-image-1-mini' FROM generate_series(1, 40) i",
    )
    .execute(pool)
    .await
    .unwrap();
    let (worker, stop) = rig
        .worker(
            keys(&[
                ("a", "sk-a", "gpt-image-2", 1.0),
                ("b", "sk-b", "gpt-image-1-mini", 600.0),
            ]),
            4,
        )
        .await;
    wait_until(Duration::from_secs(20), "every B job", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM genq.jobs WHERE model = 'gpt-image-1-mini' AND state = 'succeeded'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        n == 40
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let a_done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE model = 'gpt-image-2' AND state = 'succeeded'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(a_done, 1, "A's key allows one a minute");
    let a_touched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs
          WHERE model = 'gpt-image-2' AND state = 'queued' AND (attempts > 0 OR updated_at > created_at)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(a_touched, 0, "A's waiting jobs were written");
    assert_eq!(rig.sim.stats().total.rate_limited, 0);
    // B ran at its key's pace, not behind A: 40 jobs at 10/s take about 4 s.
    let b_log = rig.log_for(&sim_id("sk-b"));
    let span = b_log.last().unwrap().at - b_log.first().unwrap().at;
    assert!(span < chrono::Duration::seconds(8), "B took {span}");
}

#[tokio::test]
async fn a_busy_queue_never_starves_another() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO genq.jobs (queue, prompt, params)
         SELECT 'bulk', 'bulk ' || i, '{\"noop_delay_ms\": 20}' FROM generate_series(1, 400) i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO genq.jobs (queue, prompt, params)
         SELECT 'urgent', 'urgent ' || i, '{\"noop_delay_ms\": 20}' FROM generate_series(1, 10) i",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let config = WorkerConfig {
        queues: vec!["bulk".into(), "urgent".into()],
        concurrency: 4,
        claim_batch: 4,
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(db.pool.clone(), config, NoopProvider).run(stop.clone()));
    wait_until(Duration::from_secs(20), "the urgent queue", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM genq.jobs WHERE queue = 'urgent' AND state = 'succeeded'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        n == 10
    })
    .await;
    let bulk_done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE queue = 'bulk' AND state = 'succeeded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    stop.cancel();
    worker.await.unwrap();
    assert!(
        bulk_done < 100,
        "the urgent queue waited for {bulk_done} bulk jobs"
    );
}

#[tokio::test]
async fn enabling_a_cooling_key_wakes_every_worker_at_once() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600)]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a", "*", 600.0)]), 2).await;
    insert_jobs(&rig.db.pool, 1, json!({})).await;
    wait_until(Duration::from_secs(5), "the first job", || async {
        count_state(&rig.db.pool, "succeeded").await == 1
    })
    .await;
    // A cooldown of 10 minutes, as a long Retry-After would set it.
    genq::store::keys::cool_down(
        &rig.db.pool,
        "a",
        "a/gpt-image-2",
        Duration::from_secs(600),
        "HTTP 429: rate limited",
        None,
    )
    .await
    .unwrap();
    insert_jobs(&rig.db.pool, 3, json!({})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rig.log_for(&sim_id("sk-a")).len(), 1, "the key is cooling");

    assert!(genq::store::keys::enable(&rig.db.pool, "a").await.unwrap());
    wait_until(Duration::from_secs(3), "requests after enable", || async {
        count_state(&rig.db.pool, "succeeded").await == 4
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(rig.sim.stats().total.rate_limited, 0);
}

#[tokio::test]
async fn a_job_the_client_cannot_send_fails_without_charging_a_key() {
    // One request a minute: if the bad job used the slot, the good one would
    // wait a minute.
    let rig = Rig::new(vec![SimKey::new("sk-a", 1)]).await;
    let pool = &rig.db.pool;
    sqlx::query("INSERT INTO genq.jobs (prompt, params) VALUES ('bad', '{\"size\": \"3x3\"}')")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO genq.jobs (prompt) VALUES ('good')")
        .execute(pool)
        .await
        .unwrap();
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a", "*", 1.0)]), 1).await;
    wait_until(Duration::from_secs(10), "both jobs to finish", || async {
        count_state(pool, "failed").await == 1 && count_state(pool, "succeeded").await == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let bad: (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM genq.jobs WHERE prompt = 'bad'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(bad.1.contains("size"), "{}", bad.1);
    let key = &genq::store::keys::list(pool).await.unwrap()[0];
    assert_eq!((key.ok_count, key.error_count), (1, 0));
    assert_eq!(
        rig.log_for(&sim_id("sk-a")).len(),
        1,
        "only the good job was sent"
    );
}
