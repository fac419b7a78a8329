//! `GET /healthz`: is the database reachable? Open without a token, for probes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;

/// 200 `{"status": "ok"}` when `SELECT 1` answers, else 503.
pub async fn healthz(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    match crate::store::ping(&state.pool).await {
        Ok(_) => Ok(Json(json!({ "status": "ok" }))),
        Err(err) => {
            tracing::warn!(error = %err, "health check: database unreachable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unreachable; check DATABASE_URL and that PostgreSQL is running",
            ))
        }
    }
}
