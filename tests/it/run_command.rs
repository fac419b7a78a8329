//! `genq run` (API + worker in one process) and a worker's own metrics port,
//! as real processes: submit over HTTP, watch the job finish, scrape metrics.

use genq_testkit::TestDb;
use std::process::Stdio;
use std::time::{Duration, Instant};

use genq_testkit::ChildGuard as Proc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get_when_up(url: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(resp) = reqwest::get(url).await {
            return resp.text().await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{url} never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn genq(db: &TestDb, args: &[&str]) -> Proc {
    Proc(
        genq_testkit::process::genq(&genq_testkit::process::scratch_dir("run-command"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn run_serves_the_api_and_works_the_jobs() {
    let db = TestDb::new().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _run = genq(
        &db,
        &[
            "run",
            "--provider",
            "noop",
            "--listen",
            &listen,
            "--poll-ms",
            "100",
        ],
    );
    let base = format!("http://{listen}");
    get_when_up(&format!("{base}/healthz")).await;
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({"prompt": "a lynx", "idempotency_key": "lynx-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let job: serde_json::Value = client
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["job"]["state"] == "succeeded" {
            assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = get_when_up(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("genq_jobs_finished_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn run_refuses_to_listen_beyond_loopback_without_a_token() {
    let db = TestDb::new().await;
    let out = genq_testkit::process::genq(&genq_testkit::process::scratch_dir("run-command"))
        .args(["run", "--provider", "noop", "--listen", "0.0.0.0:0"])
        .env("DATABASE_URL", &db.url)
        .env_remove("GENQ_API_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GENQ_API_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_worker_can_serve_its_own_metrics() {
    let db = TestDb::new().await;
    genq_testkit::insert_jobs(&db.pool, 3, serde_json::json!({})).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let _worker = genq(
        &db,
        &[
            "worker",
            "--provider",
            "noop",
            "--metrics-listen",
            &listen,
            "--poll-ms",
            "100",
        ],
    );
    genq_testkit::wait_until(Duration::from_secs(20), "3 jobs to succeed", || async {
        genq_testkit::count_state(&db.pool, "succeeded").await == 3
    })
    .await;
    let metrics = get_when_up(&format!("http://{listen}/metrics")).await;
    assert!(
        metrics.contains("genq_jobs_finished_total{outcome=\"succeeded\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "genq_queue_jobs{queue=\"default\",model=\"gpt-image-2\",state=\"succeeded\"} 3"
        ),
        "{metrics}"
    );
}
