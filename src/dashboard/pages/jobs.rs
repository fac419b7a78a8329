//! The jobs page: filters, cursor pages, and the forms of the bulk actions.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{clip, store_error, when};
use crate::api::ApiState;
use crate::dashboard::{Chrome, render};
use crate::job::{Job, JobState};
use crate::store::inspect::{self, ListFilter};

/// Jobs per page.
const PAGE: i64 = 50;

/// The jobs page's filters, as the form sends them.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct JobsQuery {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub cursor: String,
    /// A note left by the change that led here.
    #[serde(default)]
    pub done: String,
}

impl JobsQuery {
    /// The store's filter, or what is wrong with a field.
    pub fn filter(&self) -> Result<ListFilter, String> {
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let time = |name: &str, s: &str| -> Result<Option<DateTime<Utc>>, String> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
                .map(|t| Some(t.and_utc()))
                .map_err(|_| format!("{name} {s:?} is not a time; use YYYY-MM-DDTHH:MM (UTC)"))
        };
        let state = match text(&self.state) {
            None => None,
            Some(s) => Some(s.parse::<JobState>().map_err(|e| e.to_string())?),
        };
        let after = match text(&self.cursor) {
            None => None,
            Some(c) => Some(crate::api::cursor::decode(&c)?),
        };
        Ok(ListFilter {
            state,
            since: time("from", &self.since)?,
            until: time("to", &self.until)?,
            queue: text(&self.queue),
            model: text(&self.model),
            prompt: text(&self.q),
            limit: PAGE,
            after,
        })
    }

    /// The filter fields as (name, value), for hidden inputs and links.
    pub fn fields(&self) -> Vec<(String, String)> {
        [
            ("state", &self.state),
            ("queue", &self.queue),
            ("model", &self.model),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
        ]
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
    }
}

pub(crate) struct FilterView {
    since: String,
    until: String,
    queue: String,
    model: String,
    q: String,
    any: bool,
}

pub(crate) struct JobRow {
    id: Uuid,
    short_id: String,
    state: JobState,
    queue: String,
    model: String,
    prompt: String,
    attempts: String,
    created: String,
    error: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    /// (state, " selected" or "").
    states: Vec<(&'static str, &'static str)>,
    filter: FilterView,
    hidden: Vec<(String, String)>,
    jobs: Vec<JobRow>,
    shown: usize,
    more: bool,
    next_page: Option<String>,
}

pub(crate) async fn jobs(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<JobsQuery>,
) -> Response {
    let mut chrome = Chrome::new(&state, "Jobs", "jobs");
    chrome.flash = Some(query.done.clone()).filter(|d| !d.is_empty());
    let (found, error) = match query.filter() {
        Ok(filter) => match inspect::list(&state.pool, &filter).await {
            Ok(found) => (found, None),
            Err(err) => return store_error(&state, err),
        },
        Err(message) => (Vec::new(), Some(message)),
    };
    chrome.error = error;
    let more = found.len() as i64 == PAGE;
    let next_page = more.then(|| found.last()).flatten().map(|last: &Job| {
        let mut fields = query.fields();
        fields.push((
            "cursor".into(),
            crate::api::cursor::encode(last.created_at, last.id),
        ));
        format!(
            "/jobs?{}",
            serde_urlencoded::to_string(&fields).unwrap_or_default()
        )
    });
    let page = JobsPage {
        chrome,
        states: JobState::ALL
            .iter()
            .map(|s| {
                let on = if query.state == s.as_str() {
                    " selected"
                } else {
                    ""
                };
                (s.as_str(), on)
            })
            .collect(),
        filter: FilterView {
            since: query.since.clone(),
            until: query.until.clone(),
            queue: query.queue.clone(),
            model: query.model.clone(),
            q: query.q.clone(),
            any: !query.fields().is_empty(),
        },
        hidden: query.fields(),
        shown: found.len(),
        more,
        next_page,
        jobs: found
            .iter()
            .map(|j| JobRow {
                id: j.id,
                short_id: j.id.to_string()[..8].to_string(),
                state: j.state,
                queue: j.queue.clone(),
                model: j.model.clone(),
                prompt: clip(&j.prompt, 160),
                attempts: format!("{}/{}", j.attempts, j.max_attempts),
                created: when(j.created_at),
                error: clip(j.last_error.as_deref().unwrap_or(""), 120),
            })
            .collect(),
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_like_the_form_writes_them() {
        let q = JobsQuery {
            state: "failed".into(),
            queue: " sprites ".into(),
            since: "2026-12-05T10:30".into(),
            q: "fox".into(),
            ..JobsQuery::default()
        };
        let f = q.filter().unwrap();
        assert_eq!(f.state, Some(JobState::Failed));
        assert_eq!(f.queue.as_deref(), Some("sprites"));
        assert_eq!(f.model, None);
        assert_eq!(f.prompt.as_deref(), Some("fox"));
        assert_eq!(f.since.unwrap().to_rfc3339(), "2026-12-05T10:30:00+00:00");
        assert_eq!(
            q.fields(),
            [
                ("state".to_string(), "failed".to_string()),
                ("queue".into(), "sprites".into()),
                ("since".into(), "2026-12-05T10:30".into()),
                ("q".into(), "fox".into())
            ]
        );
        for (bad, expected) in [
            (
                JobsQuery {
                    state: "done".into(),
                    ..JobsQuery::default()
                },
                "unknown state",
            ),
            (
                JobsQuery {
                    until: "yesterday".into(),
                    ..JobsQuery::default()
                },
                "to \"yesterday\" is not a time",
            ),
            (
                JobsQuery {
                    cursor: "%%".into(),
                    ..JobsQuery::default()
                },
                "cursor",
            ),
        ] {
            let err = bad.filter().unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
