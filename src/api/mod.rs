//! The HTTP API (`genq serve`): submit and inspect jobs over JSON.
//!
//! Routes (the README's "Enqueue a job" and "Inspect what failed"): `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`,
//! `POST /v1/jobs/{id}/cancel`, `POST /v1/jobs/{id}/retry`,
//! `GET /v1/jobs/{id}/images/{n}`, `POST /v1/uploads`, `GET /v1/keys` (all
//! behind the bearer token when one is set) and `GET /healthz`, `GET /metrics`,
//! `GET /openapi.json` (open; `/metrics` needs the token too with
//! `GENQ_METRICS_REQUIRE_TOKEN` on a listener beyond loopback).
//! Add new authenticated routes in `authenticated_routes` and new shared
//! dependencies as fields of [`ApiState`].
//!
//! The dashboard's pages (`/`, `/jobs`, `/keys`, …) are merged in from
//! [`crate::dashboard`].
//!
//! Every error answer is `{"error": "..."}` ([`error::ApiError`]); bodies are
//! capped at [`BODY_LIMIT`] and requests at [`REQUEST_TIMEOUT`].

pub(crate) mod auth;
pub(crate) mod cursor;
pub mod error;
pub(crate) mod health;
pub(crate) mod images;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod metrics;
pub mod openapi;
pub mod uploads;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{check_listen, check_metrics_listen, metrics_need_token};
pub use error::{ApiError, ApiJson};

/// Largest request body accepted (512 KiB): room for the largest valid job,
/// a 32,000-character prompt even if every character is written as a JSON
/// surrogate-pair escape (12 bytes), plus its params.
pub const BODY_LIMIT: usize = 512 * 1024;
/// Longest a request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The queue's database.
    pub pool: PgPool,
    /// When set, `/v1/*` requests need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// When true (and a token is set), `/metrics` needs the token too
    /// (`GENQ_METRICS_REQUIRE_TOKEN` on a listener beyond loopback).
    pub metrics_need_token: bool,
    /// The database gauges `/metrics` reads, with what they remember between scrapes.
    pub gauges: crate::metrics::DbGauges,
    /// Where `GET /v1/jobs/{id}/images/{n}` reads images (the workers'
    /// `GENQ_OUTPUT_DIR`); `None` serves none.
    pub images: Option<crate::output::OutputStore>,
    /// Which input URLs `POST /v1/jobs` accepts (`GENQ_ALLOW_PRIVATE_URLS`).
    pub urls: crate::input::UrlPolicy,
    /// The dashboard's sign-in and CSRF secrets, derived from the token.
    pub session: crate::dashboard::Session,
}

/// Shows whether a token is set, never the token.
impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("pool", &self.pool)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("metrics_need_token", &self.metrics_need_token)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State for `pool`; an empty token counts as none. `/metrics` is open.
    pub fn new(pool: PgPool, token: Option<String>) -> Self {
        let token = token.filter(|t| !t.trim().is_empty());
        ApiState {
            session: crate::dashboard::Session::new(token.as_deref()),
            gauges: crate::metrics::DbGauges::new(pool.clone()),
            pool,
            token,
            metrics_need_token: false,
            images: None,
            urls: crate::input::UrlPolicy::default(),
        }
    }

    /// Serves the images under `images` (`GET /v1/jobs/{id}/images/{n}`).
    pub fn with_images(mut self, images: crate::output::OutputStore) -> Self {
        self.images = Some(images);
        self
    }

    /// Accepts input URLs by `urls` (private addresses only if it allows them).
    pub fn with_urls(mut self, urls: crate::input::UrlPolicy) -> Self {
        self.urls = urls;
        self
    }

    /// `/metrics` needs the bearer token when `needed` (see [`auth::metrics_need_token`]).
    pub fn with_metrics_token(mut self, needed: bool) -> Self {
        self.metrics_need_token = needed;
        self
    }
}

/// Routes that need the bearer token (when one is set).
fn authenticated_routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::show))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/jobs/{id}/images/{n}", get(images::show))
        .route("/v1/keys", get(keys::list))
        .route(
            "/v1/uploads",
            post(uploads::create).layer(uploads::body_limit()),
        )
}

/// The whole API with its limits, auth and error fallbacks.
pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    authenticated_routes()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .merge(crate::dashboard::routes(state.clone()))
        .route("/healthz", get(health::healthz))
        .route("/metrics", metrics_route(&state))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(timeout))
        .with_state(state)
}

/// Only `/metrics` and `/healthz`: what a worker without the API exposes.
pub fn metrics_router(state: ApiState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", metrics_route(&state))
        .fallback(not_found)
        .with_state(state)
}

/// `GET /metrics`, behind the token when the state says so.
fn metrics_route(state: &Arc<ApiState>) -> axum::routing::MethodRouter<Arc<ApiState>> {
    get(metrics::metrics).route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_metrics_token,
    ))
}

/// Serves `router(state)` on `listener` until `shutdown` is cancelled, then
/// lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {}s and was abandoned; try again",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {method} {}; the API serves /v1/jobs, /v1/keys, /healthz, /metrics and /openapi.json, and the dashboard /",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}", uri.path()),
    )
}
