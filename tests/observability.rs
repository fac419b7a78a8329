//! What operators see: every documented route is served, `/metrics` has the
//! promised series, and no secret appears in metrics, API answers, the
//! database or the logs.

// Its own test binary: it counts genq's process-wide metrics (counters and
// histograms), which any other test in the same process would add to.

use genq::api::{ApiState, openapi};
use genq::job::NewJob;
use genq_sim::{KeyBehavior, Sim, SimConfig, SimKey};
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{count_state, wait_until};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECRETS: [&str; 3] = [
    "sk-observe-good-0123456789",
    "sk-observe-broke-abcdef",
    "sk-observe-stranger-zyx987",
];

async fn serve_api(pool: sqlx::PgPool) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(genq::api::serve(
        listener,
        ApiState::new(pool, None),
        stop.clone(),
    ));
    (base, stop)
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let db = genq_testkit::TestDb::new().await;
    let (base, stop) = serve_api(db.pool.clone()).await;
    let client = reqwest::Client::new();
    for (method, path) in openapi::ROUTES {
        let url = format!(
            "{base}{}",
            path.replace("{id}", &uuid::Uuid::new_v4().to_string())
        );
        let req = match *method {
            "get" => client.get(&url),
            _ => client
                .post(&url)
                .json(&serde_json::json!({"prompt": "a fox"})),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("no route for") && status != 405,
            "{method} {path}: {status} {body}"
        );
    }
    stop.cancel();
}

#[tokio::test]
async fn metrics_keys_and_jobs_show_ids_never_secrets() {
    genq::metrics::install();
    let rig = Rig::new(vec![
        SimKey {
            send_ratelimit_headers: false,
            ..SimKey::new(SECRETS[0], 30)
        },
        SimKey {
            behavior: KeyBehavior::InsufficientQuota,
            ..SimKey::new(SECRETS[1], 60)
        },
    ])
    .await;
    let ring = keys(&[
        ("good", SECRETS[0]),
        ("broke", SECRETS[1]),
        ("stranger", SECRETS[2]),
    ]);
    let (worker, stop) = rig.worker(ring, 4).await;
    for i in 0..5 {
        genq::submit::submit(&rig.db.pool, &NewJob::new(format!("heron {i}")))
            .await
            .unwrap();
    }
    genq::submit::submit(&rig.db.pool, &NewJob::new("a FORBIDDEN heron"))
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "all jobs to finish", || async {
        count_state(&rig.db.pool, "succeeded").await + count_state(&rig.db.pool, "failed").await
            == 6
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    let (base, stop_api) = serve_api(rig.db.pool.clone()).await;
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let metrics = get("/metrics").await;
    for series in [
        "genq_jobs_finished_total{outcome=\"succeeded\"} 5",
        "genq_jobs_finished_total{outcome=\"failed\"} 1",
        "genq_job_claim_wait_seconds_bucket",
        "genq_job_end_to_end_seconds_bucket{outcome=\"succeeded\"",
        "genq_provider_requests_total{key_id=\"good\",model=\"gpt-image-2\",outcome=\"succeeded\"} 5",
        "genq_provider_requests_total{key_id=\"broke\",model=\"gpt-image-2\",outcome=\"key_rejected\"} 1",
        "genq_provider_rate_limited_total{key_id=\"good\"",
        "genq_queue_jobs{queue=\"default\",model=\"gpt-image-2\",state=\"succeeded\"} 5",
        "genq_keys{state=\"disabled\"} 2",
        "genq_key_cooldown_seconds{key_id=\"good\"}",
    ] {
        assert!(
            metrics.contains(series),
            "/metrics lacks {series}:\n{metrics}"
        );
    }
    let keys_body = get("/v1/keys").await;
    assert!(keys_body.contains("\"id\":\"stranger\""), "{keys_body}");
    let jobs_body = get("/v1/jobs?limit=100").await;
    let mut seen = vec![metrics, keys_body, jobs_body];
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM genq.jobs")
        .fetch_all(&rig.db.pool)
        .await
        .unwrap();
    for id in ids {
        seen.push(get(&format!("/v1/jobs/{id}")).await);
    }
    // Every row of every genq table, as text.
    for table in ["jobs", "attempts", "api_keys", "key_buckets"] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(t)::text FROM genq.{table} t"
        )))
        .fetch_all(&rig.db.pool)
        .await
        .unwrap();
        seen.extend(rows);
    }
    for text in &seen {
        for secret in SECRETS {
            assert!(!text.contains(secret), "secret leaked: {text}");
            assert!(
                !text.contains(&secret[secret.len() - 6..]),
                "secret tail leaked: {text}"
            );
        }
    }
    stop_api.cancel();
}

#[tokio::test]
async fn worker_logs_never_contain_secrets() {
    let db = genq_testkit::TestDb::new().await;
    let sim = Sim::new(SimConfig {
        keys: vec![SimKey::new(SECRETS[0], 600)],
        ..SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(sim.serve(listener, stop.clone()));
    for i in 0..3 {
        genq::submit::submit(&db.pool, &NewJob::new(format!("crane {i}")))
            .await
            .unwrap();
    }
    let out = std::env::temp_dir().join(format!("genq-logs-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&out).unwrap();
    for format in ["text", "json"] {
        // Logs go to a file: a pipe nobody reads would fill up and stall the worker.
        let log_path = out.join(format!("worker-{format}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child =
            genq_testkit::process::genq(&genq_testkit::process::scratch_dir("observability"))
                .args(["worker", "--poll-ms", "100"])
                .env("DATABASE_URL", &db.url)
                .env("OPENAI_BASE_URL", &base_url)
                .env(
                    "OPENAI_API_KEYS",
                    format!("good={},stranger={}", SECRETS[0], SECRETS[2]),
                )
                .env("GENQ_OUTPUT_DIR", &out)
                .env("GENQ_LOG_FORMAT", format)
                .env("RUST_LOG", "debug")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
        wait_until(Duration::from_secs(30), "the jobs to succeed", || async {
            count_state(&db.pool, "succeeded").await == 3
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
        let logs = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            logs.contains("worker stopped") && logs.contains("key_disabled"),
            "{logs}"
        );
        for secret in SECRETS {
            assert!(!logs.contains(secret), "{format} logs leak a secret");
        }
        // The next round gets fresh jobs, and a fresh chance to log the unknown key.
        sqlx::query("DELETE FROM genq.jobs")
            .execute(&db.pool)
            .await
            .unwrap();
        genq::store::keys::enable(&db.pool, "stranger")
            .await
            .unwrap();
        for i in 0..3 {
            genq::submit::submit(&db.pool, &NewJob::new(format!("stork {i}")))
                .await
                .unwrap();
        }
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(out);
}
