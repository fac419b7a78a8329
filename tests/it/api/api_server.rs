//! A real API server for tests/api.rs: bound to 127.0.0.1:0 over a fresh
//! database, with a reqwest client and helpers for JSON answers.
#![allow(dead_code)]

use std::time::Duration;

use genq::api::ApiState;
use genq::store::jobs::{self, Completion, Finish};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use genq_testkit::TestDb;

/// A running API server; stopped when dropped.
pub struct Api {
    pub db: TestDb,
    pub base: String,
    pub client: reqwest::Client,
    token: Option<&'static str>,
    stop: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Api {
    pub async fn start(token: Option<&'static str>) -> Api {
        let db = TestDb::new().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = ApiState::new(db.pool.clone(), token.map(String::from));
        let stop = CancellationToken::new();
        tokio::spawn(genq::api::serve(listener, state, stop.clone()));
        Api {
            db,
            base,
            client: reqwest::Client::new(),
            token,
            stop,
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let req = self
            .req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn submit(&self, prompt: &str) -> Uuid {
        let (status, body) = self.post("/v1/jobs", json!({ "prompt": prompt })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Claims the job and ends it with `finish`, as a worker would.
    pub async fn finish(&self, id: Uuid, finish: Finish) {
        let queues = vec!["default".to_string()];
        let claimed = jobs::claim(&self.db.pool, "w", &queues, 10, Duration::from_secs(60))
            .await
            .unwrap();
        let job = claimed.into_iter().find(|j| j.id == id).expect("claimed");
        let done = Completion {
            job_id: id,
            attempt: job.attempts,
            finish,
            refund: false,
            call: None,
        };
        assert_eq!(
            jobs::complete(&self.db.pool, "w", &[done]).await.unwrap(),
            [id]
        );
    }
}

pub fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

pub fn assert_error(got: (StatusCode, Value), status: StatusCode, want: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    let msg = error_of(&body);
    assert!(
        msg.contains(want),
        "got {msg:?}, want it to mention {want:?}"
    );
}
