//! `GET /metrics`: Prometheus text. Open without a token, like `/healthz`,
//! so scrapers need no secret; it carries key ids and counts, never secrets.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::ApiState;
use super::error::ApiError;

/// The metrics of this process plus the shared database gauges.
pub async fn metrics(State(state): State<Arc<ApiState>>) -> Result<impl IntoResponse, ApiError> {
    let text = crate::metrics::render(&state.pool).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
