//! The HTTP API end to end: a real server on 127.0.0.1:0 against a fresh
//! migrated database, driven with reqwest.

mod api_server;

use std::net::SocketAddr;

use api_server::{Api, assert_error};
use genq::api::check_listen;
use genq::job::JobState;
use genq::store::jobs::{self, Finish};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "test-token-123";

#[tokio::test]
async fn submit_show_list_and_health() {
    let api = Api::start(None).await;
    assert_eq!(
        api.get("/healthz").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );

    let job = json!({
        "prompt": "a red fox", "model": "gpt-image-1.5", "params": {"size": "1024x1024"},
        "priority": 7, "run_at": "2020-01-01T00:00:00Z", "max_attempts": 3,
        "queue": "default", "expires_at": "2099-01-01T00:00:00Z",
    });
    let (status, body) = api.post("/v1/jobs", job).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["state"], "queued");
    let id = body["id"].as_str().unwrap().to_string();

    let (status, body) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"]["prompt"], "a red fox");
    assert_eq!(body["job"]["priority"], 7);
    assert_eq!(body["job"]["max_attempts"], 3);
    assert_eq!(body["job"]["params"], json!({"size": "1024x1024"}));
    assert_eq!(body["attempts"], json!([]));

    api.submit("a blue whale").await;
    let (status, body) = api.get("/v1/jobs?state=queued&limit=1&since=1h").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = body["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["prompt"], "a blue whale", "newest first");
    let (_, body) = api.get("/v1/jobs").await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2);
    let (_, body) = api.get("/v1/jobs?state=failed").await;
    assert_eq!(body["jobs"], json!([]));

    assert_error(
        api.get(&format!("/v1/jobs/{}", Uuid::new_v4())).await,
        StatusCode::NOT_FOUND,
        "no job with id",
    );
    assert_error(api.get("/v1/nope").await, StatusCode::NOT_FOUND, "no route");
}

#[tokio::test]
async fn idempotent_resubmit_returns_the_first_job() {
    let api = Api::start(None).await;
    let job = json!({ "prompt": "a fox", "idempotency_key": "order-42" });
    let (first, a) = api.post("/v1/jobs", job.clone()).await;
    let (again, b) = api.post("/v1/jobs", job).await;
    assert_eq!((first, again), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["state"], "queued");
}

#[tokio::test]
async fn a_reused_idempotency_key_with_a_different_job_is_409() {
    let api = Api::start(None).await;
    let job =
        json!({ "prompt": "a fox", "params": {"size": "1024x1024"}, "idempotency_key": "order-7" });
    let (first, a) = api.post("/v1/jobs", job.clone()).await;
    assert_eq!(first, StatusCode::CREATED, "{a}");
    // The same job, with its defaults spelled out, is the same job.
    let spelled = json!({ "prompt": "a fox", "params": {"size": "1024x1024"}, "queue": "default",
        "model": "gpt-image-2", "priority": 0, "max_attempts": 5, "idempotency_key": "order-7" });
    let (again, b) = api.post("/v1/jobs", spelled).await;
    assert_eq!((again, &b["id"]), (StatusCode::OK, &a["id"]), "{b}");
    // (change, fields named)
    let changes = [
        (json!({"prompt": "a wolf"}), "different prompt"),
        (json!({"params": {"size": "1536x1024"}}), "different params"),
        (
            json!({"priority": 9, "max_attempts": 2}),
            "different priority, max_attempts",
        ),
        (json!({"queue": "bulk"}), "different queue"),
        (
            json!({"expires_at": "2099-01-01T00:00:00Z"}),
            "different expires_at",
        ),
        (
            json!({"run_at": "2099-01-01T00:00:00Z"}),
            "different run_at",
        ),
    ];
    for (change, want) in changes {
        let mut body = job.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let got = api.post("/v1/jobs", body).await;
        assert_error(got.clone(), StatusCode::CONFLICT, want);
        assert_error(got, StatusCode::CONFLICT, a["id"].as_str().unwrap());
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(total, 1);
}

#[tokio::test]
async fn the_largest_valid_request_fits_the_body_limit() {
    let api = Api::start(None).await;
    let params = json!({"size": "1024x1024", "n": 1});
    // 32,000 characters of 3 bytes (96,000 bytes), of 4 bytes, and as JSON escapes.
    let cat = "猫".repeat(32_000);
    let emoji = "😀".repeat(32_000);
    for prompt in [&cat, &emoji] {
        let (status, body) = api
            .post("/v1/jobs", json!({ "prompt": prompt, "params": params }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap();
        let (_, shown) = api.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(shown["job"]["prompt"].as_str(), Some(prompt.as_str()));
    }
    let escaped = format!(
        "{{\"prompt\": \"{}\", \"params\": {params}}}",
        "\\ud83d\\ude00".repeat(32_000)
    );
    let req = api
        .req(reqwest::Method::POST, "/v1/jobs")
        .header("content-type", "application/json")
        .body(escaped);
    let (status, body) = api.send(req).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // One character more is refused for its length, not its size.
    assert_error(
        api.post("/v1/jobs", json!({ "prompt": "猫".repeat(32_001) }))
            .await,
        StatusCode::BAD_REQUEST,
        "32000",
    );
}

#[tokio::test]
async fn listing_pages_past_the_newest_thousand_with_a_cursor() {
    let api = Api::start(None).await;
    // 2,345 jobs, many sharing one created_at (one INSERT), a few apart.
    genq_testkit::insert_jobs(&api.db.pool, 2_000, json!({})).await;
    for i in 0..345 {
        if i % 100 == 0 {
            genq_testkit::insert_jobs(&api.db.pool, 1, json!({})).await;
        } else {
            api.submit(&format!("job {i}")).await;
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    let mut path = "/v1/jobs?limit=1000".to_string();
    loop {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        for job in body["jobs"].as_array().unwrap() {
            assert!(
                seen.insert(job["id"].as_str().unwrap().to_string()),
                "seen twice: {job}"
            );
        }
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?limit=1000&cursor={cursor}"),
            None => break,
        }
        // A job enqueued meanwhile is newer than the cursor: not on later pages.
        if pages == 1 {
            api.submit("late").await;
        }
    }
    assert_eq!((seen.len(), pages), (2_345, 3));
    // With a state filter too.
    let (_, body) = api.get("/v1/jobs?state=queued&limit=2").await;
    let cursor = body["next_cursor"].as_str().unwrap();
    let (_, next) = api
        .get(&format!("/v1/jobs?state=queued&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(next["jobs"].as_array().unwrap().len(), 2);
    assert_ne!(next["jobs"][0]["id"], body["jobs"][0]["id"]);
    assert_error(
        api.get("/v1/jobs?cursor=bogus").await,
        StatusCode::BAD_REQUEST,
        "pass next_cursor",
    );
}

#[tokio::test]
async fn debug_output_never_shows_the_token() {
    let db = genq_testkit::TestDb::new().await;
    let state = genq::api::ApiState::new(db.pool.clone(), Some(TOKEN.into()));
    let shown = format!(
        "{state:?} {:?} {:#?}",
        state.clone().with_metrics_token(true),
        state
    );
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("token: Some(\"***\")"), "{shown}");
}

#[tokio::test]
async fn bad_input_is_400_naming_the_problem() {
    let api = Api::start(None).await;
    let cases = [
        (json!({"prompt": ""}), "prompt is empty"),
        (
            json!({"prompt": "fox", "priority": -1}),
            "priority -1 is out of range",
        ),
        (
            json!({"prompt": "fox", "params": [1]}),
            "params must be a JSON object",
        ),
        (json!({"prompt": "fox", "prio": 3}), "unknown field `prio`"),
        (json!({"model": "x"}), "missing field `prompt`"),
        (json!({"prompt": 5}), "invalid type"),
        // The model catalogue: retired models, sizes, n, prompt length, unknown params.
        (
            json!({"prompt": "fox", "model": "dall-e-3"}),
            "dall-e-3\" is retired",
        ),
        (
            json!({"prompt": "fox", "model": "gpt-image-1.5", "params": {"size": "1792x1024"}}),
            "size \"1792x1024\" is not supported by gpt-image-1.5",
        ),
        (
            json!({"prompt": "fox", "params": {"n": 11}}),
            "n 11 is not supported",
        ),
        (
            json!({"prompt": "fox", "params": {"colour": "red"}}),
            "unknown parameter \"colour\"",
        ),
        (json!({"prompt": "x".repeat(32_001)}), "32000"),
    ];
    for (body, want) in cases {
        assert_error(
            api.post("/v1/jobs", body).await,
            StatusCode::BAD_REQUEST,
            want,
        );
    }
    assert_error(
        api.post_raw("/v1/jobs", "{\"prompt\": ").await,
        StatusCode::BAD_REQUEST,
        "not valid JSON",
    );
    let big = json!({ "prompt": "x".repeat(520 * 1024) });
    assert_error(
        api.post("/v1/jobs", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "512 KiB",
    );
    assert_error(
        api.get("/v1/jobs/not-a-uuid").await,
        StatusCode::BAD_REQUEST,
        "\"not-a-uuid\" is not a UUID",
    );
    assert_error(
        api.post("/v1/jobs/123/cancel", json!({})).await,
        StatusCode::BAD_REQUEST,
        "is not a UUID",
    );
    assert_error(
        api.get("/v1/jobs?state=done").await,
        StatusCode::BAD_REQUEST,
        "use one of queued, running, succeeded, failed, cancelled",
    );
    assert_error(
        api.get("/v1/jobs?since=yesterday").await,
        StatusCode::BAD_REQUEST,
        "1h",
    );
    assert_error(
        api.get("/v1/jobs?limit=0").await,
        StatusCode::BAD_REQUEST,
        "limit",
    );
    assert_error(
        api.get("/v1/jobs?colour=red").await,
        StatusCode::BAD_REQUEST,
        "colour",
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(total, 0);
}

#[tokio::test]
async fn auth_is_required_when_a_token_is_set() {
    let api = Api::start(Some(TOKEN)).await;
    let url = format!("{}/v1/jobs", api.base);
    let missing = api.send(api.client.get(&url)).await;
    assert_error(missing, StatusCode::UNAUTHORIZED, "missing bearer token");
    let wrong = api.send(api.client.get(&url).bearer_auth("nope")).await;
    assert_error(wrong, StatusCode::UNAUTHORIZED, "wrong bearer token");
    let post = api
        .send(api.client.post(&url).json(&json!({"prompt": "fox"})))
        .await;
    assert_eq!(post.0, StatusCode::UNAUTHORIZED);
    // The right token works, and /healthz is open.
    assert_eq!(api.get("/v1/jobs").await.0, StatusCode::OK);
    api.submit("fox").await;
    let health = api
        .send(api.client.get(format!("{}/healthz", api.base)))
        .await;
    assert_eq!(health.0, StatusCode::OK);
}

#[tokio::test]
async fn cancel_only_queued_jobs() {
    let api = Api::start(Some(TOKEN)).await;
    let queued = api.submit("to cancel").await;
    let (status, body) = api
        .post(&format!("/v1/jobs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"]["state"], "cancelled");
    assert!(body["job"]["finished_at"].is_string());
    assert_error(
        api.post(&format!("/v1/jobs/{queued}/cancel"), json!({}))
            .await,
        StatusCode::CONFLICT,
        "already cancelled",
    );

    let done = api.submit("to succeed").await;
    api.finish(
        done,
        Finish::Succeeded {
            result: json!({"images": 1}),
        },
    )
    .await;
    assert_error(
        api.post(&format!("/v1/jobs/{done}/cancel"), json!({}))
            .await,
        StatusCode::CONFLICT,
        "already succeeded",
    );
    assert_error(
        api.post(&format!("/v1/jobs/{}/cancel", Uuid::new_v4()), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "no job with id",
    );
}

#[tokio::test]
async fn retry_failed_jobs_with_fresh_attempts() {
    let api = Api::start(None).await;
    let failed = api.submit("to fail").await;
    api.finish(
        failed,
        Finish::Failed {
            error: "content policy".into(),
        },
    )
    .await;
    let job = jobs::get(&api.db.pool, failed).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Failed, 1));

    let (status, body) = api
        .post(&format!("/v1/jobs/{failed}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"]["state"], "queued");
    assert_eq!(body["job"]["attempts"], 0);
    assert_eq!(body["job"]["finished_at"], Value::Null);
    assert_eq!(body["job"]["last_error"], Value::Null);

    assert_error(
        api.post(&format!("/v1/jobs/{failed}/retry"), json!({}))
            .await,
        StatusCode::CONFLICT,
        "already queued",
    );
    assert_error(
        api.post(&format!("/v1/jobs/{}/retry", Uuid::new_v4()), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "no job with id",
    );
}

#[tokio::test]
async fn views_show_failures_and_queue_depth() {
    let api = Api::start(None).await;
    let failed = api.submit("to fail").await;
    api.finish(
        failed,
        Finish::Failed {
            error: "bad prompt".into(),
        },
    )
    .await;
    api.submit("waiting").await;
    let (id, last_error): (Uuid, Option<String>) =
        sqlx::query_as("SELECT id, last_error FROM genq.failed_jobs")
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!((id, last_error.as_deref()), (failed, Some("bad prompt")));

    let stats = genq::store::inspect::queue_stats(&api.db.pool)
        .await
        .unwrap();
    let states: Vec<_> = stats.iter().map(|s| (s.state, s.jobs)).collect();
    assert_eq!(states, [(JobState::Failed, 1), (JobState::Queued, 1)]);
    let queued = &stats[1];
    assert!(queued.oldest_queued_at.is_some() && queued.oldest_queued_age_s.unwrap() >= 0.0);
    assert!(stats[0].oldest_queued_at.is_none());
}

#[test]
fn check_listen_refuses_public_addresses_without_a_token() {
    let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let err = check_listen(public, None).unwrap_err();
    assert!(err.contains("GENQ_API_TOKEN"), "{err}");
    assert!(check_listen(public, Some(TOKEN)).is_ok());
    assert!(check_listen("127.0.0.1:8080".parse().unwrap(), None).is_ok());
}
