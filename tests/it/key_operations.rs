//! Operators' key actions and the keys' own recovery, end to end against
//! `genq sim` and the real `genq keys` binary: enable sends to a cooling key
//! at once (its buckets freed, not just its state), disable keeps a key out
//! until enabled, reset keeps a key in rotation, a disabled key is re-tested
//! and comes back, and every place an operator looks says why jobs wait.

use genq::keys::Keyring;
use genq_sim::{KeyBehavior, SimKey};
use genq_testkit::rig::{Rig, keys, sim_id};
use genq_testkit::{count_state, insert_jobs, wait_until};
use serde_json::json;
use std::time::Duration;

/// Runs `genq keys <args>` (the real binary) against `db_url`; panics unless it succeeds.
fn genq_keys(db_url: &str, args: &[&str]) {
    let dir = genq_testkit::process::scratch_dir("keys");
    let out = genq_testkit::process::genq(&dir)
        .arg("keys")
        .args(args)
        .env("DATABASE_URL", db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "genq keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn enable_after_a_long_429_wait_sends_to_the_key_at_once() {
    // The provider allows 1 request a minute; genq assumes 60, so its second
    // request is answered 429 with a wait of about a minute.
    let rig = Rig::new(vec![SimKey {
        send_ratelimit_headers: false,
        ..SimKey::new("sk-slow", 1)
    }])
    .await;
    let slow_id = sim_id("sk-slow");
    let (worker, stop) = rig.worker(keys(&[("slow", "sk-slow")]), 1).await;
    insert_jobs(&rig.db.pool, 3, json!({})).await;
    wait_until(
        Duration::from_secs(20),
        "a 429 and its cooldown",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT coalesce(cooldown_until > now() + interval '30 s', false)
               FROM genq.api_keys WHERE id = 'slow'",
            )
            .fetch_one(&rig.db.pool)
            .await
            .unwrap()
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    let limited = rig.log_for(&slow_id).last().unwrap().clone();
    assert_eq!(limited.status, 429, "{limited:?}");
    let wait_ends_ns = limited.retry_deadline_ns.unwrap();
    let cooling_buckets: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.key_buckets WHERE scope = 'slow' AND cooldown_until > now()",
    )
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    assert!(
        cooling_buckets > 0,
        "the bucket never cooled: nothing to lift"
    );

    genq_keys(&rig.db.url, &["enable", "slow"]);
    // The key and every bucket it draws from are free at once.
    let key = &genq::store::keys::list(&rig.db.pool).await.unwrap()[0];
    assert_eq!((key.state.as_str(), key.cooldown_until), ("active", None));
    let held: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT id, cooldown_until IS NOT NULL, tat_requests > now()
           FROM genq.key_buckets WHERE scope = 'slow'",
    )
    .fetch_all(&rig.db.pool)
    .await
    .unwrap();
    assert!(
        !held.is_empty() && held.iter().all(|&(_, cooling, spent)| !cooling && !spent),
        "buckets still held back after enable (id, cooling, no room): {held:?}"
    );
    // A worker sends to the key at once, long before the announced wait ends
    // (the provider may still refuse it: the operator overrode the wait).
    let before = rig.log_for(&slow_id).len();
    let (worker, stop) = rig.worker(keys(&[("slow", "sk-slow")]), 1).await;
    wait_until(
        Duration::from_secs(10),
        "a request after enable",
        || async { rig.log_for(&slow_id).len() > before },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    let next = &rig.log_for(&slow_id)[before];
    assert!(
        next.arrived_ns + 30_000_000_000 < wait_ends_ns,
        "sent at {} ns, the wait ended at {wait_ends_ns} ns",
        next.arrived_ns
    );
}

#[tokio::test]
async fn a_key_disabled_by_an_operator_gets_nothing_until_enabled() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600), SimKey::new("sk-b", 600)]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a"), ("b", "sk-b")]), 2).await;
    // Both keys in use first: an operator takes a working key out.
    insert_jobs(&rig.db.pool, 4, json!({})).await;
    wait_until(Duration::from_secs(20), "both keys to serve", || async {
        count_state(&rig.db.pool, "succeeded").await == 4
            && !rig.log_for(&sim_id("sk-a")).is_empty()
            && !rig.log_for(&sim_id("sk-b")).is_empty()
    })
    .await;
    genq_keys(&rig.db.url, &["disable", "a", "--reason", "rotated out"]);
    let a_before = rig.log_for(&sim_id("sk-a")).len();
    insert_jobs(&rig.db.pool, 6, json!({})).await;
    wait_until(Duration::from_secs(20), "the jobs, on b", || async {
        count_state(&rig.db.pool, "succeeded").await == 10
    })
    .await;
    assert_eq!(
        rig.log_for(&sim_id("sk-a")).len(),
        a_before,
        "a disabled key was used"
    );
    let listed = genq::store::keys::list(&rig.db.pool).await.unwrap();
    let a = listed.iter().find(|k| k.id == "a").unwrap();
    assert_eq!(
        (a.state.as_str(), a.disabled_reason.as_deref()),
        ("disabled", Some("rotated out"))
    );
    genq_keys(&rig.db.url, &["enable", "a"]);
    insert_jobs(&rig.db.pool, 6, json!({})).await;
    wait_until(Duration::from_secs(20), "the next jobs", || async {
        count_state(&rig.db.pool, "succeeded").await == 16
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert!(
        rig.log_for(&sim_id("sk-a")).len() > a_before,
        "the enabled key was not used again"
    );
}

#[tokio::test]
async fn a_worker_started_with_a_disabled_key_serves_with_the_others() {
    // The first key was disabled before this worker ever used it (by an
    // operator, or by another replica's quota answer): it never answers, so
    // it must not hold the other new keys back as the one first request.
    let rig = Rig::new(vec![SimKey::new("sk-a", 600), SimKey::new("sk-b", 600)]).await;
    let provider = rig.provider(keys(&[("a", "sk-a"), ("b", "sk-b")]));
    provider.register_keys().await.unwrap();
    genq_keys(&rig.db.url, &["disable", "a", "--reason", "out of quota"]);
    insert_jobs(&rig.db.pool, 3, json!({})).await;
    let (worker, stop) = rig.worker_with(provider, 2).await;
    wait_until(Duration::from_secs(20), "the jobs, on b", || async {
        count_state(&rig.db.pool, "succeeded").await == 3
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert!(
        rig.log_for(&sim_id("sk-a")).is_empty(),
        "a disabled key was used"
    );
}

#[tokio::test]
async fn reset_never_drops_a_key_out_of_rotation() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600), SimKey::new("sk-b", 600)]).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a"), ("b", "sk-b")]), 2).await;
    insert_jobs(&rig.db.pool, 4, json!({})).await;
    wait_until(Duration::from_secs(10), "the first jobs", || async {
        count_state(&rig.db.pool, "succeeded").await == 4
    })
    .await;
    // Forgets what was learned about a's limits (its bucket goes).
    genq_keys(&rig.db.url, &["reset", "a"]);
    let a_before = rig.log_for(&sim_id("sk-a")).len();
    insert_jobs(&rig.db.pool, 20, json!({})).await;
    wait_until(Duration::from_secs(10), "the next jobs", || async {
        count_state(&rig.db.pool, "succeeded").await == 24
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let a_after = rig.log_for(&sim_id("sk-a")).len() - a_before;
    let b_after = rig.log_for(&sim_id("sk-b")).len();
    assert!(
        a_after >= 5,
        "key a served {a_after} of 20 jobs after the reset (b: {b_after})"
    );
}

#[tokio::test]
async fn a_disabled_key_is_retested_and_comes_back() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600)]).await;
    let keyring = Keyring::new(keys(&[("a", "sk-a")]), 600.0).with_retest(Duration::from_secs(2));
    let provider = rig.provider_from(keyring, Duration::from_secs(10));
    let (worker, stop) = rig.worker_with(provider, 2).await;
    // Disabled as a quota answer would, though the key works again by now.
    genq::store::keys::disable(&rig.db.pool, "a", "HTTP 429: insufficient_quota")
        .await
        .unwrap();
    insert_jobs(&rig.db.pool, 3, json!({})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(rig.log_for(&sim_id("sk-a")).len(), 0, "re-tested too soon");
    wait_until(
        Duration::from_secs(10),
        "the re-test and the jobs",
        || async { count_state(&rig.db.pool, "succeeded").await == 3 },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    let key = &genq::store::keys::list(&rig.db.pool).await.unwrap()[0];
    assert_eq!(
        (key.state.as_str(), key.disabled_reason.as_deref()),
        ("active", None)
    );
}

#[tokio::test]
async fn a_key_that_stays_bad_gets_one_retest_per_period_and_jobs_wait() {
    let rig = Rig::new(vec![SimKey {
        behavior: KeyBehavior::InsufficientQuota,
        ..SimKey::new("sk-broke", 600)
    }])
    .await;
    let every = Duration::from_secs(2);
    let keyring = Keyring::new(keys(&[("broke", "sk-broke")]), 600.0).with_retest(every);
    let provider = rig.provider_from(keyring, Duration::from_secs(10));
    let (worker, stop) = rig.worker_with(provider, 2).await;
    insert_jobs(&rig.db.pool, 3, json!({})).await;
    tokio::time::sleep(Duration::from_millis(7_000)).await;
    stop.cancel();
    worker.await.unwrap();
    let log = rig.log_for(&sim_id("sk-broke"));
    // The first call disables the key; then one re-test per 2 s at most.
    assert!(
        (2..=4).contains(&log.len()),
        "{} requests in 7 s",
        log.len()
    );
    for pair in log.windows(2) {
        let gap = (pair[1].at - pair[0].at).to_std().unwrap();
        assert!(gap >= every, "re-tests {gap:?} apart");
    }
    assert_eq!(
        count_state(&rig.db.pool, "queued").await,
        3,
        "jobs wait, none fails"
    );
}

#[tokio::test]
async fn why_jobs_wait_is_said_in_the_job_view_stats_and_metrics() {
    let rig = Rig::new(vec![SimKey {
        behavior: KeyBehavior::InsufficientQuota,
        ..SimKey::new("sk-broke", 600)
    }])
    .await;
    let (worker, stop) = rig.worker(keys(&[("broke", "sk-broke")]), 2).await;
    let id = genq::submit::submit(&rig.db.pool, &genq::job::NewJob::new("a fox"))
        .await
        .unwrap()
        .id;
    wait_until(
        Duration::from_secs(10),
        "the key to be disabled",
        || async {
            genq::store::keys::list(&rig.db.pool).await.unwrap()[0].state
                == genq::keys::KeyState::Disabled
        },
    )
    .await;
    let expected = "waiting: every key serving gpt-image-2 is disabled (quota); see genq keys list";
    let why = genq::store::keys::waiting_reason(&rig.db.pool, "gpt-image-2")
        .await
        .unwrap();
    assert_eq!(why.as_deref(), Some(expected));

    // The HTTP API's job view.
    let app = genq::api::router(genq::api::ApiState::new(rig.db.pool.clone(), None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let view: serde_json::Value = reqwest::get(format!("http://{addr}/v1/jobs/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["job"]["state"], "queued");
    assert_eq!(view["waiting"], expected);

    // genq.queue_stats and /metrics.
    let stats = genq::store::inspect::queue_stats(&rig.db.pool)
        .await
        .unwrap();
    let queued = stats
        .iter()
        .find(|s| s.state == genq::job::JobState::Queued)
        .unwrap();
    assert_eq!(queued.waiting.as_deref(), Some(expected));
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("genq_queue_waiting_jobs")
                && l.contains("reason=\"disabled\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );

    // `genq jobs show`.
    let dir = genq_testkit::process::scratch_dir("jobs-show");
    let out = genq_testkit::process::genq(&dir)
        .args(["jobs", "show", &id.to_string()])
        .env("DATABASE_URL", &rig.db.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(expected), "{text}");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_403_for_one_model_blocks_the_key_for_that_model_only() {
    let rig = Rig::new(vec![SimKey {
        forbidden_models: vec!["gpt-image-1.5".into()],
        ..SimKey::new("sk-unverified", 600)
    }])
    .await;
    let (worker, stop) = rig.worker(keys(&[("u", "sk-unverified")]), 2).await;
    let pool = &rig.db.pool;
    let submit = |model: &'static str| async move {
        let job = genq::job::NewJob {
            model: Some(model.into()),
            ..genq::job::NewJob::new("a fox")
        };
        genq::submit::submit(pool, &job).await.unwrap().id
    };
    let blocked = submit("gpt-image-1.5").await;
    wait_until(Duration::from_secs(10), "the 403", || async {
        !genq::store::keys::list(pool).await.unwrap()[0]
            .blocked_models
            .is_empty()
    })
    .await;
    let served = submit("gpt-image-2").await;
    wait_until(Duration::from_secs(10), "the other model's job", || async {
        count_state(pool, "succeeded").await == 1
    })
    .await;
    let key = &genq::store::keys::list(pool).await.unwrap()[0];
    assert_eq!(
        key.state,
        genq::keys::KeyState::Active,
        "the key still serves other models"
    );
    assert!(
        key.blocked_models[0].starts_with("gpt-image-1.5: HTTP 403"),
        "{:?}",
        key.blocked_models
    );
    let job = genq::store::jobs::get(pool, blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.state, job.attempts), (genq::job::JobState::Queued, 0));
    assert_eq!(
        genq::store::jobs::get(pool, served)
            .await
            .unwrap()
            .unwrap()
            .state,
        genq::job::JobState::Succeeded
    );
    let why = genq::store::keys::waiting_reason(pool, "gpt-image-1.5")
        .await
        .unwrap();
    assert_eq!(
        why.as_deref(),
        Some(
            "waiting: every key serving gpt-image-1.5 is disabled (forbidden for this model (403)); see genq keys list"
        )
    );
    // The model was asked for once: the block holds.
    let for_blocked = rig
        .sim
        .log()
        .iter()
        .filter(|r| r.model == "gpt-image-1.5")
        .count();
    assert_eq!(for_blocked, 1);
    // An operator's enable lifts the block (the sim still refuses, so it comes back).
    assert!(genq::store::keys::enable(pool, "u").await.unwrap());
    wait_until(
        Duration::from_secs(10),
        "a second try after enable",
        || async {
            rig.sim
                .log()
                .iter()
                .filter(|r| r.model == "gpt-image-1.5")
                .count()
                == 2
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
}
