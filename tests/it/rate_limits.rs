//! The real provider path, through async-openai against `genq sim` and real
//! PostgreSQL: 429s move jobs to other keys and cool the key for exactly the
//! provider's wait, cooldowns survive restarts, bad keys are disabled, job
//! faults fail the job, transient faults retry.

use chrono::{DateTime, Utc};
use genq::job::NewJob;
use genq::store::jobs;
use genq_sim::{KeyBehavior, RetryHeader, SimConfig, SimKey};
use genq_testkit::rig::{Rig, consecutive_429s, keys, sim_id, sim_instant_at};
use genq_testkit::{count_state, wait_until};
use std::time::Duration;

async fn submit(rig: &Rig, prompt: &str) -> uuid::Uuid {
    genq::submit::submit(&rig.db.pool, &NewJob::new(prompt))
        .await
        .unwrap()
        .id
}

async fn all_succeeded(rig: &Rig, n: i64, within: Duration) {
    wait_until(within, &format!("{n} jobs to succeed"), || async {
        count_state(&rig.db.pool, "succeeded").await == n
    })
    .await;
}

/// (key id, outcome, http status, retry_after_ms, finished_at) of every attempt.
async fn attempts(
    rig: &Rig,
) -> Vec<(
    Option<String>,
    String,
    Option<i32>,
    Option<i64>,
    DateTime<Utc>,
)> {
    sqlx::query_as("SELECT key_id, outcome, http_status, retry_after_ms, finished_at FROM genq.attempts ORDER BY id")
        .fetch_all(&rig.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_429_moves_the_job_to_another_key_at_once() {
    // Key a really allows 1 request a minute; genq does not know (no limit
    // configured, none announced in headers) and tries it twice.
    let quiet = |secret: &str, rpm| SimKey {
        send_ratelimit_headers: false,
        ..SimKey::new(secret, rpm)
    };
    let rig = Rig::new(vec![quiet("sk-a", 1), quiet("sk-b", 600)]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a"), ("b", "sk-b")]), 1).await;
    for i in 0..4 {
        submit(&rig, &format!("fox {i}")).await;
    }
    all_succeeded(&rig, 4, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();

    let a = rig.log_for(&sim_id("sk-a"));
    assert_eq!(
        a.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 429],
        "a is used once more, then cools"
    );
    let rows = attempts(&rig).await;
    let limited = rows
        .iter()
        .position(|r| r.1 == "rate_limited")
        .expect("one 429 recorded");
    let next = &rows[limited + 1];
    assert_eq!(
        (next.0.as_deref(), next.1.as_str()),
        (Some("b"), "succeeded")
    );
    assert!(
        next.4 - rows[limited].4 < chrono::Duration::seconds(2),
        "the job moved on at once"
    );
    assert!(
        rows[limited].3.unwrap() > 50_000,
        "the provider's ~60 s wait is recorded"
    );
    // Rate limits spend no attempts.
    let spent: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM genq.jobs")
        .fetch_all(&rig.db.pool)
        .await
        .unwrap();
    assert!(spent.iter().all(|&n| n == 1), "{spent:?}");
}

#[tokio::test]
async fn when_every_key_is_limited_jobs_wait_and_none_fails() {
    let quiet = |secret: &str| SimKey {
        send_ratelimit_headers: false,
        ..SimKey::new(secret, 30)
    };
    let rig = Rig::new(vec![quiet("sk-a"), quiet("sk-b")]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a"), ("b", "sk-b")]), 4).await;
    for i in 0..6 {
        submit(&rig, &format!("cat {i}")).await;
    }
    all_succeeded(&rig, 6, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(count_state(&rig.db.pool, "failed").await, 0);
    let stats = rig.sim.stats();
    assert!(
        stats.total.rate_limited > 0,
        "the keys were really limited: {stats:?}"
    );
    // genq learns these limits only from the 429s, so it may send too fast
    // before the first one; it must never come back inside an announced wait.
    for secret in ["sk-a", "sk-b"] {
        assert_eq!(
            rig.sim.early_after_429(&sim_id(secret)),
            Vec::<Duration>::new(),
            "{secret}"
        );
    }
    assert_eq!(consecutive_429s(&rig.sim.log()), 0);
    assert_eq!(stats.total.ok, 6, "exactly one successful request per job");
    let spent: i64 = sqlx::query_scalar("SELECT sum(attempts) FROM genq.jobs")
        .fetch_one(&rig.db.pool)
        .await
        .unwrap();
    assert_eq!(spent, 6, "429s spent no attempts");
}

#[tokio::test]
async fn every_retry_header_form_is_honored() {
    let forms = [
        RetryHeader::RetryAfterSeconds,
        RetryHeader::RetryAfterMs,
        RetryHeader::RetryAfterHttpDate,
        RetryHeader::ResetRequests,
        RetryHeader::None,
    ];
    let sim_keys: Vec<SimKey> = forms
        .iter()
        .enumerate()
        .map(|(i, form)| SimKey {
            retry_header: *form,
            send_ratelimit_headers: false,
            ..SimKey::new(format!("sk-{i}"), 30)
        })
        .collect();
    let rig = Rig::new(sim_keys).await;
    for (i, form) in forms.iter().enumerate() {
        let secret = format!("sk-{i}");
        let (worker, stop) = rig.worker(keys(&[(&format!("k{i}"), &secret)]), 2).await;
        for j in 0..3 {
            submit(&rig, &format!("form {i} job {j}")).await;
        }
        all_succeeded(&rig, 3 * (i as i64 + 1), Duration::from_secs(60)).await;
        stop.cancel();
        worker.await.unwrap();

        // Judged by the sim alone: every 429 it sent announced a wait, nothing
        // reached the key before that wait (counted from when the 429 was sent)
        // was over, and no 429 followed another on the key.
        let id = sim_id(&secret);
        let log = rig.log_for(&id);
        let limited: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
        assert!(
            !limited.is_empty(),
            "{form:?}: genq's default rate should have hit the 30/min limit"
        );
        assert!(
            limited
                .iter()
                .all(|r| r.retry_deadline_ns.is_some() && r.retry_after_ms.is_some()),
            "{form:?}: a 429 without an announced wait: {limited:?}"
        );
        assert_eq!(
            rig.sim.early_after_429(&id),
            Vec::<Duration>::new(),
            "{form:?}: requests inside an announced wait"
        );
        assert_eq!(consecutive_429s(&log), 0, "{form:?}: {log:?}");
    }
}

#[tokio::test]
async fn a_cooldown_survives_a_worker_restart() {
    // 6 requests a minute: after one, the next is 10 s away. genq assumes 60.
    let rig = Rig::new(vec![SimKey {
        send_ratelimit_headers: false,
        ..SimKey::new("sk-slow", 6)
    }])
    .await;
    let slow_id = sim_id("sk-slow");
    let slow = keys(&[("slow", "sk-slow")]);
    let (worker, stop) = rig.worker(slow.clone(), 1).await;
    submit(&rig, "first").await;
    let second = submit(&rig, "second").await;
    wait_until(Duration::from_secs(20), "a 429", || async {
        rig.log_for(&slow_id)
            .iter()
            .any(|r| r.status == 429 && r.retry_deadline_ns.is_some())
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let limited = rig.log_for(&slow_id)[1].clone();
    assert_eq!(limited.status, 429, "{limited:?}");
    // The end of the wait the sim announced, on its own clock and as a wall time.
    let deadline_ns = limited.retry_deadline_ns.unwrap();
    let deadline = sim_instant_at(&limited, deadline_ns);
    let enqueued_at = jobs::get(&rig.db.pool, second)
        .await
        .unwrap()
        .unwrap()
        .run_at;

    // A new worker (a restart) while the key cools, and a job due at once.
    let (worker, stop) = rig.worker(slow, 1).await;
    let third = submit(&rig, "third").await;
    let third_due = jobs::get(&rig.db.pool, third)
        .await
        .unwrap()
        .unwrap()
        .run_at;
    assert!(
        third_due < deadline - chrono::Duration::seconds(2),
        "the test proves nothing: the job came due at {third_due}, the wait ends at {deadline}"
    );
    let key = &genq::store::keys::list(&rig.db.pool).await.unwrap()[0];
    assert_eq!(
        key.state,
        genq::keys::KeyState::Cooling,
        "the restart forgot the cooldown"
    );
    all_succeeded(&rig, 3, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();

    // By the sim's log: nothing reached the key between the 429 and the end of
    // the wait it announced, and the waiting jobs ran after it.
    let log = rig.log_for(&slow_id);
    let after: Vec<_> = log
        .iter()
        .filter(|r| r.arrived_ns > limited.sent_ns.unwrap())
        .map(|r| (r.arrived_ns, r.status))
        .collect();
    assert!(
        after.iter().all(|&(at, _)| at >= deadline_ns),
        "requests inside the wait that ended at {deadline_ns} ns: {after:?}"
    );
    assert_eq!(rig.sim.early_after_429(&slow_id), Vec::<Duration>::new());
    assert_eq!(consecutive_429s(&log), 0, "{after:?}");
    assert_eq!(rig.sim.stats().total.ok, 3);
    // Waiting cost nothing: no attempt was spent on the 429, and the job that
    // met it kept its place in line (its run_at).
    let job = jobs::get(&rig.db.pool, second).await.unwrap().unwrap();
    assert_eq!((job.attempts, job.run_at), (1, enqueued_at));
}

#[tokio::test]
async fn quota_and_unknown_keys_are_disabled_and_not_used_again() {
    let rig = Rig::new(vec![
        SimKey {
            behavior: KeyBehavior::InsufficientQuota,
            ..SimKey::new("sk-broke", 600)
        },
        SimKey::new("sk-good", 600),
    ])
    .await;
    let ring = keys(&[
        ("broke", "sk-broke"),
        ("stranger", "sk-unknown-to-sim"),
        ("good", "sk-good"),
    ]);
    let (worker, stop) = rig.worker(ring.clone(), 2).await;
    for i in 0..10 {
        submit(&rig, &format!("owl {i}")).await;
    }
    all_succeeded(&rig, 10, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(rig.log_for(&sim_id("sk-broke")).len(), 1);
    assert_eq!(rig.log_for(&sim_id("sk-unknown-to-sim")).len(), 1);
    let listed = genq::store::keys::list(&rig.db.pool).await.unwrap();
    let state = |id: &str| listed.iter().find(|k| k.id == id).unwrap().clone();
    assert_eq!(state("broke").state, genq::keys::KeyState::Disabled);
    assert!(state("broke").disabled_reason.unwrap().contains("quota"));
    assert_eq!(state("stranger").state, genq::keys::KeyState::Disabled);
    assert!(
        state("stranger")
            .disabled_reason
            .unwrap()
            .contains("HTTP 401")
    );
    assert_eq!(state("good").ok_count, 10);

    // A restart does not revive them; enabling does.
    let (worker, stop) = rig.worker(ring, 2).await;
    submit(&rig, "one more").await;
    all_succeeded(&rig, 11, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(rig.log_for(&sim_id("sk-broke")).len(), 1);
    assert!(
        genq::store::keys::enable(&rig.db.pool, "broke")
            .await
            .unwrap()
    );
    assert_eq!(
        genq::store::keys::list(&rig.db.pool).await.unwrap()[0].state,
        genq::keys::KeyState::Active
    );
}

#[tokio::test]
async fn a_content_policy_refusal_fails_the_job_once_and_spares_the_key() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600)]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 1).await;
    let id = submit(&rig, "something FORBIDDEN").await;
    wait_until(Duration::from_secs(20), "the job to fail", || async {
        count_state(&rig.db.pool, "failed").await == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let job = jobs::get(&rig.db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.attempts, 1);
    assert!(
        job.last_error.as_deref().unwrap().contains("safety system"),
        "{:?}",
        job.last_error
    );
    assert_eq!(rig.sim.log().len(), 1);
    let key = &genq::store::keys::list(&rig.db.pool).await.unwrap()[0];
    assert_eq!((key.state.as_str(), key.error_count), ("active", 0));
}

#[tokio::test]
async fn a_5xx_is_retried_with_an_attempt_spent_then_succeeds() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600)]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 1).await;
    let id = submit(&rig, "flaky [sim:500x2]").await;
    all_succeeded(&rig, 1, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();
    let job = jobs::get(&rig.db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.attempts, 3);
    let rows = attempts(&rig).await;
    assert_eq!(
        rows.iter().map(|r| (r.1.as_str(), r.2)).collect::<Vec<_>>(),
        [
            ("retry", Some(500)),
            ("retry", Some(500)),
            ("succeeded", Some(200))
        ]
    );
    // Exactly one provider request per attempt: async-openai's own retries are off.
    assert_eq!(rig.sim.log().len(), 3);
    let images = job.result.unwrap()["images"].as_array().unwrap().clone();
    let path = images[0]["path"].as_str().unwrap();
    assert!(
        std::fs::read(path)
            .unwrap()
            .starts_with(b"\x89PNG\r\n\x1a\n")
    );
}

#[tokio::test]
async fn configured_limits_mean_no_429s() {
    let rig = Rig::with_config(SimConfig {
        keys: vec![SimKey::new("sk-a", 120), SimKey::new("sk-b", 120)],
        ..SimConfig::default()
    })
    .await;
    let file = r#"
        [[keys]]
        name = "a"
        secret = "sk-a"
        [keys.limits."*"]
        requests_per_minute = 120
        [[keys]]
        name = "b"
        secret = "sk-b"
        [keys.limits."*"]
        requests_per_minute = 120
    "#;
    let ring = genq::keys::parse_keys_file(file, |_| None).unwrap();
    let (worker, stop) = rig.worker(ring, 8).await;
    for i in 0..12 {
        submit(&rig, &format!("bee {i}")).await;
    }
    all_succeeded(&rig, 12, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();
    let stats = rig.sim.stats();
    assert_eq!(stats.total.rate_limited, 0, "{stats:?}");
    // Over every request the sim received, refused or not.
    assert_eq!(rig.sim.windows_over_limit(), Default::default());
}

#[tokio::test]
async fn a_limit_announced_in_headers_is_learned_before_any_429() {
    // The sim announces x-ratelimit-limit-requests: 1; genq assumed 60/min.
    let rig = Rig::new(vec![SimKey::new("sk-a", 1), SimKey::new("sk-b", 600)]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a"), ("b", "sk-b")]), 1).await;
    for i in 0..4 {
        submit(&rig, &format!("wren {i}")).await;
    }
    all_succeeded(&rig, 4, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(rig.sim.stats().total.rate_limited, 0);
    let a = genq::store::keys::list(&rig.db.pool)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == "a")
        .unwrap();
    assert_eq!(a.limits, ["gpt-image-2=1.0/min (learned)"]);
}
