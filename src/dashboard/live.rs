//! The JSON the dashboard's script polls: counts, key states, a job's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

use crate::api::ApiState;
use crate::job::JobState;

fn unavailable(err: crate::store::StoreError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": err.to_string()})),
    )
        .into_response()
}

/// Queued and running jobs (from their partial indexes: cheap however many
/// finished jobs are kept), the oldest due job's wait, each key's state.
pub(crate) async fn totals(State(state): State<Arc<ApiState>>) -> Response {
    let active = match crate::store::inspect::active_stats(&state.pool).await {
        Ok(active) => active,
        Err(err) => return unavailable(err),
    };
    let keys = match crate::store::keys::list(&state.pool).await {
        Ok(keys) => keys,
        Err(err) => return unavailable(err),
    };
    let count =
        |s: JobState| -> i64 { active.iter().filter(|a| a.state == s).map(|a| a.jobs).sum() };
    let oldest = active
        .iter()
        .filter_map(|a| a.oldest_due_age_s)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    let keys: BTreeMap<String, String> = keys
        .into_iter()
        .map(|k| (k.id, k.state.to_string()))
        .collect();
    Json(json!({
        "totals": {
            "queued": count(JobState::Queued),
            "running": count(JobState::Running),
            "oldest": oldest.map_or("–".to_string(), |s| format!("{}s", s.round())),
        },
        "keys": keys,
    }))
    .into_response()
}

/// One job's state.
pub(crate) async fn job(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not a job id"})),
        )
            .into_response();
    };
    match crate::store::jobs::get(&state.pool, id).await {
        Ok(Some(job)) => Json(json!({"state": job.state})).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": "no such job"}))).into_response(),
        Err(err) => unavailable(err),
    }
}
