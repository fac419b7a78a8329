//! What the dashboard changes: retry or cancel a job, the same for every job
//! a filter matches (after a confirmation that says how many), and enable,
//! disable or reset a key. Every change is a POST with the CSRF token, and
//! answers with a redirect to the page it came from.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::pages::JobsQuery;
use super::{Chrome, not_a_job, problem, refuse_post, render};
use crate::api::ApiState;
use crate::store::inspect::{self, Bulk, Change};

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(crate) struct Plain {
    #[serde(default)]
    csrf: String,
}

fn flash(to: &str, message: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    let query = serde_urlencoded::to_string([("done", message)]).unwrap_or_default();
    Redirect::to(&format!("{to}{sep}{query}")).into_response()
}

fn failed(state: &ApiState, err: crate::store::StoreError, back: &str) -> Response {
    problem(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "Not done",
        &format!("{err}. Nothing was changed; try again."),
        back,
    )
}

async fn change_job(
    state: Arc<ApiState>,
    headers: HeaderMap,
    id: String,
    form: Plain,
    retry: bool,
) -> Response {
    if let Some(refused) = refuse_post(&state, &headers, &form.csrf) {
        return refused;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return not_a_job(&state, &id);
    };
    let back = format!("/jobs/{id}");
    let done = if retry {
        inspect::retry(&state.pool, id).await
    } else {
        inspect::cancel(&state.pool, id).await
    };
    let verb = if retry { "retry" } else { "cancel" };
    match done {
        Ok(Change::Done(_)) => flash(
            &back,
            if retry {
                "queued again with fresh attempts"
            } else {
                "cancelled"
            },
        ),
        Ok(Change::NotFound) => problem(
            &state,
            StatusCode::NOT_FOUND,
            "No such job",
            &format!("There is no job {id}."),
            "/jobs",
        ),
        Ok(Change::Refused {
            state: job_state,
            reason,
        }) => problem(
            &state,
            StatusCode::CONFLICT,
            &format!("Cannot {verb} this job"),
            &format!("The job is {job_state}: {reason}"),
            &back,
        ),
        Err(err) => failed(&state, err, &back),
    }
}

pub(crate) async fn retry(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Plain>,
) -> Response {
    change_job(state, headers, id, form, true).await
}

pub(crate) async fn cancel(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Plain>,
) -> Response {
    change_job(state, headers, id, form, false).await
}

/// A bulk action's form: the action, the jobs page's filters, and once
/// confirmed, the count the confirmation showed.
#[derive(Deserialize)]
pub(crate) struct BulkForm {
    #[serde(default)]
    csrf: String,
    action: String,
    /// The count the confirmation showed (a string: flattened forms carry text).
    #[serde(default)]
    confirm: Option<String>,
    #[serde(flatten)]
    filters: JobsQuery,
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    heading: String,
    verb: &'static str,
    verb_past: &'static str,
    what: &'static str,
    action: &'static str,
    button: String,
    button_class: &'static str,
    count: i64,
    described: String,
    hidden: Vec<(String, String)>,
    back: String,
}

pub(crate) async fn bulk(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<BulkForm>,
) -> Response {
    if let Some(refused) = refuse_post(&state, &headers, &form.csrf) {
        return refused;
    }
    let hidden = form.filters.fields();
    let back = if hidden.is_empty() {
        "/jobs".to_string()
    } else {
        format!(
            "/jobs?{}",
            serde_urlencoded::to_string(&hidden).unwrap_or_default()
        )
    };
    let (bulk, verb, verb_past, what) = match form.action.as_str() {
        "cancel" => (Bulk::Cancel, "cancel", "cancelled", "queued jobs"),
        "retry" => (Bulk::Retry, "retry", "retried", "failed or cancelled jobs"),
        other => {
            return problem(
                &state,
                StatusCode::BAD_REQUEST,
                "Unknown action",
                &format!("{other:?} is not an action; use retry or cancel."),
                &back,
            );
        }
    };
    let filter = match form.filters.filter() {
        Ok(filter) => filter,
        Err(message) => {
            return problem(
                &state,
                StatusCode::BAD_REQUEST,
                "Bad filter",
                &message,
                &back,
            );
        }
    };
    let Some(confirmed) = form.confirm.as_deref().and_then(|c| c.parse::<i64>().ok()) else {
        let count = match inspect::bulk(&state.pool, &filter, bulk, false).await {
            Ok((matching, _)) => matching,
            Err(err) => return failed(&state, err, &back),
        };
        let described = if hidden.is_empty() {
            "every job".to_string()
        } else {
            hidden
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let page = ConfirmPage {
            chrome: Chrome::new(&state, format!("Confirm: {verb}"), "jobs"),
            heading: format!(
                "{} {count} {what}?",
                if bulk == Bulk::Cancel {
                    "Cancel"
                } else {
                    "Retry"
                }
            ),
            verb,
            verb_past,
            what,
            action: bulk.as_str(),
            button: format!(
                "{} {count} jobs",
                if bulk == Bulk::Cancel {
                    "Cancel"
                } else {
                    "Retry"
                }
            ),
            button_class: if bulk == Bulk::Cancel { "danger" } else { "" },
            count,
            described,
            hidden,
            back,
        };
        return render(StatusCode::OK, &page);
    };
    match inspect::bulk(&state.pool, &filter, bulk, true).await {
        Ok((_, changed)) => {
            let note = if changed == confirmed {
                format!("{verb_past} {changed} jobs")
            } else {
                format!(
                    "{verb_past} {changed} jobs (the confirmation counted {confirmed}; jobs changed state meanwhile)"
                )
            };
            flash(&back, &note)
        }
        Err(err) => failed(&state, err, &back),
    }
}

pub(crate) async fn key(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<Plain>,
) -> Response {
    if let Some(refused) = refuse_post(&state, &headers, &form.csrf) {
        return refused;
    }
    let pool = &state.pool;
    let done = match action.as_str() {
        "enable" => crate::store::keys::enable(pool, &id).await,
        "disable" => crate::store::keys::disable(pool, &id, "disabled from the dashboard").await,
        "reset" => crate::store::keys::reset(pool, &id).await,
        other => {
            return problem(
                &state,
                StatusCode::NOT_FOUND,
                "Unknown action",
                &format!("{other:?} is not a key action; use enable, disable or reset."),
                "/keys",
            );
        }
    };
    match done {
        Ok(true) => flash("/keys", &format!("key {id}: {action}d")),
        Ok(false) => problem(
            &state,
            StatusCode::NOT_FOUND,
            "No such key",
            &format!("There is no key {id:?}."),
            "/keys",
        ),
        Err(err) => failed(&state, err, "/keys"),
    }
}
