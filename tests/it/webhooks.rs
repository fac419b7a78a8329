//! Completion webhooks against a real local receiver: each ending delivered
//! once and signed (checked with the README's own Python and Node recipes,
//! which refuse a tampered body), deliveries kept through a receiver outage
//! and a worker restart, given up after the configured time, and private
//! callback URLs refused at submit.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use genq::job::NewJob;
use genq::webhook::{WebhookConfig, WebhookSecret};
use genq::worker::{Worker, WorkerConfig};
use genq::{SubmitError, UrlPolicy};
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{count_state, wait_until};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What a receiver got: each request's headers and raw body.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

impl Received {
    fn all(&self) -> Vec<(HeaderMap, Bytes)> {
        self.0.lock().unwrap().clone()
    }
}

/// A receiver on `listener` answering `status` to every POST.
fn receive(listener: tokio::net::TcpListener, status: StatusCode) -> Received {
    let received = Received::default();
    let seen = received.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let seen = seen.clone();
        async move {
            seen.0.lock().unwrap().push((headers, body));
            status
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    received
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

fn config() -> WebhookConfig {
    let mut cfg = WebhookConfig::new(WebhookSecret::parse(SECRET).unwrap());
    cfg.urls = UrlPolicy::ALLOW_PRIVATE; // the receiver is on loopback
    cfg.poll = Duration::from_millis(100);
    cfg.backoff = genq::retry::Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(2),
    };
    cfg
}

/// A worker over the rig's sim that delivers webhooks by `cfg`.
async fn worker(
    rig: &Rig,
    cfg: WebhookConfig,
) -> (
    tokio::task::JoinHandle<genq::WorkerReport>,
    CancellationToken,
) {
    let provider = rig.provider(keys(&[("a", "sk-a")]));
    provider.register_keys().await.unwrap();
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(50),
        webhooks: Some(cfg),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let handle = tokio::spawn(Worker::new(rig.db.pool.clone(), config, provider).run(stop.clone()));
    (handle, stop)
}

async fn submit(rig: &Rig, job: NewJob) -> Uuid {
    genq::submit_with(&rig.db.pool, &job, UrlPolicy::ALLOW_PRIVATE)
        .await
        .unwrap()
        .id
}

/// The README's recipe in `language` (`python` or `js`), run by `program`
/// on one request: whether it accepts it.
fn recipe_accepts(language: &str, program: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let fence = format!("```{language}\n");
    let marker = format!(
        "<!-- webhook-verify-{} -->",
        if language == "js" { "node" } else { "python" }
    );
    let after = &readme[readme.find(&marker).expect("the recipe's marker")..];
    let start = after.find(&fence).unwrap() + fence.len();
    let recipe = &after[start..start + after[start..].find("```").unwrap()];
    let header = |name: &str| headers[name].to_str().unwrap().to_string();
    let dir = genq_testkit::process::scratch_dir("webhook-recipe");
    std::fs::write(dir.join("body"), body).unwrap();
    let call = if language == "js" {
        format!(
            "{recipe}\nconst body = require('fs').readFileSync(process.argv[2]);\n\
             console.log(verify({SECRET:?}, {{'webhook-id': {id:?}, 'webhook-timestamp': {ts:?}, 'webhook-signature': {sig:?}}}, body) ? 'ok' : 'bad');\n",
            id = header("webhook-id"),
            ts = header("webhook-timestamp"),
            sig = header("webhook-signature"),
        )
    } else {
        format!(
            "{recipe}\nimport sys\nbody = open(sys.argv[1], 'rb').read()\n\
             print('ok' if verify({SECRET:?}, {{'webhook-id': {id:?}, 'webhook-timestamp': {ts:?}, 'webhook-signature': {sig:?}}}, body) else 'bad')\n",
            id = header("webhook-id"),
            ts = header("webhook-timestamp"),
            sig = header("webhook-signature"),
        )
    };
    let script = dir.join(if language == "js" {
        "verify.js"
    } else {
        "verify.py"
    });
    std::fs::write(&script, call).unwrap();
    let out = std::process::Command::new(program)
        .arg(&script)
        .arg(dir.join("body"))
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "ok" => true,
        "bad" => false,
        other => panic!("the recipe printed {other:?}"),
    }
}

#[tokio::test]
async fn each_ending_is_delivered_once_signed_and_the_recipes_check_it() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let (listener, base) = bind().await;
    let received = receive(listener, StatusCode::NO_CONTENT);
    genq::store::webhooks::set_defaults(&rig.db.pool, &[("*".into(), format!("{base}/default"))])
        .await
        .unwrap();
    let ok = submit(
        &rig,
        NewJob {
            callback_url: Some(format!("{base}/mine")),
            ..NewJob::new("a red fox")
        },
    )
    .await;
    let refused = submit(
        &rig,
        NewJob {
            max_attempts: Some(1),
            ..NewJob::new("something FORBIDDEN")
        },
    )
    .await;
    let later = submit(
        &rig,
        NewJob {
            run_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            ..NewJob::new("tomorrow's fox")
        },
    )
    .await;
    let (handle, stop) = worker(&rig, config()).await;
    genq::store::inspect::cancel(&rig.db.pool, later)
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "three webhooks", || async {
        received.all().len() >= 3
    })
    .await;
    // Nothing more comes: each ending once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.cancel();
    handle.await.unwrap();
    let all = received.all();
    assert_eq!(all.len(), 3, "one webhook per ending");

    let secret = WebhookSecret::parse(SECRET).unwrap();
    let mut seen = Vec::new();
    for (headers, body) in &all {
        let id = headers["webhook-id"].to_str().unwrap();
        let ts: i64 = headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = headers["webhook-signature"].to_str().unwrap();
        assert_eq!(headers["content-type"], "application/json");
        assert!(secret.verify(id, ts, body, sig), "a valid signature");
        let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
        seen.push((
            doc["job"]["id"].as_str().unwrap().parse::<Uuid>().unwrap(),
            doc["job"]["state"].as_str().unwrap().to_string(),
        ));
        if doc["job"]["state"] == "succeeded" {
            let image = &doc["job"]["result"]["images"][0];
            assert!(image["location"].is_string(), "{doc}");
            assert!(doc["attempts"].as_array().is_some_and(|a| !a.is_empty()));
        }
    }
    seen.sort();
    let mut want = vec![
        (ok, "succeeded".to_string()),
        (refused, "failed".to_string()),
        (later, "cancelled".to_string()),
    ];
    want.sort();
    assert_eq!(seen, want);

    // The README's recipes accept a delivery, and refuse it with one byte changed.
    let (headers, body) = &all[0];
    let mut tampered = body.to_vec();
    let at = tampered.iter().position(|b| *b == b':').unwrap();
    tampered.insert(at + 1, b' ');
    assert!(
        !secret.verify(
            headers["webhook-id"].to_str().unwrap(),
            headers["webhook-timestamp"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap(),
            &tampered,
            headers["webhook-signature"].to_str().unwrap()
        )
    );
    assert!(recipe_accepts("python", "python3", headers, body));
    assert!(!recipe_accepts("python", "python3", headers, &tampered));
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok()
    {
        assert!(recipe_accepts("js", "node", headers, body));
        assert!(!recipe_accepts("js", "node", headers, &tampered));
    } else {
        eprintln!("node is not installed: the Node recipe was not run");
    }

    // Every send is visible with the job.
    let detail = genq::store::inspect::detail(&rig.db.pool, ok)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.webhooks.len(), 1);
    assert_eq!(detail.webhooks[0].state, "delivered");
    assert_eq!(detail.webhooks[0].url, format!("{base}/mine"));
    assert_eq!(detail.webhooks[0].last_status, Some(204));
}

#[tokio::test]
async fn a_receiver_down_for_30_s_gets_every_delivery_after_a_worker_restart() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    // A port with nobody listening: connections are refused.
    let (listener, base) = bind().await;
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            submit(
                &rig,
                NewJob {
                    callback_url: Some(format!("{base}/hook")),
                    ..NewJob::new(format!("fox {n}"))
                },
            )
            .await,
        );
    }
    let down_since = std::time::Instant::now();
    let (first, stop) = worker(&rig, config()).await;
    wait_until(Duration::from_secs(20), "the jobs to succeed", || async {
        count_state(&rig.db.pool, "succeeded").await == 3
    })
    .await;
    wait_until(Duration::from_secs(10), "failed sends", || async {
        let tried: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM genq.webhook_deliveries WHERE attempts >= 2 AND state = 'pending'",
        )
        .fetch_one(&rig.db.pool)
        .await
        .unwrap();
        tried == 3
    })
    .await;
    stop.cancel();
    first.await.unwrap();

    let (second, stop) = worker(&rig, config()).await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down_since.elapsed())).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let received = receive(listener, StatusCode::OK);
    wait_until(Duration::from_secs(20), "every delivery", || async {
        received.all().len() >= 3
    })
    .await;
    stop.cancel();
    second.await.unwrap();
    let mut got: Vec<Uuid> = received
        .all()
        .iter()
        .map(|(_, body)| {
            let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
            doc["job"]["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    got.sort();
    got.dedup();
    ids.sort();
    assert_eq!(got, ids);
    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.webhooks WHERE state = 'delivered' AND last_status = 200",
    )
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(delivered, 3);
}

#[tokio::test]
async fn a_delivery_is_given_up_after_the_configured_time() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let (listener, base) = bind().await;
    let received = receive(listener, StatusCode::INTERNAL_SERVER_ERROR);
    let id = submit(
        &rig,
        NewJob {
            callback_url: Some(format!("{base}/hook")),
            ..NewJob::new("a red fox")
        },
    )
    .await;
    let mut cfg = config();
    cfg.give_up_after = Duration::from_secs(2);
    let (handle, stop) = worker(&rig, cfg).await;
    wait_until(Duration::from_secs(20), "the delivery given up", || async {
        let detail = genq::store::inspect::detail(&rig.db.pool, id)
            .await
            .unwrap()
            .unwrap();
        detail.webhooks.first().is_some_and(|w| w.state == "failed")
    })
    .await;
    stop.cancel();
    handle.await.unwrap();
    let detail = genq::store::inspect::detail(&rig.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    let webhook = &detail.webhooks[0];
    assert_eq!(webhook.last_status, Some(500));
    assert!(webhook.attempts >= 2, "{webhook:?}");
    assert_eq!(received.all().len() as i32, webhook.attempts);
    assert_eq!(
        webhook.last_error.as_deref(),
        Some("the receiver answered HTTP 500")
    );
}

#[tokio::test]
async fn a_private_callback_url_is_refused_at_submit() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/hook",
        "http://[fd00::1]/hook",
    ] {
        let job = NewJob {
            callback_url: Some(url.into()),
            ..NewJob::new("a red fox")
        };
        match genq::submit(&rig.db.pool, &job).await {
            Err(SubmitError::CallbackUrl(err)) => {
                let text = format!("callback_url {err}");
                assert!(text.contains("private, loopback or link-local"), "{text}");
            }
            other => panic!("{url}: expected a refusal, got {other:?}"),
        }
    }
    let job = NewJob {
        callback_url: Some("ftp://example.com/hook".into()),
        ..NewJob::new("a red fox")
    };
    assert!(matches!(
        genq::submit(&rig.db.pool, &job).await,
        Err(SubmitError::CallbackUrl(_))
    ));
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&rig.db.pool)
        .await
        .unwrap();
    assert_eq!(written, 0);
}
