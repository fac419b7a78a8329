//! `GET /metrics`: Prometheus text. Open without a token, like `/healthz`,
//! so scrapers need no secret; it carries key ids and counts, never secrets.
//! With `GENQ_METRICS_REQUIRE_TOKEN` on a listener beyond loopback it needs
//! the API token ([`super::auth::require_metrics_token`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiState;
use super::error::ApiError;

/// The metrics of this process plus the shared database gauges.
pub async fn metrics(State(state): State<Arc<ApiState>>) -> Result<impl IntoResponse, ApiError> {
    let text = crate::metrics::render(&state.gauges).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
