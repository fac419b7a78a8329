//! Images in a real S3-compatible server (moto, on loopback): written by
//! the worker, served by `GET /v1/jobs/{id}/images/{n}` as a redirect to a
//! presigned URL, read back as an edit's input, and deleted by retention.

use futures::TryStreamExt;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use genq::InputRef;
use genq::api::ApiState;
use genq::job::{JobState, NewJob};
use genq::output::ImageError;
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::s3::MotoServer;
use genq_testkit::{count_state, wait_until};

const BUCKET: &str = "genq-images";

/// A rig whose workers write to `s3://genq-images/renders` on a fresh moto.
async fn s3_rig() -> (Rig, MotoServer) {
    let moto = MotoServer::start().await;
    moto.create_bucket(BUCKET).await;
    let mut rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    rig.images = moto.output(&format!("s3://{BUCKET}/renders"));
    (rig, moto)
}

/// The objects in the bucket: (name, size).
async fn objects(moto: &MotoServer) -> Vec<(String, u64)> {
    let store = moto.builder().with_bucket_name(BUCKET).build().unwrap();
    let mut found: Vec<(String, u64)> = store
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .unwrap();
    found.sort();
    found
}

async fn run_until(rig: &Rig, state: &str, n: i64) {
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 2).await;
    wait_until(Duration::from_secs(30), "the jobs to end", || async {
        count_state(&rig.db.pool, state).await >= n
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn images_land_in_s3_are_served_by_presigned_redirect_and_feed_an_edit() {
    let (rig, moto) = s3_rig().await;
    let job = NewJob {
        params: Some(serde_json::json!({ "n": 2, "size": "1024x1024" })),
        ..NewJob::new("two red foxes")
    };
    let id = genq::submit(&rig.db.pool, &job).await.unwrap().id;
    run_until(&rig, "succeeded", 1).await;
    let done = genq::store::jobs::get(&rig.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    let images = done.result.as_ref().unwrap()["images"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(images.len(), 2);
    let stored = objects(&moto).await;
    assert_eq!(
        stored,
        images
            .iter()
            .map(|i| (
                format!("renders/{}", i["key"].as_str().unwrap()),
                i["bytes"].as_u64().unwrap()
            ))
            .collect::<Vec<_>>()
    );

    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(rig.db.pool.clone(), None).with_images(rig.images.clone());
    tokio::spawn(genq::api::serve(listener, state, stop.clone()));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (n, image) in images.iter().enumerate() {
        let key = image["key"].as_str().unwrap();
        assert_eq!(
            image["location"],
            format!("s3://{BUCKET}/renders/{key}"),
            "{image}"
        );
        assert!(image.get("path").is_none(), "no local path for an object");
        let resp = no_redirects
            .get(format!("{base}/v1/jobs/{id}/images/{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 307);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with(&moto.endpoint), "{location}");
        assert!(location.contains("X-Amz-Signature="), "{location}");
        assert!(!location.contains("genq-test-secret"), "{location}");
        let fetched = reqwest::get(&location).await.unwrap();
        assert_eq!(fetched.status(), 200);
        assert_eq!(fetched.headers()["content-type"], "image/png");
        let body = fetched.bytes().await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&body)), image["sha256"]);
        // The worker's own read of it (an edit's input) gives the same bytes.
        assert_eq!(rig.images.read(key, 1 << 26).await.unwrap(), body);
    }
    assert!(matches!(
        rig.images.read("../../etc/passwd", 1 << 20).await,
        Err(ImageError::BadKey)
    ));
    let missing = format!("{id}/9/0.png");
    assert!(matches!(
        rig.images.read(&missing, 1 << 20).await,
        Err(ImageError::Gone)
    ));

    // An edit of the first image reads it back from the bucket.
    let edit = genq::submit(
        &rig.db.pool,
        &NewJob {
            inputs: vec![InputRef::from_job(id, 1)],
            ..NewJob::new("the second fox, in winter")
        },
    )
    .await
    .unwrap()
    .id;
    run_until(&rig, "succeeded", 2).await;
    let edited = genq::store::jobs::get(&rig.db.pool, edit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(edited.state, JobState::Succeeded, "{:?}", edited.last_error);
    let log = rig.sim.log();
    assert_eq!(log[1].parts[0].bytes, images[1]["bytes"].as_u64().unwrap());
    stop.cancel();
}

#[tokio::test]
async fn retention_deletes_a_pruned_jobs_objects() {
    let (rig, moto) = s3_rig().await;
    let old = genq::submit(&rig.db.pool, &NewJob::new("an old fox"))
        .await
        .unwrap()
        .id;
    let kept = genq::submit(&rig.db.pool, &NewJob::new("a new fox"))
        .await
        .unwrap()
        .id;
    run_until(&rig, "succeeded", 2).await;
    assert_eq!(objects(&moto).await.len(), 2);
    let (worker, stop) = rig.prune_old(old).await;
    wait_until(
        Duration::from_secs(10),
        "the old job's objects deleted",
        || async { objects(&moto).await.len() == 1 },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    let left = objects(&moto).await;
    assert!(
        left[0].0.starts_with(&format!("renders/{kept}/")),
        "{left:?}"
    );
    assert_eq!(count_state(&rig.db.pool, "succeeded").await, 1);
}

/// Neither a store's `Debug` nor a failed write's error shows the secret
/// key; the error says where it tried to write.
#[tokio::test]
async fn nothing_shows_the_secret_and_a_failed_put_says_where() {
    let moto = MotoServer::start().await;
    let secret = secret_of(&moto);
    let output = moto.output(&format!("s3://{BUCKET}/renders"));
    let shown = format!("{output:?} {}", output.describe());
    assert!(!shown.contains(&secret), "{shown}");
    assert!(shown.contains(&format!("s3://{BUCKET}/renders")), "{shown}");

    let missing = moto.output("s3://no-such-bucket/x");
    let png = genq_sim::png::solid(4, 4, [1, 2, 3, 255]);
    let response = async_openai::types::images::ImagesResponse {
        data: vec![std::sync::Arc::new(
            async_openai::types::images::Image::B64Json {
                b64_json: std::sync::Arc::new(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    png,
                )),
                revised_prompt: None,
            },
        )],
        ..Default::default()
    };
    let err = missing
        .save(uuid::Uuid::new_v4(), 1, response, 1 << 20)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("writing s3://no-such-bucket/x/"), "{err}");
    assert!(!err.contains(&secret), "{err}");
}

fn secret_of(moto: &MotoServer) -> String {
    moto.env()
        .into_iter()
        .find(|(k, _)| k == "AWS_SECRET_ACCESS_KEY")
        .unwrap()
        .1
}

/// `genq run` as operators start it: GENQ_OUTPUT_URL and the AWS variables
/// in its environment; the images go to the bucket, the API redirects to
/// them, and its debug log says where without the secret.
#[tokio::test]
async fn genq_run_writes_to_genq_output_url_with_the_aws_variables() {
    let moto = MotoServer::start().await;
    moto.create_bucket(BUCKET).await;
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let dir = genq_testkit::process::scratch_dir("object-storage");
    let log = dir.join("genq.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = genq_testkit::process::genq(&dir);
    cmd.args(["run", "--listen", &listen, "--poll-ms", "100"])
        .env("DATABASE_URL", &rig.db.url)
        .env("OPENAI_BASE_URL", &rig.base_url)
        .env("OPENAI_API_KEYS", "a=sk-a")
        .env("GENQ_OUTPUT_URL", format!("s3://{BUCKET}/cli"))
        .env("RUST_LOG", "debug")
        .env_remove("OPENAI_API_KEY")
        .env_remove("GENQ_KEYS_FILE")
        .env_remove("GENQ_OUTPUT_DIR")
        .envs(moto.env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let run = genq_testkit::ChildGuard(cmd.spawn().unwrap());
    let base = format!("http://{listen}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    wait_until(Duration::from_secs(30), "genq run to answer", || async {
        client.get(format!("{base}/healthz")).send().await.is_ok()
    })
    .await;
    let created: serde_json::Value = client
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({ "prompt": "a lynx" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id: uuid::Uuid = serde_json::from_value(created["id"].clone()).unwrap();
    wait_until(Duration::from_secs(30), "the job to succeed", || async {
        count_state(&rig.db.pool, "succeeded").await == 1
    })
    .await;
    let job = genq::store::jobs::get(&rig.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    let image = &job.images()[0];
    assert_eq!(image["location"], format!("s3://{BUCKET}/cli/{id}/1/0.png"));
    let resp = client
        .get(format!("{base}/v1/jobs/{id}/images/0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 307);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body = reqwest::get(&location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), image["sha256"]);
    assert!(
        !dir.join("genq-output").exists(),
        "nothing is written to the default directory"
    );
    drop(run);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("s3://{BUCKET}/cli")),
        "the log says where: {logged}"
    );
    assert!(
        !logged.contains(&secret_of(&moto)),
        "the log shows the secret"
    );
    let _ = std::fs::remove_dir_all(dir);
}
