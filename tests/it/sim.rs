//! End-to-end tests of the simulated Images API: a real server on 127.0.0.1:0, real HTTP.
//! They assert behaviour only; the few time-dependent checks use limits slow enough (1/min)
//! or waits wide enough that machine speed cannot change the outcome.

use std::time::{Duration, SystemTime};

use base64::Engine;
use genq_sim::edits::InputPart;
use genq_sim::{KeyBehavior, RetryHeader, Sim, SimConfig, SimKey, SimStats, key_id};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const OK_KEY: &str = "sk-test-general-0000WXYZ";
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

struct Running {
    base: String,
    sim: Sim,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn rate_key(secret: &str, retry_header: RetryHeader, headers: bool) -> SimKey {
    SimKey {
        burst: Some(2),
        retry_header,
        send_ratelimit_headers: headers,
        ..SimKey::new(secret, 60)
    }
}

fn config() -> SimConfig {
    SimConfig {
        keys: vec![
            SimKey {
                burst: Some(100),
                ..SimKey::new(OK_KEY, 6000)
            },
            SimKey {
                behavior: KeyBehavior::InsufficientQuota,
                ..SimKey::new("sk-test-broke", 60)
            },
            rate_key("sk-rl-seconds", RetryHeader::RetryAfterSeconds, true),
            rate_key("sk-rl-ms", RetryHeader::RetryAfterMs, false),
            rate_key("sk-rl-date", RetryHeader::RetryAfterHttpDate, false),
            rate_key("sk-rl-reset", RetryHeader::ResetRequests, false),
            rate_key("sk-rl-none", RetryHeader::None, false),
            SimKey {
                burst: Some(5),
                images_per_minute: Some(8),
                ..SimKey::new("sk-test-crowd", 1)
            },
        ],
        ..SimConfig::default()
    }
}

async fn start() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let sim = Sim::new(config());
    let shutdown = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, shutdown.clone()));
    Running {
        base,
        sim,
        shutdown,
        client: reqwest::Client::new(),
    }
}

impl Running {
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send().await.expect("request")
    }

    async fn generate(&self, key: &str, prompt: &str) -> reqwest::Response {
        let body = json!({"model": "gpt-image-1-mini", "prompt": prompt});
        self.post("/v1/images/generations", Some(key), body).await
    }
}

async fn error_code(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("json body");
    body["error"]["code"].as_str().unwrap_or("null").to_string()
}

/// Parses the `x-ratelimit-reset-requests` forms the sim sends (`20ms`, `1s`, `1.5s`).
fn go_millis(text: &str) -> u64 {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().expect("ms");
    }
    let secs: f64 = text
        .strip_suffix('s')
        .expect("s suffix")
        .parse()
        .expect("secs");
    (secs * 1000.0).round() as u64
}

#[tokio::test]
async fn success_returns_decodable_pngs() {
    let sim = start().await;
    let body = json!({"model": "gpt-image-1", "prompt": "a red fox", "n": 2, "quality": "low"});
    for path in ["/v1/images/generations", "/images/generations"] {
        let resp = sim.post(path, Some(OK_KEY), body.clone()).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()
                .contains_key("x-ratelimit-remaining-requests")
        );
        let value: Value = resp.json().await.expect("json");
        assert_eq!(value["data"].as_array().expect("data").len(), 2);
        assert_eq!(value["output_format"], "png");
        let b64 = value["data"][0]["b64_json"].as_str().expect("b64_json");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64");
        assert!(png.starts_with(&PNG_SIGNATURE));
    }
    let stats = sim.sim.stats();
    assert_eq!(stats.keys[&key_id(OK_KEY)].images, 4);
}

#[tokio::test]
async fn async_openai_client_round_trip() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::images::{CreateImageRequestArgs, Image, ImageModel};
    let sim = start().await;
    let client = |key: &str| {
        let config = OpenAIConfig::new()
            .with_api_base(format!("{}/v1", sim.base))
            .with_api_key(key);
        async_openai::Client::with_config(config)
    };
    let request = CreateImageRequestArgs::default()
        .model(ImageModel::GptImage1Mini)
        .prompt("a lighthouse")
        .build()
        .expect("request");
    let images = client(OK_KEY)
        .images()
        .generate(request.clone())
        .await
        .expect("200");
    assert!(matches!(images.data[0].as_ref(), Image::B64Json { .. }));
    match client("sk-nobody-12345678")
        .images()
        .generate(request)
        .await
    {
        Err(async_openai::error::OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code, 401);
            assert_eq!(e.api_error.code.as_deref(), Some("invalid_api_key"));
        }
        other => panic!("expected a 401 ApiError, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_or_missing_key_is_401_without_echoing_the_secret() {
    let sim = start().await;
    let secret = "sk-not-a-real-key-ABCDEFGH9876";
    let resp = sim.generate(secret, "hello").await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.expect("body");
    assert!(!text.contains(secret));
    assert!(text.contains("sk-...9876"));
    assert!(text.contains("invalid_api_key"));
    let anon = sim
        .post(
            "/v1/images/generations",
            None,
            json!({"model": "gpt-image-1", "prompt": "x"}),
        )
        .await;
    assert_eq!(anon.status(), 401);
    let log = sim.sim.log();
    assert_eq!(log[0].key_id, key_id(secret));
    assert_eq!(log[1].key_id, "anonymous");
    assert!(
        serde_json::to_string(&log)
            .expect("json")
            .find(secret)
            .is_none()
    );
}

#[tokio::test]
async fn quota_policy_validation_and_injected_faults() {
    let sim = start().await;
    let broke = sim.generate("sk-test-broke", "anything").await;
    assert_eq!(broke.status(), 429);
    assert_eq!(error_code(broke).await, "insufficient_quota");

    let policy = sim.generate(OK_KEY, "something forbidden here").await;
    assert_eq!(policy.status(), 400);
    assert_eq!(error_code(policy).await, "content_policy_violation");

    let bad = sim
        .post(
            "/v1/images/generations",
            Some(OK_KEY),
            json!({"model": "gpt-image-1", "prompt": "x", "n": 11}),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "n");

    let unknown = sim
        .post(
            "/v1/images/generations",
            Some(OK_KEY),
            json!({"model": "dall-e-2", "prompt": "x"}),
        )
        .await;
    assert_eq!(unknown.status(), 400);

    let e500 = sim.generate(OK_KEY, "fail please [sim:500]").await;
    assert_eq!(e500.status(), 500);
    let body: Value = e500.json().await.expect("json");
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["code"].is_null());
    assert_eq!(sim.generate(OK_KEY, "[sim:503]").await.status(), 503);
    assert_eq!(
        sim.generate(OK_KEY, "slow [sim:sleep=50]").await.status(),
        200
    );

    let stats = sim.sim.stats();
    let general = &stats.keys[&key_id(OK_KEY)];
    assert_eq!((general.content_policy, general.bad_request), (1, 2));
    assert_eq!((general.server_errors, general.ok), (2, 1));
    assert_eq!(stats.keys[&key_id("sk-test-broke")].insufficient_quota, 1);
}

#[tokio::test]
async fn rate_limit_hints_for_every_retry_header() {
    let sim = start().await;
    for secret in [
        "sk-rl-seconds",
        "sk-rl-ms",
        "sk-rl-date",
        "sk-rl-reset",
        "sk-rl-none",
    ] {
        assert_eq!(sim.generate(secret, "one").await.status(), 200, "{secret}");
        assert_eq!(sim.generate(secret, "two").await.status(), 200, "{secret}");
        let third = sim.generate(secret, "three").await;
        assert_eq!(third.status(), 429, "{secret}");
        let headers = third.headers().clone();
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match secret {
            "sk-rl-seconds" => {
                assert_eq!(get("retry-after").as_deref(), Some("1"));
                assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("60"));
                assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("0"));
            }
            "sk-rl-ms" => {
                let ms: u64 = get("retry-after-ms")
                    .expect("retry-after-ms")
                    .parse()
                    .expect("ms");
                assert!((500..=1000).contains(&ms), "{ms}");
                // the hint is honest: waiting exactly that long is enough
                tokio::time::sleep(Duration::from_millis(ms)).await;
                assert_eq!(sim.generate(secret, "after the wait").await.status(), 200);
            }
            "sk-rl-date" => {
                let date = httpdate::parse_http_date(&get("retry-after").expect("retry-after"))
                    .expect("HTTP date");
                let ahead = date.duration_since(SystemTime::now()).unwrap_or_default();
                assert!(
                    ahead > Duration::ZERO && ahead <= Duration::from_secs(2),
                    "{ahead:?}"
                );
            }
            "sk-rl-reset" => {
                let ms = go_millis(&get("x-ratelimit-reset-requests").expect("reset header"));
                assert!((500..=1000).contains(&ms), "{ms}");
            }
            _ => {
                for name in [
                    "retry-after",
                    "retry-after-ms",
                    "x-ratelimit-reset-requests",
                ] {
                    assert!(get(name).is_none(), "{name}");
                }
            }
        }
        let body: Value = third.json().await.expect("json");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "requests");
    }
    let stats = sim.sim.stats();
    assert_eq!(stats.total.rate_limited, 5);
    assert_eq!(stats.limit_exceeded, 0);
}

#[tokio::test]
async fn concurrent_burst_never_exceeds_the_limit() {
    let sim = start().await;
    let crowd =
        (0..20).map(|i| sim.generate("sk-test-crowd", if i % 2 == 0 { "even" } else { "odd" }));
    let statuses: Vec<u16> = futures::future::join_all(crowd)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    // 1 request/min with burst 5: exactly five pass, however the requests interleave
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 5);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 15);
    let stats = sim.sim.stats();
    assert_eq!(stats.limit_exceeded, 0);
    assert_eq!(stats.keys[&key_id("sk-test-crowd")].ok, 5);
}

#[tokio::test]
async fn images_per_minute_costs_n() {
    let sim = start().await;
    // crowd key: 8 images/min, burst 5 -> 3 images fit, another 3 do not
    let body = json!({"model": "sim-anything", "prompt": "p", "n": 3});
    let first = sim
        .post(
            "/v1/images/generations",
            Some("sk-test-crowd"),
            body.clone(),
        )
        .await;
    assert_eq!(first.status(), 200);
    let second = sim
        .post("/v1/images/generations", Some("sk-test-crowd"), body)
        .await;
    assert_eq!(second.status(), 429);
    let message: Value = second.json().await.expect("json");
    let text = message["error"]["message"].as_str().expect("message");
    assert!(
        text.contains(
            "in organization org-sim on images per min (IPM): Limit 8, Used 3, Requested 3."
        ),
        "{text}"
    );
}

#[tokio::test]
async fn observer_endpoints() {
    let sim = start().await;
    assert_eq!(sim.generate(OK_KEY, "a").await.status(), 200);
    assert_eq!(sim.generate("sk-test-broke", "b").await.status(), 429);
    let log: Vec<Value> = sim
        .client
        .get(format!("{}/_sim/log", sim.base))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["key_id"], key_id(OK_KEY));
    assert_eq!(
        (log[0]["status"].as_u64(), log[0]["n"].as_u64()),
        (Some(200), Some(1))
    );
    assert_eq!(log[1]["error_code"], "insufficient_quota");
    let stats: SimStats = sim
        .client
        .get(format!("{}/_sim/stats", sim.base))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats, sim.sim.stats());
    assert_eq!((stats.total.requests, stats.total.ok), (2, 1));
    let missing = sim
        .client
        .get(format!("{}/v1/nope", sim.base))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
}

/// The sim names keys by the contract's formula itself (it does not depend
/// on genq); the ids must stay the ones genq shows.
#[test]
fn the_sims_key_ids_are_genqs() {
    for secret in ["sk-a", "sk-proj-0123456789abcdef", "sk-ünïcode", ""] {
        assert_eq!(
            genq_sim::key_id(secret),
            genq::secret::ApiSecret::new(secret).key_id(),
            "{secret:?}"
        );
    }
}

/// An edit through async-openai's own multipart form: three images and a
/// mask reach the sim, which checks them like the API and records each part.
#[tokio::test]
async fn an_edit_with_three_images_and_a_mask_reaches_the_sim_whole() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::images::{
        CreateImageEditRequestArgs, Image, ImageEditInput, ImageInput, ImageModel, InputFidelity,
    };
    let sim = start().await;
    let client = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{}/v1", sim.base))
            .with_api_key(OK_KEY),
    );
    let png = |w, h| genq_sim::png::solid(w, h, [200, 40, 40, 255]);
    let inputs = ImageEditInput::Images(vec![
        ImageInput::from_vec_u8("hero.png".into(), png(64, 64)),
        ImageInput::from_vec_u8("pose.png".into(), png(32, 48)),
        ImageInput::from_vec_u8("palette.png".into(), png(16, 16)),
    ]);
    let request = CreateImageEditRequestArgs::default()
        .model(ImageModel::GptImage1Mini)
        .prompt("the hero in the pose, in the palette")
        .image(inputs)
        .mask(ImageInput::from_vec_u8("mask.png".into(), png(64, 64)))
        .input_fidelity(InputFidelity::High)
        .n(2)
        .build()
        .expect("request");
    let images = client.images().edit(request).await.expect("200");
    assert_eq!(images.data.len(), 2);
    assert!(matches!(images.data[0].as_ref(), Image::B64Json { .. }));

    let log = sim.sim.log();
    assert_eq!(log.len(), 1);
    let seen: Vec<_> = log[0].parts.iter().map(InputPart::seen).collect();
    let len = |w, h| png(w, h).len() as u64;
    assert_eq!(
        seen,
        [
            ("image[]", Some("hero.png"), Some("png"), len(64, 64)),
            ("image[]", Some("pose.png"), Some("png"), len(32, 48)),
            ("image[]", Some("palette.png"), Some("png"), len(16, 16)),
            ("mask", Some("mask.png"), Some("png"), len(64, 64)),
        ]
    );
    assert_eq!((log[0].status, log[0].n), (200, 2));
}

/// What the API refuses in an edit's files, the sim refuses too.
#[tokio::test]
async fn an_edit_the_api_would_refuse_is_a_400_naming_the_file() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::images::{CreateImageEditRequestArgs, ImageEditInput, ImageInput};
    let sim = start().await;
    let client = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{}/v1", sim.base))
            .with_api_key(OK_KEY),
    );
    let gif = ImageInput::from_vec_u8("anim.gif".into(), b"GIF89a....".to_vec());
    let request = CreateImageEditRequestArgs::default()
        .prompt("x")
        .image(ImageEditInput::Image(gif))
        .build()
        .expect("request");
    match client.images().edit(request).await {
        Err(async_openai::error::OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code, 400);
            assert!(
                e.api_error
                    .message
                    .contains("'anim.gif': unsupported image format"),
                "{}",
                e.api_error.message
            );
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert!(sim.sim.log().is_empty(), "a refused form spends nothing");
}
