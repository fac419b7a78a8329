//! The sim's stricter limits, over real HTTP: daily caps, limits shared by
//! the keys of one project (and the headers that show it), a 403 for one
//! model, and the wait each 429 announced, logged for observers.

use genq_sim::{RetryHeader, Sim, SimConfig, SimKey, key_id};
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

async fn generate_n(base: &str, key: &str, n: u32) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/images/generations"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-image-2", "prompt": "a fox", "n": n}))
        .send()
        .await
        .unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn message(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    body["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn images_per_day_counts_n_and_refusals_are_not_counted() {
    // A 30 s day; the test needs well under a second of it.
    let (sim, base, stop) = start(SimConfig {
        keys: vec![
            SimKey {
                images_per_day: Some(5),
                burst: Some(10),
                organization: Some("org-daily".into()),
                ..SimKey::new("sk-ipd", 6000)
            },
            SimKey {
                requests_per_day: Some(2),
                burst: Some(10),
                retry_header: RetryHeader::RetryAfterMs,
                ..SimKey::new("sk-rpd", 6000)
            },
        ],
        day_window_secs: 30,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(generate_n(&base, "sk-ipd", 3).await.status(), 200);
    let over = generate_n(&base, "sk-ipd", 3).await;
    assert_eq!(over.status(), 429);
    assert_eq!(header(&over, "openai-organization").unwrap(), "org-daily");
    let retry: u64 = header(&over, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    // the rate-limit family's reset says the same wait (to the millisecond)
    let reset = header(&over, "x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s'), "{reset}");
    let text = message(over).await;
    assert!(
        text.starts_with(
            "Rate limit reached for gpt-image-2 in organization org-daily on images per day \
             (IPD): Limit 5, Used 3, Requested 3. Please try again in "
        ),
        "{text}"
    );
    // the refused request spent nothing: two more images still fit, then none
    assert_eq!(generate_n(&base, "sk-ipd", 2).await.status(), 200);
    assert_eq!(generate_n(&base, "sk-ipd", 1).await.status(), 429);

    assert_eq!(generate_n(&base, "sk-rpd", 1).await.status(), 200);
    assert_eq!(generate_n(&base, "sk-rpd", 1).await.status(), 200);
    for _ in 0..2 {
        let over = generate_n(&base, "sk-rpd", 1).await;
        assert_eq!(over.status(), 429);
        let ms: u64 = header(&over, "retry-after-ms").unwrap().parse().unwrap();
        assert!((1..=30_000).contains(&ms), "{ms}");
        let text = message(over).await;
        // refusals are not counted as admitted: still "Used 2"
        assert!(
            text.contains(
                "in organization org-sim on requests per day (RPD): Limit 2, Used 2, Requested 1."
            ),
            "{text}"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.keys[&key_id("sk-ipd")].ok, 2);
    assert_eq!(stats.keys[&key_id("sk-ipd")].images, 5);
    assert_eq!(stats.keys[&key_id("sk-rpd")].rate_limited, 2);
    assert_eq!(stats.limit_exceeded, 0);
    stop.cancel();
}

#[tokio::test]
async fn without_ratelimit_headers_200s_are_bare_and_429s_keep_only_their_hint() {
    let styles = [
        (
            "sk-bare-seconds",
            RetryHeader::RetryAfterSeconds,
            Some("retry-after"),
        ),
        (
            "sk-bare-ms",
            RetryHeader::RetryAfterMs,
            Some("retry-after-ms"),
        ),
        (
            "sk-bare-date",
            RetryHeader::RetryAfterHttpDate,
            Some("retry-after"),
        ),
        (
            "sk-bare-reset",
            RetryHeader::ResetRequests,
            Some("x-ratelimit-reset-requests"),
        ),
        ("sk-bare-none", RetryHeader::None, None),
    ];
    let mut keys: Vec<SimKey> = styles
        .iter()
        .map(|&(secret, retry_header, _)| SimKey {
            retry_header,
            send_ratelimit_headers: false,
            ..SimKey::new(secret, 1)
        })
        .collect();
    keys.push(SimKey {
        requests_per_day: Some(1),
        retry_header: RetryHeader::RetryAfterMs,
        send_ratelimit_headers: false,
        ..SimKey::new("sk-bare-daily", 6000)
    });
    let (_sim, base, stop) = start(SimConfig {
        keys,
        ..SimConfig::default()
    })
    .await;
    let family = [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ];
    let hints = [
        "retry-after",
        "retry-after-ms",
        "x-ratelimit-reset-requests",
    ];
    let mut cases: Vec<(&str, Option<&str>)> =
        styles.iter().map(|&(s, _, hint)| (s, hint)).collect();
    cases.push(("sk-bare-daily", Some("retry-after-ms")));
    for (secret, hint) in cases {
        let ok = generate(&base, secret, "gpt-image-2").await;
        assert_eq!(ok.status(), 200, "{secret}");
        for name in family {
            assert!(header(&ok, name).is_none(), "{secret}: 200 carries {name}");
        }
        let limited = generate(&base, secret, "gpt-image-2").await;
        assert_eq!(limited.status(), 429, "{secret}");
        for name in hints {
            assert_eq!(
                header(&limited, name).is_some(),
                Some(name) == hint,
                "{secret}: {name}"
            );
        }
        for name in &family[..2] {
            assert!(
                header(&limited, name).is_none(),
                "{secret}: 429 carries {name}"
            );
        }
        // the message always says when, as OpenAI's does
        assert!(message(limited).await.contains("Please try again in"));
    }
    stop.cancel();
}

#[tokio::test]
async fn a_project_shares_its_daily_count_and_429s_name_its_organization() {
    let member = |secret: &str| SimKey {
        organization: Some("org-shared".into()),
        project: Some("proj_day".into()),
        requests_per_day: Some(2),
        burst: Some(10),
        ..SimKey::new(secret, 6000)
    };
    let (sim, base, stop) = start(SimConfig {
        keys: vec![
            member("sk-day-1"),
            member("sk-day-2"),
            SimKey {
                organization: Some("org-rpm".into()),
                project: Some("proj_rpm".into()),
                ..SimKey::new("sk-rpm-1", 1)
            },
            SimKey {
                project: Some("proj_rpm".into()),
                ..SimKey::new("sk-rpm-2", 1)
            },
        ],
        ..SimConfig::default()
    })
    .await;
    assert_eq!(
        generate(&base, "sk-day-1", "gpt-image-2").await.status(),
        200
    );
    assert_eq!(
        generate(&base, "sk-day-2", "gpt-image-2").await.status(),
        200
    );
    let over = generate(&base, "sk-day-1", "gpt-image-2").await;
    assert_eq!(over.status(), 429);
    assert_eq!(header(&over, "openai-organization").unwrap(), "org-shared");
    assert_eq!(header(&over, "openai-project").unwrap(), "proj_day");
    let text = message(over).await;
    assert!(
        text.contains("in organization org-shared on requests per day (RPD): Limit 2, Used 2"),
        "{text}"
    );
    // per minute: the project's one request a minute, spent by its other key
    assert_eq!(
        generate(&base, "sk-rpm-2", "gpt-image-2").await.status(),
        200
    );
    let over = generate(&base, "sk-rpm-1", "gpt-image-2").await;
    assert_eq!(over.status(), 429);
    let text = message(over).await;
    assert!(
        text.starts_with(
            "Rate limit reached for gpt-image-2 in organization org-rpm on requests per min \
             (RPM): Limit 1, Used 1, Requested 1."
        ),
        "{text}"
    );
    let log = sim.log();
    assert_eq!(log[0].project.as_deref(), Some("proj_day"));
    assert_eq!(log[4].project.as_deref(), Some("proj_rpm"));
    stop.cancel();
}

#[tokio::test]
async fn the_arrival_witness_fails_a_client_that_sends_too_fast() {
    let project = |secret: &str| SimKey {
        project: Some("proj_w".into()),
        ..SimKey::new(secret, 60)
    };
    let (sim, base, stop) = start(SimConfig {
        keys: vec![
            // one a second, the default burst of 1
            SimKey::new("sk-hasty", 60),
            SimKey::new("sk-patient", 600),
            SimKey {
                requests_per_day: Some(1),
                ..SimKey::new("sk-capped", 60)
            },
            project("sk-w1"),
            project("sk-w2"),
        ],
        ..SimConfig::default()
    })
    .await;
    assert!(sim.windows_over_limit().is_empty());
    // three at once: the second and third are over, though the sim refused them
    for want in [200, 429, 429] {
        assert_eq!(
            generate(&base, "sk-hasty", "gpt-image-2").await.status(),
            want
        );
    }
    // one every 100 ms is the limit at 600/min; waiting longer is clean
    for _ in 0..3 {
        assert_eq!(
            generate(&base, "sk-patient", "gpt-image-2").await.status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // refused by the daily cap, a 400, whatever: every request counts
    assert_eq!(
        generate(&base, "sk-capped", "gpt-image-2").await.status(),
        200
    );
    assert_eq!(
        generate(&base, "sk-capped", "gpt-image-2").await.status(),
        429
    );
    assert_eq!(
        generate(&base, "sk-capped", "no-such-model").await.status(),
        400
    );
    // each key of the project sends once: fine per key, twice too fast for the project
    assert_eq!(generate(&base, "sk-w1", "gpt-image-2").await.status(), 200);
    assert_eq!(generate(&base, "sk-w2", "gpt-image-2").await.status(), 429);

    let over = sim.windows_over_limit();
    let want: std::collections::BTreeMap<String, u64> = [
        (key_id("sk-hasty"), 2),
        (key_id("sk-capped"), 2),
        ("project:proj_w".to_string(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(over, want);
    let report = sim.arrivals();
    let hasty = &report.keys[&key_id("sk-hasty")];
    assert_eq!(
        (hasty.received, hasty.max_in_window, hasty.burst),
        (3, 3, 1)
    );
    assert_eq!(hasty.interval_ns, 1_000_000_000);
    assert_eq!(hasty.window_ns, 1_000_000_000);
    let patient = &report.keys[&key_id("sk-patient")];
    assert_eq!(
        (patient.received, patient.max_in_window, patient.early),
        (3, 1, 0)
    );
    assert_eq!(report.keys[&key_id("sk-w2")].early, 0);
    assert_eq!(report.projects["proj_w"].received, 2);
    // the sim itself admitted nothing over the limit
    assert_eq!(sim.stats().limit_exceeded, 0);
    // observers get the same over HTTP
    let served: genq_sim::ArrivalReport =
        reqwest::get(format!("{}/_sim/arrivals", base.trim_end_matches("/v1")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(served, sim.arrivals());
    stop.cancel();
}

#[tokio::test]
async fn early_after_429_counts_from_when_the_429_was_sent() {
    // one a second: a 429's wait is most of a second, far more than a loopback round trip
    let slow = |secret: &str, project: Option<&str>| SimKey {
        retry_header: RetryHeader::RetryAfterMs,
        project: project.map(str::to_string),
        ..SimKey::new(secret, 60)
    };
    let (sim, base, stop) = start(SimConfig {
        keys: vec![
            slow("sk-eager", None),
            slow("sk-p-a", Some("proj_e")),
            slow("sk-p-b", Some("proj_e")),
        ],
        // every answer leaves 50 ms after the request arrived
        latency: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    assert_eq!(
        generate(&base, "sk-eager", "gpt-image-2").await.status(),
        200
    );
    let limited = generate(&base, "sk-eager", "gpt-image-2").await;
    assert_eq!(limited.status(), 429);
    let ms: u64 = header(&limited, "retry-after-ms").unwrap().parse().unwrap();
    assert!((500..=1000).contains(&ms), "{ms}");
    // straight back: too early
    generate(&base, "sk-eager", "gpt-image-2").await;
    let log = sim.log();
    let record = &log[1];
    assert_eq!(record.retry_after_ms, Some(ms));
    let sent = record.sent_ns.unwrap();
    assert!(sent >= record.arrived_ns + 50_000_000, "{record:?}");
    assert!(record.retry_deadline_ns.unwrap() >= sent + ms * 1_000_000);
    let early = sim.early_after_429(&key_id("sk-eager"));
    assert_eq!(early.len(), 1, "{early:?}");
    assert!(early[0] > Duration::ZERO && early[0] <= Duration::from_millis(ms));
    // waiting the announced time (and a margin) is clean, whatever the answer
    let last_deadline = sim.log()[2].retry_deadline_ns.unwrap_or(0);
    let now_sent = sim.log()[2].sent_ns.unwrap();
    let rest = last_deadline.saturating_sub(now_sent);
    tokio::time::sleep(Duration::from_nanos(rest) + Duration::from_millis(20)).await;
    generate(&base, "sk-eager", "gpt-image-2").await;
    assert_eq!(sim.early_after_429(&key_id("sk-eager")).len(), 1);

    // in a project, a 429 to one key binds the other
    assert_eq!(generate(&base, "sk-p-a", "gpt-image-2").await.status(), 200);
    assert_eq!(generate(&base, "sk-p-a", "gpt-image-2").await.status(), 429);
    generate(&base, "sk-p-b", "gpt-image-2").await;
    assert!(sim.early_after_429(&key_id("sk-p-b")).is_empty());
    assert_eq!(sim.project_early_after_429("proj_e").len(), 1);
    assert!(sim.early_after_429("key-unknown0").is_empty());
    stop.cancel();
}
