//! Real PostgreSQL restarts under load: `pg_ctl restart -m fast` and
//! `-m immediate` while `genq worker` processes are calling the sim.
//!
//! Each test starts a private cluster of its own, even when `DATABASE_URL`
//! is set: restarting a server other tests (or people) use is not allowed.
//!
//! What must hold afterwards:
//! - nothing lost: every job `succeeded`;
//! - nothing done twice: exactly one `succeeded` attempt per job in
//!   `genq.attempts`, and exactly one 200 from the provider per job (each
//!   prompt carries its job number, and the test counts the sim's answers
//!   per prompt);
//! - the workers keep running and work again after each restart;
//! - a key cooling before the restart keeps its persisted cooldown, and
//!   nothing reaches it before the end the provider announced.
//!
//! The cluster runs with `synchronous_commit = off` for speed; these tests
//! turn it back on for their database. genq's promise assumes a database
//! that keeps what it acknowledged: a server that forgets a committed
//! completion in a crash would rightly make that job run again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use chrono::{DateTime, Utc};
use genq_pg::{EmbeddedPg, ShutdownMode};
use genq_sim::{Sim, SimConfig, SimKey};
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;

use genq_testkit::{ChildGuard, wait_until};

const JOBS: i64 = 400;
const WORKERS: usize = 2;
const LEASE_SECS: u64 = 10;

/// A private cluster with `synchronous_commit` on for its `postgres`
/// database, migrated, and a pool on it.
async fn durable_cluster() -> (Arc<EmbeddedPg>, PgPool) {
    let pg = Arc::new(
        tokio::task::spawn_blocking(EmbeddedPg::start)
            .await
            .unwrap()
            .expect("starting a private PostgreSQL cluster"),
    );
    let admin = genq::db::connect(&pg.url(), 1).await.unwrap();
    sqlx::query("ALTER DATABASE postgres SET synchronous_commit = on")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let pool = genq::db::connect(&pg.url(), 4).await.unwrap();
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sync, "on", "new sessions commit durably");
    genq::store::migrate::run(&pool).await.expect("migrating");
    (pg, pool)
}

/// Restarts the cluster off the async threads (the sim must keep serving).
async fn restart(pg: &Arc<EmbeddedPg>, mode: ShutdownMode) {
    let pg = pg.clone();
    tokio::task::spawn_blocking(move || pg.restart(mode))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("pg_ctl restart -m {}: {e}", mode.as_pg_ctl()));
}

/// What the test sees of the sim's answers, and a gate that holds them.
#[derive(Default)]
struct Answers {
    /// (prompt, HTTP status) of every images request the sim answered.
    all: Mutex<Vec<(String, u16)>>,
    /// Successful (200) answers the gate is holding (or held) back from
    /// genq, by prompt.
    held: Mutex<Vec<String>>,
    /// While true, answers are held after the sim made them and before
    /// genq reads them: those calls are in flight for as long as it is closed.
    closed: tokio::sync::watch::Sender<bool>,
    /// While true, 429 answers are held the same way.
    hold_429s: tokio::sync::watch::Sender<bool>,
    /// 429 answers held so far.
    held_429s: std::sync::atomic::AtomicUsize,
}

impl Answers {
    fn close_gate(&self) {
        self.held.lock().unwrap().clear();
        self.closed.send_replace(true);
    }

    fn open_gate(&self) -> Vec<String> {
        self.closed.send_replace(false);
        self.held.lock().unwrap().clone()
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

/// Serves `sim` on loopback, noting the prompt and status of every answer
/// and holding answers while a gate is closed.
async fn serve_sim_noting_prompts(sim: &Sim) -> (String, Arc<Answers>, CancellationToken) {
    let answers: Arc<Answers> = Arc::default();
    let noted = answers.clone();
    let note = axum::middleware::from_fn(move |req: Request, next: Next| {
        let noted = noted.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let prompt = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["prompt"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let status = resp.status().as_u16();
            noted.all.lock().unwrap().push((prompt.clone(), status));
            let mut hold_429s = noted.hold_429s.subscribe();
            if status == 429 && *hold_429s.borrow_and_update() {
                noted
                    .held_429s
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = hold_429s.wait_for(|hold| !hold).await;
            }
            let mut closed = noted.closed.subscribe();
            if *closed.borrow_and_update() {
                if status == 200 {
                    noted.held.lock().unwrap().push(prompt);
                }
                let _ = closed.wait_for(|closed| !closed).await;
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let app = sim.router().layer(note);
    let shutdown = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    (base_url, answers, stop)
}

/// A `genq worker` process with a short lease, run from `dir` (so no
/// developer `.env` is read).
fn worker_process(db_url: &str, base_url: &str, dir: &std::path::Path) -> ChildGuard {
    ChildGuard(
        genq_testkit::process::worker_command(db_url, base_url, dir)
            .args(["--concurrency", "8", "--poll-ms", "100"])
            .args(["--reap-ms", "500", "--lease-secs", &LEASE_SECS.to_string()])
            .args(["--retry-base-ms", "100", "--retry-max-secs", "1"])
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap(),
    )
}

/// The persisted cooldown of the `slow` key: (api_keys, its bucket).
async fn slow_cooldown(pool: &PgPool) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    sqlx::query_as(
        "SELECT (SELECT cooldown_until FROM genq.api_keys WHERE id = 'slow'),
                (SELECT max(cooldown_until) FROM genq.key_buckets WHERE scope = 'slow')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until the slow key cools (key and bucket alike) for 6 s more, with
/// every 429 the sim sent it already booked by genq (so no answer in flight
/// moves the cooldown); returns the end of that cooldown.
async fn settled_cooldown_under_load(pool: &PgPool, sim: &Sim, slow_id: &str) -> DateTime<Utc> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (key, bucket) = slow_cooldown(pool).await;
        let booked_429s: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM genq.attempts WHERE key_id = 'slow' AND outcome = 'rate_limited'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let slow_log: Vec<_> = sim
            .log()
            .into_iter()
            .filter(|r| r.key_id == slow_id)
            .collect();
        let all_answered_and_booked = slow_log.iter().all(|r| r.sent_ns.is_some())
            && slow_log.iter().filter(|r| r.status == 429).count() as i64 == booked_429s;
        if let Some(until) = key
            && key == bucket
            && until - Utc::now() > chrono::TimeDelta::seconds(6)
            && all_answered_and_booked
        {
            return until;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow key never cooled for long, settled: \
             {key:?} {bucket:?} {booked_429s} {slow_log:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (prompt, state, locked_by, attempts, lease_expires_at) of a job.
type StuckJob = (String, String, Option<String>, i32, Option<DateTime<Utc>>);

/// Waits until every job succeeded; on timeout, names the jobs that did not
/// and who holds them.
async fn all_succeeded(pool: &PgPool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = 'succeeded'")
                .fetch_one(pool)
                .await
                .ok();
        if done == Some(JOBS) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let stuck: Vec<StuckJob> = sqlx::query_as(
                "SELECT prompt, state, locked_by, attempts, lease_expires_at FROM genq.jobs
                      WHERE state <> 'succeeded' ORDER BY prompt LIMIT 20",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            panic!(
                "{done:?} of {JOBS} jobs succeeded; not (prompt, state, locked_by, attempts, lease): {stuck:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One restart as the test saw it.
#[derive(Debug)]
struct Restart {
    mode: ShutdownMode,
    began: DateTime<Utc>,
    ended: DateTime<Utc>,
    cooling_until: DateTime<Utc>,
    /// Prompts whose answers were held back across the restart.
    in_flight: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_ride_out_fast_and_immediate_postgres_restarts_under_load() {
    let (pg, pool) = durable_cluster().await;
    let good = ["sk-pg-0", "sk-pg-1"];
    let slow = "sk-pg-slow";
    let mut sim_keys: Vec<SimKey> = good.iter().map(|s| SimKey::new(*s, 600)).collect();
    // genq is told 60/min; the provider allows 3/min, so it answers 429
    // with a Retry-After of up to 20 s.
    sim_keys.push(SimKey {
        send_ratelimit_headers: false,
        ..SimKey::new(slow, 3)
    });
    let sim = Sim::new(SimConfig {
        keys: sim_keys,
        latency: Duration::from_millis(200),
        ..SimConfig::default()
    });
    let slow_id = genq_sim::key_id(slow);
    let (base_url, answers, stop_sim) = serve_sim_noting_prompts(&sim).await;

    let dir = std::env::temp_dir().join(format!("genq-pgr-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = String::new();
    for (i, s) in good.iter().enumerate() {
        toml.push_str(&format!(
            "[[keys]]\nname = \"g{i}\"\nsecret = \"{s}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 600\n\n"
        ));
    }
    toml.push_str(&format!(
        "[[keys]]\nname = \"slow\"\nsecret = \"{slow}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 60\n"
    ));
    std::fs::write(dir.join("keys.toml"), toml).unwrap();

    sqlx::query(
        "INSERT INTO genq.jobs (prompt)
         SELECT 'pg restart job ' || i FROM generate_series(1, $1) i",
    )
    .bind(JOBS)
    .execute(&pool)
    .await
    .unwrap();
    let mut workers: Vec<ChildGuard> = (0..WORKERS)
        .map(|_| worker_process(&pg.url(), &base_url, &dir))
        .collect();

    let mut restarts = Vec::new();
    for mode in [ShutdownMode::Fast, ShutdownMode::Immediate] {
        // Before: the slow key cools for a while yet, and calls are in
        // flight: the provider has answered them, genq has not yet read it.
        let cooling_until = settled_cooldown_under_load(&pool, &sim, &slow_id).await;
        answers.close_gate();
        wait_until(
            Duration::from_secs(30),
            "answers held in flight",
            || async { answers.held() >= 3 },
        )
        .await;
        let began = Utc::now();
        restart(&pg, mode).await;
        let ended = Utc::now();
        let in_flight = answers.open_gate();

        // After: the workers finish jobs again, and the cooldown is as it was.
        wait_until(
            Duration::from_secs(30),
            "a job to finish after the restart",
            || async {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM genq.jobs WHERE state = 'succeeded' AND finished_at > $1",
                )
                .bind(ended)
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n > 0)
            },
        )
        .await;
        assert_eq!(
            slow_cooldown(&pool).await,
            (Some(cooling_until), Some(cooling_until)),
            "the cooldown persisted before the {mode:?} restart is unchanged"
        );
        let queued: i64 =
            sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = 'queued'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(queued > 0, "jobs wait that the cooling key could take");
        restarts.push(Restart {
            mode,
            began,
            ended,
            cooling_until,
            in_flight,
        });
    }

    all_succeeded(&pool).await;
    for (i, w) in workers.iter_mut().enumerate() {
        assert!(
            w.0.try_wait().unwrap().is_none(),
            "worker {i} kept running through both restarts"
        );
    }
    stop_sim.cancel();

    // Nothing lost, nothing done twice (by genq's books).
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM genq.jobs GROUP BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(states, vec![("succeeded".to_string(), JOBS)]);
    let (once, twice): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n > 1)
           FROM (SELECT job_id, count(*) AS n FROM genq.attempts
                  WHERE outcome = 'succeeded' GROUP BY job_id) s",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((once, twice), (JOBS, 0), "one succeeded attempt per job");

    // Nothing done twice (by the provider's books): one 200 per job.
    let mut ok_per_prompt: HashMap<String, usize> = HashMap::new();
    for (prompt, status) in answers.all.lock().unwrap().iter() {
        if *status == 200 {
            *ok_per_prompt.entry(prompt.clone()).or_default() += 1;
        }
    }
    let twice: Vec<_> = ok_per_prompt.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "jobs the provider ran twice: {twice:?}");
    assert_eq!(ok_per_prompt.len() as i64, JOBS);
    assert!(
        (1..=JOBS).all(|i| ok_per_prompt.contains_key(&format!("pg restart job {i}"))),
        "every job reached the provider"
    );

    // Under load: calls in flight across each restart, and every worker
    // working after each one.
    for r in &restarts {
        // Each call held across the restart: the job succeeded from it,
        // once, written after the restart.
        let (spanning, workers_after): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM genq.attempts a JOIN genq.jobs j ON j.id = a.job_id
                      WHERE a.outcome = 'succeeded' AND j.prompt = ANY($2)
                        AND a.started_at < $3 AND a.finished_at > $1),
                    (SELECT count(DISTINCT worker) FROM genq.attempts
                      WHERE outcome = 'succeeded' AND finished_at > $1)",
        )
        .bind(r.ended)
        .bind(&r.in_flight)
        .bind(r.began)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(!r.in_flight.is_empty());
        assert_eq!(
            spanning,
            r.in_flight.len() as i64,
            "calls in flight across the {:?} restart completed once, after it: {:?}",
            r.mode,
            r.in_flight
        );
        assert_eq!(
            workers_after, WORKERS as i64,
            "every worker worked after the {:?} restart",
            r.mode
        );
    }

    // Cooldowns: nothing reached the slow key inside a wait the sim
    // announced, nor between a restart and the cooldown it found.
    let log = sim.log();
    let slow_log: Vec<_> = log.iter().filter(|r| r.key_id == slow_id).collect();
    assert_eq!(
        sim.early_after_429(&slow_id),
        Vec::<Duration>::new(),
        "restarts: {restarts:#?}\nslow key: {slow_log:#?}"
    );
    assert!(
        log.iter().any(|r| r.key_id == slow_id && r.status == 429),
        "the slow key was answered 429"
    );
    for r in &restarts {
        let early: Vec<_> = log
            .iter()
            .filter(|q| q.key_id == slow_id && q.at > r.began && q.at < r.cooling_until)
            .collect();
        assert!(
            early.is_empty(),
            "the slow key was used after the {:?} restart before its cooldown ended at {}: {early:?}",
            r.mode,
            r.cooling_until
        );
    }
    drop(workers);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn embedded_pg_restart_drops_connections_and_keeps_data() {
    for mode in [ShutdownMode::Fast, ShutdownMode::Immediate] {
        let (pg, pool) = durable_cluster().await;
        for sql in ["CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (42)"] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        let mut before = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut before)
            .await
            .unwrap();
        restart(&pg, mode).await;
        assert!(
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&mut before)
                .await
                .is_err(),
            "a connection from before the {mode:?} restart is gone"
        );
        let mut after = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
        let (v, new_pid): (i32, i32) = sqlx::query_as("SELECT v, pg_backend_pid() FROM kept")
            .fetch_one(&mut after)
            .await
            .unwrap();
        assert_eq!(v, 42, "data survives a {mode:?} restart");
        assert_ne!(new_pid, pid);
        assert_eq!(
            pg.url(),
            format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
        );
    }
}

/// A 429 is read while its cooldown cannot be written: the statement that
/// persists it is cut off by the restart (the test holds the bucket's row
/// lock so that the write is in flight at that moment). genq must still not
/// use the key before the end the provider announced.
#[tokio::test(flavor = "multi_thread")]
async fn a_cooldown_cut_off_by_a_restart_is_not_forgotten() {
    let (pg, pool) = durable_cluster().await;
    let good = "sk-pg-good";
    let slow = "sk-pg-slow";
    let sim = Sim::new(SimConfig {
        keys: vec![
            SimKey::new(good, 120),
            SimKey {
                send_ratelimit_headers: false,
                ..SimKey::new(slow, 3)
            },
        ],
        ..SimConfig::default()
    });
    let slow_id = genq_sim::key_id(slow);
    let (base_url, answers, stop_sim) = serve_sim_noting_prompts(&sim).await;
    answers.hold_429s.send_replace(true);

    let dir = std::env::temp_dir().join(format!("genq-pgr-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("keys.toml"),
        format!(
            "[[keys]]\nname = \"good\"\nsecret = \"{good}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 120\n\n\
             [[keys]]\nname = \"slow\"\nsecret = \"{slow}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 60\n"
        ),
    )
    .unwrap();
    // Far more than the keys can serve in the test's time: demand never ends.
    sqlx::query(
        "INSERT INTO genq.jobs (prompt) SELECT 'pg restart job ' || i FROM generate_series(1, 200) i",
    )
    .execute(&pool)
    .await
    .unwrap();
    let worker = worker_process(&pg.url(), &base_url, &dir);

    // The slow key's second request is answered 429; hold that answer, lock
    // the key's bucket, then let genq read the 429: its cooldown write waits.
    wait_until(Duration::from_secs(30), "a 429 held", || async {
        answers.held_429s.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM genq.key_buckets WHERE scope = 'slow' FOR UPDATE")
        .execute(&mut *locker)
        .await
        .unwrap();
    answers.hold_429s.send_replace(false);
    wait_until(
        Duration::from_secs(30),
        "the cooldown write to wait",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query LIKE '%SET cooldown_until = greatest%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                > 0
        },
    )
    .await;
    restart(&pg, ShutdownMode::Immediate).await;
    drop(locker);

    // The provider's announced end of the held 429.
    let log = sim.log();
    let announced_end = log
        .iter()
        .filter(|r| r.key_id == slow_id && r.status == 429)
        .map(|r| r.at + chrono::TimeDelta::milliseconds(r.retry_after_ms.unwrap() as i64))
        .max()
        .unwrap();
    // Wait it out (or until genq comes back early), with jobs queued all along.
    wait_until(Duration::from_secs(40), "the announced end", || async {
        Utc::now() > announced_end + chrono::TimeDelta::milliseconds(500)
            || sim
                .log()
                .iter()
                .filter(|r| r.key_id == slow_id)
                .any(|r| r.at > announced_end - chrono::TimeDelta::seconds(15) && r.status == 429)
    })
    .await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = 'queued'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(queued > 0, "jobs waited that the slow key could take");
    let mut worker = worker;
    assert!(
        worker.0.try_wait().unwrap().is_none(),
        "the worker kept running"
    );
    stop_sim.cancel();
    let slow_log: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|r| r.key_id == slow_id)
        .collect();
    assert_eq!(
        sim.early_after_429(&slow_id),
        Vec::<Duration>::new(),
        "the slow key was used inside the wait its 429 announced (ending {announced_end}): {slow_log:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
