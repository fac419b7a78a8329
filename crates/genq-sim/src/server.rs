//! The HTTP face of the simulator: routes (generations and edits), bearer-token extraction, and turning a decided
//! [`Outcome`] into a response after the configured delay.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::core::{Core, Outcome};
use super::edits;
use super::response::{self, Usage, images_response};

/// All routes, sharing `core`.
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/v1/images/generations", post(generate))
        .route("/images/generations", post(generate))
        .route("/v1/images/edits", post(edit))
        .route("/images/edits", post(edit))
        .route("/_sim/log", get(log))
        .route("/_sim/stats", get(stats))
        .route("/_sim/arrivals", get(arrivals))
        .fallback(not_found)
        .with_state(core)
}

/// The bearer token, if the request carries one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn generate(State(core): State<Arc<Core>>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = core.decide(bearer(&headers), &body);
    if !outcome.delay.is_zero() {
        tokio::time::sleep(outcome.delay).await;
    }
    core.sent(outcome.record);
    let usage = core.usage(outcome.record);
    respond(outcome, core.full_size_images, usage)
}

/// An edit: its form read and checked, then judged like a generation (the
/// same keys, limits and errors), with its file parts on the log entry.
async fn edit(State(core): State<Arc<Core>>, headers: HeaderMap, form: Multipart) -> Response {
    let (body, parts) = match edits::read(form).await {
        Ok(read) => read,
        Err(error) => return (error.status, Json(error.body())).into_response(),
    };
    let outcome = core.decide(bearer(&headers), &body);
    core.attach_parts(outcome.record, parts);
    if !outcome.delay.is_zero() {
        tokio::time::sleep(outcome.delay).await;
    }
    core.sent(outcome.record);
    let usage = core.usage(outcome.record);
    respond(outcome, core.full_size_images, usage)
}

fn respond(outcome: Outcome, full_size: bool, usage: Option<Usage>) -> Response {
    let mut response = match outcome.result {
        Ok(req) => {
            let created = chrono::Utc::now().timestamp();
            let usage = usage.unwrap_or_else(|| response::usage(&req, 0));
            Json(images_response(&req, created, full_size, usage)).into_response()
        }
        Err(error) => (error.status, Json(error.body())).into_response(),
    };
    let out = response.headers_mut();
    for (name, value) in outcome.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

async fn log(State(core): State<Arc<Core>>) -> Response {
    Json(core.log()).into_response()
}

async fn stats(State(core): State<Arc<Core>>) -> Response {
    Json(core.stats()).into_response()
}

async fn arrivals(State(core): State<Arc<Core>>) -> Response {
    Json(core.arrivals()).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let body = json!({"error": {
        "message": format!("Invalid URL ({method} {})", uri.path()),
        "type": "invalid_request_error",
        "param": null,
        "code": null,
    }});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-x"),
        );
        assert_eq!(bearer(&headers), Some("sk-x"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  sk-y "),
        );
        assert_eq!(bearer(&headers), Some("sk-y"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
