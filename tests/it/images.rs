//! Images served by the API (`GET /v1/jobs/{id}/images/{n}`) from the
//! directory the workers wrote, and deleted with their job by retention.

use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use genq::api::ApiState;
use genq::job::NewJob;
use genq::output::OutputStore;
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{count_state, wait_until};

/// Runs one job of two images through the sim; its id.
async fn one_succeeded_job(rig: &Rig) -> uuid::Uuid {
    let job = NewJob {
        params: Some(serde_json::json!({ "n": 2, "size": "1024x1024" })),
        ..NewJob::new("two red foxes")
    };
    let id = genq::submit(&rig.db.pool, &job).await.unwrap().id;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 2).await;
    wait_until(Duration::from_secs(20), "the job to succeed", || async {
        count_state(&rig.db.pool, "succeeded").await == 1
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    id
}

/// Serves the API over the rig's database and output directory: its base URL.
async fn serve(rig: &Rig, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(rig.db.pool.clone(), None).with_images(OutputStore::new(&rig.output));
    tokio::spawn(genq::api::serve(listener, state, stop.clone()));
    base
}

#[tokio::test]
async fn a_succeeded_jobs_images_are_served_with_their_type_and_checksum() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let id = one_succeeded_job(&rig).await;
    let stop = CancellationToken::new();
    let base = serve(&rig, &stop).await;
    let job = genq::store::jobs::get(&rig.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    let images = job.result.as_ref().unwrap()["images"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(images.len(), 2);

    for (n, image) in images.iter().enumerate() {
        assert_eq!(image["content_type"], "image/png");
        assert_eq!(image["key"], format!("{id}/1/{n}.png"));
        let resp = reqwest::get(format!("{base}/v1/jobs/{id}/images/{n}"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "image/png");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let body = resp.bytes().await.unwrap();
        assert!(body.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(body.len() as u64, image["bytes"].as_u64().unwrap());
        assert_eq!(hex::encode(Sha256::digest(&body)), image["sha256"]);
    }

    let (status, error) = answer(&base, format!("/v1/jobs/{id}/images/2")).await;
    assert_eq!(status, 404);
    assert!(error.contains("has 2 images: use 0 to 1"), "{error}");
    let (status, error) = answer(&base, format!("/v1/jobs/{id}/images/first")).await;
    assert_eq!(status, 400);
    assert!(error.contains("not a number"), "{error}");
    let queued = genq::submit(&rig.db.pool, &NewJob::new("later"))
        .await
        .unwrap()
        .id;
    let (status, error) = answer(&base, format!("/v1/jobs/{queued}/images/0")).await;
    assert_eq!(status, 409);
    assert!(error.contains("is queued"), "{error}");
    std::fs::remove_file(rig.output.join(format!("{id}/1/1.png"))).unwrap();
    let (status, error) = answer(&base, format!("/v1/jobs/{id}/images/1")).await;
    assert_eq!(status, 410);
    assert!(
        error.contains("not in this server's output store"),
        "{error}"
    );
    stop.cancel();
}

#[tokio::test]
async fn retention_deletes_a_pruned_jobs_images_with_its_row() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let old = one_succeeded_job(&rig).await;
    let dir = rig.output.join(old.to_string());
    assert!(dir.join("1/0.png").exists());
    let (worker, stop) = rig.prune_old(old).await;
    wait_until(Duration::from_secs(10), "the old job pruned", || async {
        count_state(&rig.db.pool, "succeeded").await == 0
    })
    .await;
    wait_until(Duration::from_secs(5), "its images deleted", || async {
        !dir.exists()
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
}

/// The status and `error` text of a GET.
async fn answer(base: &str, path: String) -> (u16, String) {
    let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}
