//! Edits end to end: input images uploaded through the API, fetched from
//! URLs, or taken from another job's output; what is refused at submit;
//! chains that wait for their input job; retention of uploads.

use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use genq::api::ApiState;
use genq::job::{JobState, NewJob, Operation};
use genq::{InputRef, SubmitError, UrlPolicy};
use genq_sim::SimKey;
use genq_sim::edits::InputPart;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{count_state, wait_until};

fn png(width: u32, height: u32, shade: u8) -> Vec<u8> {
    genq_sim::png::solid(width, height, [shade, 40, 40, 255])
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The API over the rig's database: its base URL.
async fn serve(rig: &Rig, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(rig.db.pool.clone(), None);
    tokio::spawn(genq::api::serve(listener, state, stop.clone()));
    base
}

/// POST /v1/uploads with one file: the status and the JSON answer.
async fn upload(base: &str, name: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    );
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/uploads"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn upload_id(base: &str, name: &str, bytes: Vec<u8>) -> String {
    let (status, body) = upload(base, name, bytes).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn post_job(base: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn count(rig: &Rig, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM genq.{table}"
    )))
    .fetch_one(&rig.db.pool)
    .await
    .unwrap()
}

async fn stored(rig: &Rig, id: Uuid) -> genq::Job {
    genq::store::jobs::get(&rig.db.pool, id)
        .await
        .unwrap()
        .unwrap()
}

/// Submits an edit of `inputs`: its id.
async fn edit_of(rig: &Rig, prompt: &str, inputs: Vec<InputRef>) -> Uuid {
    let job = NewJob {
        inputs,
        ..NewJob::new(prompt)
    };
    genq::submit(&rig.db.pool, &job).await.unwrap().id
}

/// Submits a generation: its id.
async fn generation(rig: &Rig, prompt: &str) -> Uuid {
    genq::submit(&rig.db.pool, &NewJob::new(prompt))
        .await
        .unwrap()
        .id
}

/// Runs a worker until `done` jobs have ended (succeeded or failed).
async fn run_until_done(rig: &Rig, done: i64) {
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 2).await;
    wait_until(Duration::from_secs(30), "the jobs to end", || async {
        count_state(&rig.db.pool, "succeeded").await + count_state(&rig.db.pool, "failed").await
            >= done
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn an_edit_of_three_uploads_and_a_mask_reaches_the_sim_whole() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let stop = CancellationToken::new();
    let base = serve(&rig, &stop).await;
    let files = [png(64, 64, 10), png(32, 48, 20), png(16, 16, 30)];
    let mask = png(64, 64, 0);
    let mut ids = Vec::new();
    for (n, bytes) in files.iter().enumerate() {
        ids.push(upload_id(&base, &format!("ref-{n}.png"), bytes.clone()).await);
    }
    let (status, body) = upload(&base, "mask.png", mask.clone()).await;
    assert_eq!(status, 201);
    assert_eq!(body["content_type"], "image/png");
    assert_eq!(body["bytes"], mask.len());
    assert_eq!(body["sha256"], sha(&mask));
    let mask_id = body["id"].as_str().unwrap().to_string();

    let (status, body) = post_job(
        &base,
        serde_json::json!({
            "operation": "edit",
            "prompt": "the hero in the pose, in the palette",
            "inputs": ids.iter().map(|id| serde_json::json!({"upload": id})).collect::<Vec<_>>(),
            "mask": {"upload": mask_id},
            "params": {"input_fidelity": "high", "size": "1024x1024"},
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(count(&rig, "inputs").await, 4);
    run_until_done(&rig, 1).await;

    let done = stored(&rig, id).await;
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.last_error);
    assert_eq!(done.operation, Operation::Edit);
    let log = rig.sim.log();
    assert_eq!(log.len(), 1, "one request for one edit");
    let seen: Vec<_> = log[0].parts.iter().map(InputPart::seen).collect();
    assert_eq!(
        seen,
        [
            (
                "image[]",
                Some("input-0.png"),
                Some("png"),
                files[0].len() as u64
            ),
            (
                "image[]",
                Some("input-1.png"),
                Some("png"),
                files[1].len() as u64
            ),
            (
                "image[]",
                Some("input-2.png"),
                Some("png"),
                files[2].len() as u64
            ),
            ("mask", Some("mask.png"), Some("png"), mask.len() as u64),
        ]
    );
    assert_eq!(log[0].status, 200);
    let images = done.result.as_ref().unwrap()["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn bad_inputs_are_refused_at_submit_and_nothing_is_written() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let stop = CancellationToken::new();
    let base = serve(&rig, &stop).await;

    // Uploads are judged by their bytes.
    let (status, body) = upload(&base, "anim.png", b"GIF89a\x01\x00\x01\x00".to_vec()).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("the file is a GIF; upload a PNG, JPEG or WebP"),
        "{error}"
    );
    let mut huge = png(8, 8, 1);
    huge.resize(50 * 1024 * 1024 + 1, 0);
    let (status, body) = upload(&base, "huge.png", huge).await;
    assert_eq!(status, 413);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than 50 MiB"),
        "{body}"
    );
    assert_eq!(count(&rig, "uploads").await, 0);

    let good = upload_id(&base, "ok.png", png(8, 8, 1)).await;
    let unknown = Uuid::new_v4();
    let cases = [
        (
            serde_json::json!({"operation": "edit", "prompt": "x",
                               "inputs": vec![serde_json::json!({"upload": good}); 17]}),
            "17 input images; an edit takes at most 16",
        ),
        (
            serde_json::json!({"prompt": "x", "inputs": [{"upload": good}, {"upload": unknown}]}),
            "inputs[1] names upload",
        ),
        (
            serde_json::json!({"operation": "edit", "prompt": "x"}),
            "an edit needs at least one input image",
        ),
        (
            serde_json::json!({"operation": "generate", "prompt": "x", "inputs": [{"upload": good}]}),
            "inputs and mask are for edits",
        ),
        (
            serde_json::json!({"prompt": "x", "inputs": [{"upload": good, "url": "https://a.test/x.png"}]}),
            "inputs[0] must name exactly one of upload",
        ),
        (
            serde_json::json!({"prompt": "x", "inputs": [{"from_job": unknown}]}),
            &format!("inputs[0] names job {unknown}, which does not exist"),
        ),
        (
            serde_json::json!({"prompt": "x", "inputs": [{"upload": good}],
                               "params": {"input_fidelity": "extreme"}}),
            "input_fidelity",
        ),
    ];
    for (body, want) in cases {
        let (status, answer) = post_job(&base, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(want), "{body}: {error}");
    }
    assert_eq!(count(&rig, "jobs").await, 0, "nothing written");
    assert_eq!(count(&rig, "inputs").await, 0);
    stop.cancel();
}

/// A loopback HTTP server answering every path with `body` after `delay`:
/// its base URL.
async fn image_server(body: Vec<u8>, delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            tokio::time::sleep(delay).await;
            ([("content-type", "image/png")], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Submits an edit of `<server>/hero.png`, private addresses allowed: its id.
async fn edit_of_url(rig: &Rig, server: &str) -> Uuid {
    let job = NewJob {
        inputs: vec![InputRef::url(format!("{server}/hero.png"))],
        ..NewJob::new("the hero, waving")
    };
    genq::submit_with(&rig.db.pool, &job, UrlPolicy::ALLOW_PRIVATE)
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_url_on_a_private_address_is_refused_at_submit_and_by_the_worker() {
    let mut rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let server = image_server(png(16, 16, 5), Duration::ZERO).await;
    let job = NewJob {
        inputs: vec![InputRef::url(format!("{server}/hero.png"))],
        ..NewJob::new("the hero, waving")
    };
    match genq::submit_with(&rig.db.pool, &job, UrlPolicy::default()).await {
        Err(SubmitError::Input(err)) => {
            let text = err.to_string();
            assert!(
                text.contains("inputs[0] URL points at 127.0.0.1")
                    && text.contains("GENQ_ALLOW_PRIVATE_URLS"),
                "{text}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.png",
        "http://10.0.0.7/a.png",
    ] {
        let job = NewJob {
            inputs: vec![InputRef::url(url)],
            ..NewJob::new("x")
        };
        let refused = genq::submit_with(&rig.db.pool, &job, UrlPolicy::default()).await;
        assert!(
            matches!(refused, Err(SubmitError::Input(_))),
            "{url}: {refused:?}"
        );
    }
    assert_eq!(count(&rig, "jobs").await, 0);

    // Plain SQL skips submit's checks; the worker checks again before it fetches.
    let id: Uuid = sqlx::query_scalar(
        "WITH j AS (INSERT INTO genq.jobs (operation, prompt, max_attempts)
                    VALUES ('edit', 'the hero, waving', 1) RETURNING id)
         INSERT INTO genq.inputs (job_id, url) SELECT id, $1 FROM j RETURNING job_id",
    )
    .bind(format!("{server}/hero.png"))
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    rig.urls = UrlPolicy::default();
    run_until_done(&rig, 1).await;
    let failed = stored(&rig, id).await;
    assert_eq!(failed.state, JobState::Failed);
    let error = failed.last_error.unwrap();
    assert!(
        error.contains("inputs[0] URL points at 127.0.0.1"),
        "{error}"
    );
    assert!(rig.sim.log().is_empty(), "nothing was sent");
}

/// An input URL that takes longer to answer than a reserved slot stays
/// fresh (250 ms on a fast key) is still sent once fetched, not put back in
/// line again and again.
#[tokio::test]
async fn a_slow_url_input_is_sent_once_fetched() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let server = image_server(png(24, 24, 9), Duration::from_millis(800)).await;
    let id = edit_of_url(&rig, &server).await;
    run_until_done(&rig, 1).await;
    let done = stored(&rig, id).await;
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.last_error);
    assert_eq!(rig.sim.log().len(), 1);
}

#[tokio::test]
async fn a_url_input_is_fetched_and_sent() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let hero = png(24, 24, 7);
    let server = image_server(hero.clone(), Duration::ZERO).await;
    let id = edit_of_url(&rig, &server).await;
    run_until_done(&rig, 1).await;
    assert_eq!(stored(&rig, id).await.state, JobState::Succeeded);
    let log = rig.sim.log();
    assert_eq!(log[0].parts.len(), 1);
    assert_eq!(log[0].parts[0].bytes, hero.len() as u64);
}

#[tokio::test]
async fn a_generate_then_edit_chain_runs_in_order() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let first = generation(&rig, "a knight, front view").await;
    let second = edit_of(
        &rig,
        "the same knight, side view",
        vec![InputRef::from_job(first, 0)],
    )
    .await;
    let third = edit_of(
        &rig,
        "both views on one sheet",
        vec![InputRef::from_job(second, 0), InputRef::from_job(first, 0)],
    )
    .await;
    assert!(stored(&rig, second).await.awaiting_input);
    assert!(stored(&rig, third).await.awaiting_input);
    run_until_done(&rig, 3).await;

    let jobs = [
        stored(&rig, first).await,
        stored(&rig, second).await,
        stored(&rig, third).await,
    ];
    for j in &jobs {
        assert_eq!(j.state, JobState::Succeeded, "{:?}", j.last_error);
        assert!(!j.awaiting_input);
    }
    assert!(jobs[0].finished_at.unwrap() <= jobs[1].started_at.unwrap());
    assert!(jobs[1].finished_at.unwrap() <= jobs[2].started_at.unwrap());
    let log = rig.sim.log();
    let parts: Vec<usize> = log.iter().map(|r| r.parts.len()).collect();
    assert_eq!(parts, [0, 1, 2], "generate, then edit, then edit of both");
    // The edit sent exactly the bytes the generation stored.
    let bytes = |j: &genq::Job| {
        j.result.as_ref().unwrap()["images"][0]["bytes"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(log[1].parts[0].bytes, bytes(&jobs[0]));
    assert_eq!(log[2].parts[0].bytes, bytes(&jobs[1]));
    assert_eq!(log[2].parts[1].bytes, bytes(&jobs[0]));
}

#[tokio::test]
async fn an_edit_fails_with_the_reason_when_its_input_job_fails() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let first = genq::submit(
        &rig.db.pool,
        &NewJob {
            max_attempts: Some(1),
            ..NewJob::new("something FORBIDDEN")
        },
    )
    .await
    .unwrap()
    .id;
    let second = edit_of(
        &rig,
        "the same, in blue",
        vec![InputRef::from_job(first, 0)],
    )
    .await;
    run_until_done(&rig, 2).await;
    let source = stored(&rig, first).await;
    let edit = stored(&rig, second).await;
    assert_eq!(source.state, JobState::Failed);
    assert_eq!(edit.state, JobState::Failed);
    let error = edit.last_error.clone().unwrap();
    assert!(
        error.starts_with(&format!("input job {first} failed: ")),
        "{error}"
    );
    assert!(
        error.contains(source.last_error.as_deref().unwrap()),
        "{error}"
    );
    assert_eq!(rig.sim.log().len(), 1, "the edit was never sent");

    // Retrying the edit alone cannot work: the database says what to retry first.
    let refused = genq::store::inspect::retry(&rig.db.pool, second).await;
    let text = format!("{refused:?}");
    assert!(
        text.contains(&format!("input job {first} is failed")),
        "{text}"
    );
    // An edit submitted after its input job failed fails at once, with the reason.
    let late = genq::submit(
        &rig.db.pool,
        &NewJob {
            inputs: vec![InputRef::from_job(first, 0)],
            ..NewJob::new("again")
        },
    )
    .await
    .unwrap();
    let late = stored(&rig, late.id).await;
    assert_eq!(late.state, JobState::Failed);
    assert!(
        late.last_error
            .unwrap()
            .starts_with(&format!("input job {first} failed"))
    );
}

#[tokio::test]
async fn an_edit_inserted_with_plain_sql_runs() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let first: Uuid =
        sqlx::query_scalar("INSERT INTO genq.jobs (prompt) VALUES ('a red fox') RETURNING id")
            .fetch_one(&rig.db.pool)
            .await
            .unwrap();
    let edit: Uuid = sqlx::query_scalar(
        "WITH j AS (INSERT INTO genq.jobs (operation, prompt, params)
                    VALUES ('edit', 'the fox, in winter', '{\"input_fidelity\": \"high\"}') RETURNING id)
         INSERT INTO genq.inputs (job_id, position, from_job, from_index)
         SELECT id, 0, $1, 0 FROM j RETURNING job_id",
    )
    .bind(first)
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    run_until_done(&rig, 2).await;
    assert_eq!(stored(&rig, edit).await.state, JobState::Succeeded);
    assert_eq!(rig.sim.log()[1].parts.len(), 1);
}

#[tokio::test]
async fn retention_deletes_uploads_with_the_last_job_that_names_them() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let stop = CancellationToken::new();
    let base = serve(&rig, &stop).await;
    let shared = upload_id(&base, "a.png", png(8, 8, 1)).await;
    let fresh = upload_id(&base, "b.png", png(8, 8, 2)).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, body) = post_job(
            &base,
            serde_json::json!({"prompt": "x", "inputs": [{"upload": shared}]}),
        )
        .await;
        assert_eq!(status, 201);
        ids.push(body["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    sqlx::query(
        "UPDATE genq.jobs SET state = 'succeeded', finished_at = now() - interval '2 days' WHERE id = $1",
    )
    .bind(ids[0])
    .execute(&rig.db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE genq.uploads SET created_at = now() - interval '2 days'")
        .execute(&rig.db.pool)
        .await
        .unwrap();
    let day = Duration::from_secs(24 * 3600);
    let prune = || async {
        genq::store::jobs::prune(&rig.db.pool, day, day, 100)
            .await
            .unwrap();
        genq::store::inputs::prune_uploads(&rig.db.pool, day, 100)
            .await
            .unwrap()
    };
    // The pruned job's upload is still named by the queued one; the other
    // upload was never named and is old.
    assert_eq!(prune().await, 1);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM genq.uploads")
        .fetch_all(&rig.db.pool)
        .await
        .unwrap();
    assert_eq!(left, [shared.parse::<Uuid>().unwrap()]);
    assert_ne!(fresh, shared);
    sqlx::query(
        "UPDATE genq.jobs SET state = 'succeeded', finished_at = now() - interval '2 days' WHERE id = $1",
    )
    .bind(ids[1])
    .execute(&rig.db.pool)
    .await
    .unwrap();
    assert_eq!(prune().await, 1, "gone with the last job that named it");
    assert_eq!(count(&rig, "uploads").await, 0);
    assert_eq!(count(&rig, "inputs").await, 0);
    stop.cancel();
}

/// An edit whose input job is not done costs nothing while it waits: no
/// claim touches its row, however often workers look.
#[tokio::test]
async fn an_edit_waiting_for_its_input_job_is_never_claimed() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let later = NewJob {
        run_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        ..NewJob::new("a knight, front view")
    };
    let first = genq::submit(&rig.db.pool, &later).await.unwrap().id;
    let edit = edit_of(
        &rig,
        "the same knight, side view",
        vec![InputRef::from_job(first, 0)],
    )
    .await;
    let before = stored(&rig, edit).await;
    assert!(before.awaiting_input);
    let detail = genq::store::inspect::detail(&rig.db.pool, edit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        detail.waiting.as_deref(),
        Some(format!("waiting for its input job(s) to succeed: {first}").as_str())
    );
    assert_eq!(detail.inputs[0]["from_job"], first.to_string());
    assert_eq!(detail.inputs[0]["role"], "image");
    // Other work flows past it.
    for n in 0..3 {
        genq::submit(&rig.db.pool, &NewJob::new(format!("filler {n}")))
            .await
            .unwrap();
    }
    run_until_done(&rig, 3).await;
    let after = stored(&rig, edit).await;
    assert_eq!(after, before, "the waiting edit's row was never written");
    assert!(rig.sim.log().iter().all(|r| r.parts.is_empty()));
}

/// A repeated idempotency key returns the same edit only with the same inputs.
#[tokio::test]
async fn a_repeated_key_with_other_inputs_is_refused() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let first = generation(&rig, "a knight").await;
    let edit = |index| NewJob {
        inputs: vec![InputRef::from_job(first, index)],
        idempotency_key: Some("sheet-7".into()),
        ..NewJob::new("the knight, side view")
    };
    let made = genq::submit(&rig.db.pool, &edit(0)).await.unwrap();
    let again = genq::submit(&rig.db.pool, &edit(0)).await.unwrap();
    assert_eq!((again.id, again.created), (made.id, false));
    match genq::submit(&rig.db.pool, &edit(1)).await {
        Err(SubmitError::IdempotencyConflict { fields, .. }) => assert_eq!(fields, ["inputs"]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(count(&rig, "inputs").await, 1);
}

/// `moderation` exists only for generations: an edit carrying it is refused
/// at submit, and a plain-SQL one fails with the same words before anything
/// is sent, instead of the parameter being dropped.
#[tokio::test]
async fn a_param_the_edit_endpoint_lacks_is_refused_not_dropped() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let first = generation(&rig, "a red fox").await;
    let job = NewJob {
        inputs: vec![InputRef::from_job(first, 0)],
        params: Some(serde_json::json!({"moderation": "low"})),
        ..NewJob::new("the fox, in winter")
    };
    match genq::submit(&rig.db.pool, &job).await {
        Err(SubmitError::Input(err)) => {
            assert!(
                err.to_string()
                    .contains("moderation applies to generations"),
                "{err}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let edit: Uuid = sqlx::query_scalar(
        "WITH j AS (INSERT INTO genq.jobs (operation, prompt, params)
                    VALUES ('edit', 'the fox, in winter', '{\"moderation\": \"low\"}') RETURNING id)
         INSERT INTO genq.inputs (job_id, from_job) SELECT id, $1 FROM j RETURNING job_id",
    )
    .bind(first)
    .fetch_one(&rig.db.pool)
    .await
    .unwrap();
    run_until_done(&rig, 2).await;
    let failed = stored(&rig, edit).await;
    assert_eq!(failed.state, JobState::Failed);
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap()
            .contains("moderation applies to generations"),
        "{:?}",
        failed.last_error
    );
    assert_eq!(rig.sim.log().len(), 1, "only the generation was sent");
}
