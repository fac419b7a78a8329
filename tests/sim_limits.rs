//! The sim's stricter limits, over real HTTP: daily caps, limits shared by
//! the keys of one project (and the headers that show it), a 403 for one
//! model, and the wait each 429 announced, logged for observers.

use genq::sim::{RetryHeader, Sim, SimConfig, SimKey, key_id};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn start(config: SimConfig) -> (Sim, String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let sim = Sim::new(config);
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, stop.clone()));
    (sim, base, stop)
}

async fn generate(base: &str, key: &str, model: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/images/generations"))
        .bearer_auth(key)
        .json(&json!({"model": model, "prompt": "a fox"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_daily_cap_refuses_with_the_window_reset_and_opens_the_next_day() {
    let window = Duration::from_secs(3);
    let created = std::time::Instant::now();
    let (sim, base, stop) = start(SimConfig {
        keys: vec![SimKey {
            requests_per_day: Some(3),
            burst: Some(10),
            ..SimKey::new("sk-daily", 6000)
        }],
        day_window_secs: window.as_secs(),
        ..SimConfig::default()
    })
    .await;
    // Windows count from the sim's start: begin just after one opens.
    let into = created.elapsed().as_nanos() % window.as_nanos();
    let to_next = window - Duration::from_nanos(into as u64);
    tokio::time::sleep(to_next + Duration::from_millis(100)).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            generate(&base, "sk-daily", "gpt-image-2")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 200]);
    let resp = generate(&base, "sk-daily", "gpt-image-2").await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=3).contains(&retry), "retry-after {retry}");
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("requests per day (RPD): Limit 3"),
        "{message}"
    );
    assert!(message.contains("Please try again in"), "{message}");
    let last = sim.log().pop().unwrap();
    assert_eq!(last.retry_after_ms, Some(retry * 1000));
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        generate(&base, "sk-daily", "gpt-image-2").await.status(),
        200
    );
    stop.cancel();
}

#[tokio::test]
async fn keys_of_one_project_share_its_limits_and_say_so_in_headers() {
    let project = |secret: &str| SimKey {
        organization: Some("org-sim".into()),
        project: Some("proj_1".into()),
        retry_header: RetryHeader::RetryAfterMs,
        ..SimKey::new(secret, 1)
    };
    let (sim, base, stop) = start(SimConfig {
        keys: vec![
            project("sk-p1"),
            project("sk-p2"),
            SimKey::new("sk-alone", 1),
        ],
        ..SimConfig::default()
    })
    .await;
    let first = generate(&base, "sk-p1", "gpt-image-2").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["openai-organization"], "org-sim");
    assert_eq!(first.headers()["openai-project"], "proj_1");
    let second = generate(&base, "sk-p2", "gpt-image-2").await;
    assert_eq!(
        second.status(),
        429,
        "the project's one request a minute is spent"
    );
    assert_eq!(second.headers()["openai-project"], "proj_1");
    let alone = generate(&base, "sk-alone", "gpt-image-2").await;
    assert_eq!(alone.status(), 200);
    assert!(alone.headers().get("openai-project").is_none());
    let log = sim.log();
    let announced = log[1].retry_after_ms.unwrap();
    assert!((58_000..=60_000).contains(&announced), "{announced}");
    assert_eq!(log[1].key_id, key_id("sk-p2"));
    stop.cancel();
}

#[tokio::test]
async fn a_model_the_organization_may_not_use_is_a_403_for_that_model_only() {
    let (_sim, base, stop) = start(SimConfig {
        keys: vec![SimKey {
            forbidden_models: vec!["gpt-image-1.5".into()],
            ..SimKey::new("sk-unverified", 600)
        }],
        ..SimConfig::default()
    })
    .await;
    let refused = generate(&base, "sk-unverified", "gpt-image-1.5").await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("must be verified to use the model `gpt-image-1.5`"),
        "{message}"
    );
    assert_eq!(
        generate(&base, "sk-unverified", "gpt-image-2")
            .await
            .status(),
        200
    );
    stop.cancel();
}
