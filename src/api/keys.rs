//! `GET /v1/keys`: every API key's state, cooldown, counters and limits,
//! by id. Secrets are never stored, so they cannot be shown.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;

/// 200 `{"keys": [...]}`.
pub async fn list(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let keys = crate::store::keys::list(&state.pool).await?;
    Ok(Json(json!({ "keys": keys })))
}
