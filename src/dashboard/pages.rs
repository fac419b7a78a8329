//! The pages: overview, jobs (filters, pages, bulk actions), one job, keys.
//! Each builds a view of plain strings from the store, and its template
//! escapes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{Chrome, Flash, not_a_job, problem, render};
use crate::api::ApiState;
use crate::job::{Job, JobState};
use crate::store::inspect::{self, ListFilter};

/// Jobs per page.
const PAGE: i64 = 50;

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

fn store_error(state: &ApiState, err: crate::store::StoreError) -> Response {
    problem(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer",
        &format!("{err}. Try again in a moment."),
        "/",
    )
}

// ---- overview ----

pub(crate) struct Totals {
    pub queued: i64,
    pub running: i64,
    pub succeeded_hour: i64,
    pub failed_hour: i64,
    pub oldest_due: String,
}

pub(crate) struct Bar {
    x: u32,
    ok_y: f64,
    ok_h: f64,
    bad_y: f64,
    bad_h: f64,
    title: String,
}

pub(crate) struct Chart {
    bars: Vec<Bar>,
    peak: i64,
    empty: bool,
}

/// Bars of finished jobs per minute, scaled to the tallest: (minutes ago,
/// succeeded, failed) oldest first.
fn chart(minutes: &[(i32, i64, i64)]) -> Chart {
    let peak = minutes
        .iter()
        .map(|(_, ok, bad)| ok + bad)
        .max()
        .unwrap_or(0);
    let scale = if peak > 0 { 110.0 / peak as f64 } else { 0.0 };
    let bars = minutes
        .iter()
        .enumerate()
        .map(|(i, &(ago, ok, bad))| {
            let (ok_h, bad_h) = (ok as f64 * scale, bad as f64 * scale);
            Bar {
                x: i as u32 * 10,
                ok_y: 115.0 - ok_h,
                ok_h,
                bad_y: 115.0 - ok_h - bad_h,
                bad_h,
                title: format!("{ago} min ago: {ok} succeeded, {bad} failed or cancelled"),
            }
        })
        .collect();
    Chart {
        bars,
        peak,
        empty: peak == 0,
    }
}

#[derive(Default)]
pub(crate) struct QueueRow {
    queue: String,
    model: String,
    queued: i64,
    running: i64,
    succeeded: i64,
    failed: i64,
    cancelled: i64,
    oldest_due: String,
    waiting: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    chrome: Chrome,
    totals: Totals,
    chart: Chart,
    waits: Vec<String>,
    rows: Vec<QueueRow>,
}

pub(crate) async fn overview(State(state): State<Arc<ApiState>>) -> Response {
    let pool = &state.pool;
    let loaded = async {
        Ok::<_, crate::store::StoreError>((
            inspect::queue_stats(pool).await?,
            inspect::throughput(pool).await?,
            crate::store::budgets::exhausted(pool).await?,
            crate::store::keys::list(pool).await?,
        ))
    }
    .await;
    let (stats, minutes, budgets, keys) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => return store_error(&state, err),
    };
    let mut rows: BTreeMap<(String, String), QueueRow> = BTreeMap::new();
    let mut totals = Totals {
        queued: 0,
        running: 0,
        succeeded_hour: minutes.iter().map(|m| m.1).sum(),
        failed_hour: minutes.iter().map(|m| m.2).sum(),
        oldest_due: "–".into(),
    };
    let mut oldest: Option<f64> = None;
    let mut waits = Vec::new();
    for s in &stats {
        let row = rows
            .entry((s.queue.clone(), s.model.clone()))
            .or_insert_with(|| QueueRow {
                queue: s.queue.clone(),
                model: s.model.clone(),
                oldest_due: "–".into(),
                ..QueueRow::default()
            });
        match s.state {
            JobState::Queued => {
                row.queued = s.jobs;
                totals.queued += s.jobs;
                if let Some(a) = s.oldest_queued_age_s {
                    row.oldest_due = age(a);
                    oldest = Some(oldest.map_or(a, |o: f64| o.max(a)));
                }
                if let Some(w) = &s.waiting {
                    row.waiting = w.clone();
                    let line = format!("{} / {}: {w}", s.queue, s.model);
                    if !waits.contains(&line) {
                        waits.push(line);
                    }
                }
            }
            JobState::Running => {
                row.running = s.jobs;
                totals.running += s.jobs;
            }
            JobState::Succeeded => row.succeeded = s.jobs,
            JobState::Failed => row.failed = s.jobs,
            JobState::Cancelled => row.cancelled = s.jobs,
        }
    }
    if let Some(a) = oldest {
        totals.oldest_due = age(a);
    }
    for b in budgets {
        waits.push(b.reason);
    }
    for k in keys.iter().filter(|k| k.cooldown_remaining_secs.is_some()) {
        waits.push(format!(
            "key {} cools down for {} more",
            k.id,
            age(k.cooldown_remaining_secs.unwrap_or(0.0))
        ));
    }
    let page = OverviewPage {
        chrome: Chrome::new(&state, "Overview", "overview"),
        totals,
        chart: chart(&minutes),
        waits,
        rows: rows.into_values().collect(),
    };
    render(StatusCode::OK, &page)
}

// ---- jobs ----

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

// ---- one job ----

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

// ---- keys ----

pub(crate) struct KeyRow {
    id: String,
    account: String,
    state: String,
    cooldown_until: Option<String>,
    cooldown: String,
    limits: Vec<String>,
    ok: i64,
    rate_limited: i64,
    errors: i64,
    cost: String,
    last_error: String,
    /// (action, label, button class).
    actions: Vec<(&'static str, &'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
}

pub(crate) async fn keys(
    State(state): State<Arc<ApiState>>,
    Query(flash): Query<Flash>,
) -> Response {
    let keys = match crate::store::keys::list(&state.pool).await {
        Ok(keys) => keys,
        Err(err) => return store_error(&state, err),
    };
    let rows = keys
        .into_iter()
        .map(|k| {
            let disabled = k.state == crate::keys::KeyState::Disabled;
            let cooling = k.cooldown_remaining_secs.is_some();
            let mut actions = Vec::new();
            if disabled || cooling {
                actions.push(("enable", "Enable", ""));
            }
            if !disabled {
                actions.push(("disable", "Disable", "danger"));
            }
            actions.push(("reset", "Reset", "secondary"));
            let mut limits = k.limits.clone();
            limits.extend(k.blocked_models.iter().map(|b| format!("blocked: {b}")));
            KeyRow {
                account: k.account_label().unwrap_or_else(|| "–".into()),
                state: k.state.to_string(),
                cooldown_until: k.cooldown_until.filter(|_| cooling).map(|t| t.to_rfc3339()),
                cooldown: k
                    .cooldown_remaining_secs
                    .map_or("–".into(), |s| format!("{} left", age(s))),
                limits,
                ok: k.ok_count,
                rate_limited: k.rate_limited_count,
                errors: k.error_count,
                cost: k.cost_usd.to_string(),
                last_error: clip(
                    k.disabled_reason
                        .as_deref()
                        .or(k.last_error.as_deref())
                        .unwrap_or(""),
                    100,
                ),
                actions,
                id: k.id,
            }
        })
        .collect();
    let mut chrome = Chrome::new(&state, "Keys", "keys");
    chrome.flash = flash.done;
    let page = KeysPage { chrome, keys: rows };
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

    #[test]
    fn the_chart_scales_to_its_peak() {
        let c = chart(&[(2, 0, 0), (1, 5, 5), (0, 10, 0)]);
        assert_eq!((c.peak, c.empty, c.bars.len()), (10, false, 3));
        assert_eq!((c.bars[2].ok_h, c.bars[1].bad_h), (110.0, 55.0));
        assert!(chart(&[(0, 0, 0)]).empty);
        assert_eq!(age(59.9), "59s");
        assert_eq!(age(125.0), "2m 5s");
        assert_eq!(age(7300.0), "2h 1m");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
