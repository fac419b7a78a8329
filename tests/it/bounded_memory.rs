//! Nothing from outside makes a worker hold more than it planned for: an
//! answer longer than its request allows is cut off, and an image URL is
//! fetched only over http(s), within the image's size bound.
//!
//! The provider here is a misbehaving server on loopback: `genq sim`
//! answers correctly, which is exactly what these tests must not assume.

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::{get, post};
use genq::job::NewJob;
use genq_sim::SimKey;
use genq_testkit::rig::Rig;

/// A body that never ends: the opening of a JSON answer, then base64 forever.
fn endless(opening: &'static str) -> Body {
    let chunk = bytes::Bytes::from(vec![b'A'; 64 * 1024]);
    let stream = futures::stream::once(async move {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(opening.as_bytes()))
    })
    .chain(futures::stream::repeat_with(move || Ok(chunk.clone())));
    Body::from_stream(stream)
}

use futures::StreamExt;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

fn json(body: String) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// Runs one 1024x1024 job against `base_url` until it fails; its `last_error`.
async fn fail_one_job(rig: Rig, base_url: String) -> String {
    let job = NewJob {
        params: Some(serde_json::json!({ "size": "1024x1024" })),
        ..NewJob::new("a fox")
    };
    rig.fail_one_job(base_url, job).await.0.last_error.unwrap()
}

#[tokio::test]
async fn an_answer_longer_than_its_request_allows_is_cut_off() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let base = serve(Router::new().route(
        "/v1/images/generations",
        post(|| async {
            Response::builder()
                .header("content-type", "application/json")
                .body(endless(r#"{"created":1,"data":[{"b64_json":""#))
                .unwrap()
        }),
    ))
    .await;
    let error = fail_one_job(rig, format!("{base}/v1")).await;
    let bound =
        genq::provider::footprint::max_answer_bytes(&serde_json::json!({"size": "1024x1024"}));
    assert!(
        error.contains("too large") && error.contains(&format!("more than {bound} bytes")),
        "{error}"
    );
}

#[tokio::test]
async fn an_image_url_is_fetched_only_over_http_and_within_its_bound() {
    for (url, want) in [
        ("file:///etc/passwd", "not an http(s) URL".to_string()),
        (
            "{base}/endless.png",
            format!(
                "more than {} bytes",
                genq::provider::footprint::max_image_bytes(
                    &serde_json::json!({"size": "1024x1024"})
                )
            ),
        ),
    ] {
        let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer = format!(
            r#"{{"created":1,"data":[{{"url":"{}"}}]}}"#,
            url.replace("{base}", &base)
        );
        let router = Router::new()
            .route(
                "/v1/images/generations",
                post(move || {
                    let answer = answer.clone();
                    async move { json(answer) }
                }),
            )
            .route("/endless.png", get(|| async { Response::new(endless("")) }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let error = fail_one_job(rig, format!("{base}/v1")).await;
        assert!(
            error.contains("images generated but not stored") && error.contains(&want),
            "{url}: {error}"
        );
    }
}
