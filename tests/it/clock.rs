//! Waits judged from the provider's side, by its own log: after a 429, no
//! request reaches that key before the wait the 429 announced has passed,
//! counted from when the sim sent it, even when every worker is killed and
//! restarted during the wait, and even when workers' clocks are off by
//! 30 s (libfaketime, Debian package `faketime`), since every deadline
//! other replicas read comes from the database's clock.

use genq_sim::{RetryHeader, Sim, SimConfig, SimKey};
use genq_testkit::process::genq;
use genq_testkit::rig::{consecutive_429s, serve_sim, sim_id, sim_instant_at};
use genq_testkit::{ChildGuard, TestDb, count_state, insert_jobs, wait_until};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// `genq worker` over `dir/keys.toml`, its wall clock shifted by `skew`
/// (e.g. "+30s") by libfaketime when given. The library is preloaded into
/// genq itself (not through the `faketime` wrapper, whose child would
/// outlive a kill).
fn worker(db: &TestDb, base_url: &str, dir: &Path, skew: Option<&str>) -> ChildGuard {
    let mut cmd = genq(dir);
    if let Some(skew) = skew {
        let lib = libfaketime().expect("libfaketime");
        cmd.env("LD_PRELOAD", lib)
            .env("FAKETIME", skew)
            // Timers run on the real monotonic clock; only the wall clock is off.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    cmd.args(["worker", "--concurrency", "4", "--poll-ms", "200"])
        .env("DATABASE_URL", &db.url)
        .env("OPENAI_BASE_URL", base_url)
        .env("GENQ_KEYS_FILE", dir.join("keys.toml"))
        .env("GENQ_OUTPUT_DIR", dir.join("out"))
        .env("GENQ_LEASE_SECS", "5")
        .env("GENQ_REAP_MS", "500")
        .env_remove("OPENAI_API_KEYS")
        .env_remove("OPENAI_API_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    ChildGuard(cmd.spawn().expect("starting genq worker"))
}

/// Debian's libfaketime (package `faketime`), wherever the architecture put it.
fn libfaketime() -> Option<std::path::PathBuf> {
    let arch_dirs = std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|e| e.path());
    std::iter::once(std::path::PathBuf::from("/usr/lib"))
        .chain(arch_dirs)
        .map(|d| d.join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
}

fn scratch_dir(keys_toml: &str) -> std::path::PathBuf {
    let dir = genq_testkit::process::scratch_dir("clock");
    std::fs::write(dir.join("keys.toml"), keys_toml).unwrap();
    dir
}

/// libfaketime is installed by `.ci/run`; elsewhere the skew test says
/// what to install rather than pass without running.
fn faketime_available() -> bool {
    let found = libfaketime().is_some();
    if !found && std::env::var_os("CI").is_some() {
        panic!("libfaketime is missing: apt-get install faketime");
    }
    found
}

#[tokio::test]
async fn a_429_wait_is_honoured_across_killed_and_restarted_workers() {
    let db = TestDb::new().await;
    // Two requests a minute: a second one soon after the first is answered
    // 429 with a wait of about 30 s. genq is told 60 a minute.
    let sim = Sim::new(SimConfig {
        keys: vec![SimKey {
            send_ratelimit_headers: false,
            ..SimKey::new("sk-slow", 2)
        }],
        ..SimConfig::default()
    });
    let (base_url, stop_sim) = serve_sim(&sim).await;
    let dir = scratch_dir(
        "[[keys]]\nname = \"slow\"\nsecret = \"sk-slow\"\n[keys.limits.\"*\"]\nrequests_per_minute = 60\n",
    );
    insert_jobs(&db.pool, 2, json!({})).await;
    let first = [
        worker(&db, &base_url, &dir, None),
        worker(&db, &base_url, &dir, None),
    ];
    let key = sim_id("sk-slow");
    wait_until(Duration::from_secs(20), "a 429", || async {
        sim.log()
            .iter()
            .any(|r| r.key_id == key && r.status == 429 && r.retry_deadline_ns.is_some())
    })
    .await;
    let announced = sim.log().iter().find(|r| r.status == 429).unwrap().clone();
    assert!(announced.retry_after_ms.unwrap() >= 25_000, "{announced:?}");
    // The end of the wait the sim announced, on its clock and as a wall time.
    let deadline_ns = announced.retry_deadline_ns.unwrap();
    let deadline = sim_instant_at(&announced, deadline_ns);
    // Every worker dies during the wait (SIGKILL: no cleanup), new ones
    // start, and more jobs are due at once. The kill comes once genq has
    // recorded the cooldown: a 429 whose answer dies with the only process
    // that read it cannot be honoured by anyone.
    wait_until(
        Duration::from_secs(10),
        "genq to record the cooldown",
        || async {
            sqlx::query_scalar::<_, bool>(
            "SELECT coalesce(cooldown_until > now(), false) FROM genq.api_keys WHERE id = 'slow'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
        },
    )
    .await;
    drop(first);
    let _second = [
        worker(&db, &base_url, &dir, None),
        worker(&db, &base_url, &dir, None),
    ];
    insert_jobs(&db.pool, 2, json!({})).await;
    let last_due: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(run_at) FROM genq.jobs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        last_due < deadline - chrono::Duration::seconds(5),
        "the test proves nothing: the new jobs came due at {last_due}, the wait ends at {deadline}"
    );
    wait_until(
        Duration::from_secs(60),
        "a request after the wait",
        || async {
            sim.log()
                .iter()
                .any(|r| r.key_id == key && r.status == 200 && r.arrived_ns > deadline_ns)
        },
    )
    .await;
    // By the sim's clock: nothing reached the key between the 429 and the
    // end of the wait it announced; the waiting jobs ran after it.
    let sent_ns = announced.sent_ns.unwrap();
    let seen: Vec<(u64, Option<u64>, u16)> = sim
        .log()
        .iter()
        .filter(|r| r.key_id == key)
        .map(|r| (r.arrived_ns, r.sent_ns, r.status))
        .collect();
    assert!(
        seen.iter()
            .all(|&(at, _, _)| at <= sent_ns || at >= deadline_ns),
        "requests after the 429 was sent at {sent_ns} ns, inside the wait that ended at {deadline_ns} ns: {seen:?}"
    );
    // From when it sent each 429 to the end of its longest hint: nothing early.
    assert_eq!(sim.early_after_429(&key), Vec::<Duration>::new());
    assert_eq!(consecutive_429s(&sim.log()), 0);
    stop_sim.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn workers_with_skewed_clocks_never_send_inside_a_cooldown_and_none_starves() {
    if !faketime_available() {
        eprintln!("skipped: install libfaketime (Debian package faketime) to run this test");
        return;
    }
    let db = TestDb::new().await;
    // Key a is configured right; key b is configured 10x too fast, so it is
    // answered 429 with an HTTP-date Retry-After, the form a skewed clock
    // would misread.
    let sim = Sim::new(SimConfig {
        keys: vec![
            SimKey {
                send_ratelimit_headers: false,
                ..SimKey::new("sk-a", 40)
            },
            SimKey {
                send_ratelimit_headers: false,
                retry_header: RetryHeader::RetryAfterHttpDate,
                ..SimKey::new("sk-b", 6)
            },
        ],
        ..SimConfig::default()
    });
    let (base_url, stop_sim) = serve_sim(&sim).await;
    let dir = scratch_dir(
        "[[keys]]\nname = \"a\"\nsecret = \"sk-a\"\n[keys.limits.\"*\"]\nrequests_per_minute = 40\n\
         [[keys]]\nname = \"b\"\nsecret = \"sk-b\"\n[keys.limits.\"*\"]\nrequests_per_minute = 60\n",
    );
    let jobs = 24;
    insert_jobs(&db.pool, jobs, json!({})).await;
    let _workers = [
        worker(&db, &base_url, &dir, None),
        worker(&db, &base_url, &dir, Some("+30s")),
        worker(&db, &base_url, &dir, Some("-30s")),
    ];
    wait_until(Duration::from_secs(90), "every job", || async {
        count_state(&db.pool, "succeeded").await == i64::from(jobs)
    })
    .await;
    let log = sim.log();
    assert!(
        log.iter().any(|r| r.status == 429),
        "key b was never rate limited: the test proves nothing"
    );
    for key in ["sk-a", "sk-b"] {
        assert_eq!(
            sim.early_after_429(&sim_id(key)),
            Vec::<Duration>::new(),
            "{key}"
        );
    }
    assert_eq!(consecutive_429s(&log), 0);
    let workers: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT worker) FROM genq.attempts WHERE outcome = 'succeeded'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(workers, 3, "a worker starved");
    stop_sim.cancel();
    let _ = std::fs::remove_dir_all(dir);
}
