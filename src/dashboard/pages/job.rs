//! One job: its prompt, attempts and images, with retry and cancel.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use uuid::Uuid;

use super::{age, store_error, when};
use crate::api::ApiState;
use crate::dashboard::{Chrome, Flash, not_a_job, problem, render};
use crate::job::JobState;
use crate::store::inspect;

pub(crate) struct AttemptRow {
    attempt: i32,
    started: String,
    key: String,
    status: String,
    outcome: String,
    wait: String,
    cost: String,
    error: String,
}

pub(crate) struct JobView {
    id: Uuid,
    state: JobState,
    queue: String,
    model: String,
    operation: String,
    prompt: String,
    params: String,
    attempts: String,
    cost: String,
    created: String,
    finished: String,
    last_error: Option<String>,
    waiting: Option<String>,
    images: Vec<String>,
    timeline: Vec<AttemptRow>,
    can_retry: bool,
    can_cancel: bool,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    job: JobView,
}

pub(crate) async fn job(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return not_a_job(&state, &id);
    };
    let detail = match inspect::detail(&state.pool, id).await {
        Ok(Some(detail)) => detail,
        Ok(None) => {
            return problem(
                &state,
                StatusCode::NOT_FOUND,
                "No such job",
                &format!("There is no job {id}; it may have been pruned by retention."),
                "/jobs",
            );
        }
        Err(err) => return store_error(&state, err),
    };
    let j = &detail.job;
    let images = if j.state == JobState::Succeeded {
        (0..j.images().len())
            .map(|n| format!("/jobs/{id}/images/{n}"))
            .collect()
    } else {
        Vec::new()
    };
    let view = JobView {
        id,
        state: j.state,
        queue: j.queue.clone(),
        model: j.model.clone(),
        operation: j.operation.to_string(),
        prompt: j.prompt.clone(),
        params: serde_json::to_string_pretty(&j.params).unwrap_or_default(),
        attempts: format!("{} of {}", j.attempts, j.max_attempts),
        cost: detail.cost_usd.to_string(),
        created: when(j.created_at),
        finished: j.finished_at.map_or("–".into(), when),
        last_error: j.last_error.clone(),
        waiting: detail.waiting.clone(),
        images,
        timeline: detail
            .attempts
            .iter()
            .map(|a| AttemptRow {
                attempt: a.attempt,
                started: when(a.started_at),
                key: a.key_id.clone().unwrap_or_else(|| "–".into()),
                status: a.http_status.map_or("–".into(), |s| s.to_string()),
                outcome: a.outcome.to_string(),
                wait: a
                    .retry_after_ms
                    .map_or("–".into(), |ms| age(ms as f64 / 1000.0)),
                cost: a.cost_usd.map_or("–".into(), |c| c.to_string()),
                error: a.error.clone().unwrap_or_default(),
            })
            .collect(),
        can_retry: matches!(j.state, JobState::Failed | JobState::Cancelled),
        can_cancel: j.state == JobState::Queued,
    };
    let mut chrome = Chrome::new(&state, format!("Job {}", &id.to_string()[..8]), "jobs");
    chrome.flash = flash.done;
    let page = JobPage { chrome, job: view };
    render(StatusCode::OK, &page)
}

/// An image of a job, for a signed-in browser: the API's image route.
pub(crate) async fn image(state: State<Arc<ApiState>>, path: Path<(String, String)>) -> Response {
    use axum::response::IntoResponse;
    crate::api::images::show(state, path).await.into_response()
}
