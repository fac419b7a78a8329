//! `/v1/jobs` handlers: submit, list, show, cancel, retry.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::ApiState;
use super::error::{ApiError, ApiJson};
use crate::job::{JobState, NewJob};
use crate::store::inspect::{self, Change, ListFilter};

/// Jobs listed when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: i64 = 50;
/// Most jobs one listing returns.
pub const MAX_LIST_LIMIT: i64 = 1000;

/// `POST /v1/jobs`: 201 `{id, state}`, or 200 with the first job's id when
/// the idempotency key was seen before. [`crate::submit::submit`] validates
/// the job and its params against the model catalogue.
pub async fn submit(
    State(state): State<Arc<ApiState>>,
    ApiJson(job): ApiJson<NewJob>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let enqueued = crate::submit::submit_with(&state.pool, &job, state.urls).await?;
    let status = if enqueued.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({ "id": enqueued.id, "state": enqueued.state, "created": enqueued.created });
    Ok((status, Json(body)))
}

/// Query string of `GET /v1/jobs`. Kept as text so errors can name the field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs created within this duration (`1h`) or since an RFC 3339 time.
    pub since: Option<String>,
    /// At most this many jobs (1 to [`MAX_LIST_LIMIT`], default [`DEFAULT_LIST_LIMIT`]).
    pub limit: Option<String>,
    /// The previous page's `next_cursor`: the jobs after its last one.
    pub cursor: Option<String>,
}

/// `GET /v1/jobs?state=failed&since=1h&limit=50&cursor=…`: `{"jobs": [...],
/// "next_cursor": …}`, newest first. `next_cursor` is set when the page is
/// full; passing it back (with the same filters) gives the next page, so
/// every job is seen exactly once however many there are.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; the accepted parameters are state, since, limit and cursor",
            e.body_text()
        ))
    })?;
    let filter = list_filter(&query)?;
    let jobs = inspect::list(&state.pool, &filter).await?;
    let next_cursor = match jobs.last() {
        Some(last) if jobs.len() as i64 == filter.limit => {
            Some(super::cursor::encode(last.created_at, last.id))
        }
        _ => None,
    };
    Ok(Json(json!({ "jobs": jobs, "next_cursor": next_cursor })))
}

fn list_filter(query: &ListQuery) -> Result<ListFilter, ApiError> {
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))?,
        ),
    };
    let since = match query.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            crate::duration::parse_since(s, Utc::now())
                .map_err(|e| ApiError::bad_request(format!("since: {e}, or an RFC 3339 time")))?,
        ),
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_LIST_LIMIT,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit {s:?} is not a whole number from 1 to {MAX_LIST_LIMIT}"
                ))
            })?,
    };
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(super::cursor::decode(c).map_err(ApiError::bad_request)?),
    };
    Ok(ListFilter {
        state,
        since,
        limit,
        after,
        ..ListFilter::default()
    })
}

/// `GET /v1/jobs/{id}`: `{"job": {...}, "attempts": [...], "waiting": why}`,
/// `waiting` saying why a queued job waits when no key can serve its model.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let detail = inspect::detail(&state.pool, id)
        .await?
        .ok_or_else(|| no_such_job(id))?;
    Ok(Json(json!(detail)))
}

/// `POST /v1/jobs/{id}/cancel`: 200 `{"job": ...}`; 409 unless the job is queued.
pub async fn cancel(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    changed(id, "cancel", inspect::cancel(&state.pool, id).await?)
}

/// `POST /v1/jobs/{id}/retry`: 200 `{"job": ...}`; 409 unless failed or cancelled.
pub async fn retry(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    changed(id, "retry", inspect::retry(&state.pool, id).await?)
}

fn changed(id: Uuid, verb: &str, change: Change) -> Result<Json<Value>, ApiError> {
    match change {
        Change::Done(job) => Ok(Json(json!({ "job": job }))),
        Change::NotFound => Err(no_such_job(id)),
        Change::Refused { state, reason } => Err(ApiError::conflict(format!(
            "cannot {verb} job {id} ({state}): {reason}"
        ))),
    }
}

pub(super) fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::bad_request(format!(
            "job id {text:?} is not a UUID; use the id POST /v1/jobs returned, \
             e.g. 0195f0c4-7d4e-7a3b-9c1d-2e3f4a5b6c7d"
        ))
    })
}

pub(super) fn no_such_job(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no job with id {id}; list jobs with GET /v1/jobs"))
}
