//! `/metrics` end to end, scraped over HTTP from a real server on a fresh
//! database: gauges of emptied queues read 0, user-chosen label values are
//! bounded, and `GENQ_METRICS_REQUIRE_TOKEN` puts the scrape behind the token.

use std::collections::BTreeSet;
use std::time::Duration;

use genq::api::ApiState;
use genq::job::NewJob;
use genq::metrics::labels::{MAX_LABEL_LEN, MAX_QUEUE_PAIRS};
use genq::store::jobs::{self, Completion, Finish};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "metrics-token-5f3a9c";

/// Serves `state` on `addr` (port 0); the loopback URL to reach it.
async fn serve(addr: &str, state: ApiState) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(genq::api::serve(listener, state, stop.clone()));
    (format!("http://127.0.0.1:{port}"), stop)
}

async fn scrape(base: &str) -> String {
    let resp = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// The value of the series `name{labels}`, if exported.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn queued(queue: &str) -> String {
    format!("genq_queue_jobs{{queue=\"{queue}\",model=\"gpt-image-2\",state=\"queued\"}}")
}

#[tokio::test]
async fn gauges_of_an_emptied_queue_read_zero() {
    let db = genq_testkit::TestDb::new().await;
    let (base, stop) = serve("127.0.0.1:0", ApiState::new(db.pool.clone(), None)).await;
    let job = NewJob {
        queue: Some("q".into()),
        ..NewJob::new("a lone heron")
    };
    let id = genq::submit::submit(&db.pool, &job).await.unwrap().id;
    let text = scrape(&base).await;
    assert_eq!(value(&text, &queued("q")), Some(1.0), "{text}");
    let age = "genq_queue_oldest_due_age_seconds{queue=\"q\",model=\"gpt-image-2\"}";
    assert!(value(&text, age).is_some(), "{text}");

    // The last queued job of "q" is claimed: queued reads 0, running 1.
    let queues = vec!["q".to_string()];
    let claimed = jobs::claim(&db.pool, "w", &queues, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let text = scrape(&base).await;
    assert_eq!(value(&text, &queued("q")), Some(0.0), "{text}");
    assert_eq!(value(&text, age), Some(0.0), "{text}");
    let running = "genq_queue_jobs{queue=\"q\",model=\"gpt-image-2\",state=\"running\"}";
    assert_eq!(value(&text, running), Some(1.0), "{text}");

    // It succeeds: running reads 0.
    let done = Completion {
        job_id: id,
        attempt: claimed[0].attempts,
        finish: Finish::Succeeded {
            result: serde_json::json!({}),
        },
        refund: false,
        call: None,
    };
    jobs::complete(&db.pool, "w", &[done]).await.unwrap();
    let text = scrape(&base).await;
    assert_eq!(value(&text, running), Some(0.0), "{text}");
    let succeeded = "genq_queue_jobs{queue=\"q\",model=\"gpt-image-2\",state=\"succeeded\"}";
    assert_eq!(value(&text, succeeded), Some(1.0), "{text}");

    // Retention removes it: the queue has no rows at all, and still reads 0.
    sqlx::query("DELETE FROM genq.jobs")
        .execute(&db.pool)
        .await
        .unwrap();
    let text = scrape(&base).await;
    assert_eq!(value(&text, succeeded), Some(0.0), "{text}");
    assert_eq!(value(&text, &queued("q")), Some(0.0), "{text}");
    stop.cancel();
}

#[tokio::test]
async fn user_chosen_label_values_are_bounded() {
    let db = genq_testkit::TestDb::new().await;
    // Many queues, some with names no label should carry verbatim.
    let long = "x".repeat(500);
    let mut names: Vec<String> = (0..3 * MAX_QUEUE_PAIRS).map(|i| format!("q{i}")).collect();
    names.extend([
        long.clone(),
        "quote\"back\\slash\nnewline".into(),
        "猫".repeat(40),
    ]);
    sqlx::query("INSERT INTO genq.jobs (queue, prompt) SELECT q, 'p' FROM unnest($1::text[]) q")
        .bind(&names)
        .execute(&db.pool)
        .await
        .unwrap();
    // The busiest queue keeps its name.
    sqlx::query(
        "INSERT INTO genq.jobs (queue, prompt) SELECT 'busy', 'p' FROM generate_series(1, 5)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (base, stop) = serve("127.0.0.1:0", ApiState::new(db.pool.clone(), None)).await;
    let text = scrape(&base).await;
    let mut queues = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("genq_queue_jobs{")) {
        let queue = line
            .split("queue=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert!(queue.len() <= MAX_LABEL_LEN, "{line}");
        assert!(
            queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:/@+-".contains(c)),
            "{line}"
        );
        queues.insert(queue.to_string());
    }
    assert_eq!(queues.len(), MAX_QUEUE_PAIRS + 1, "{queues:?}");
    assert!(
        queues.contains("other") && queues.contains("busy"),
        "{queues:?}"
    );
    assert_eq!(value(&text, &queued("busy")), Some(5.0), "{text}");
    // Nothing is lost in the folding: the queued jobs add up.
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("genq_queue_jobs{") && l.contains("state=\"queued\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, (names.len() + 5) as f64);
    assert!(
        !text.contains(&long) && !text.contains('猫'),
        "unbounded label"
    );
    stop.cancel();
}

#[tokio::test]
async fn metrics_need_the_token_when_asked_beyond_loopback() {
    let db = genq_testkit::TestDb::new().await;
    let client = reqwest::Client::new();
    // Beyond loopback with GENQ_METRICS_REQUIRE_TOKEN: 401 without, 200 with.
    let public: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
    let needed = genq::api::metrics_need_token(public, true);
    let state = ApiState::new(db.pool.clone(), Some(TOKEN.into())).with_metrics_token(needed);
    let (base, stop) = serve("0.0.0.0:0", state).await;
    let url = format!("{base}/metrics");
    let missing = client.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let body = missing.text().await.unwrap();
    assert!(
        body.contains("missing bearer token") && !body.contains(TOKEN),
        "{body}"
    );
    let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert!(
        right
            .text()
            .await
            .unwrap()
            .contains("genq_keys{state=\"active\"}")
    );
    // /healthz stays open.
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    stop.cancel();

    // Without the option (the default), /metrics stays open beside a token.
    let state = ApiState::new(db.pool.clone(), Some(TOKEN.into()))
        .with_metrics_token(genq::api::metrics_need_token(public, false));
    let (base, stop) = serve("0.0.0.0:0", state).await;
    assert_eq!(
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    stop.cancel();
}
