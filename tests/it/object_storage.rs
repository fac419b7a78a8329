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
use genq::worker::{Retention, Worker, WorkerConfig};
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
    sqlx::query("UPDATE genq.jobs SET finished_at = now() - interval '2 days' WHERE id = $1")
        .bind(old)
        .execute(&rig.db.pool)
        .await
        .unwrap();
    let config = WorkerConfig {
        retention: Some(Retention {
            succeeded: Duration::from_secs(24 * 3600),
            failed: Duration::from_secs(24 * 3600),
            every: Duration::from_millis(100),
        }),
        images: Some(rig.images.clone()),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(
            rig.db.pool.clone(),
            config,
            rig.provider(keys(&[("a", "sk-a")])),
        )
        .run(stop.clone()),
    );
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
