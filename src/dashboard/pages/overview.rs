//! The overview: the queue at a glance.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{age, store_error};
use crate::api::ApiState;
use crate::dashboard::{Chrome, render};
use crate::job::JobState;
use crate::store::inspect;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_scales_to_its_peak() {
        let c = chart(&[(2, 0, 0), (1, 5, 5), (0, 10, 0)]);
        assert_eq!((c.peak, c.empty, c.bars.len()), (10, false, 3));
        assert_eq!((c.bars[2].ok_h, c.bars[1].bad_h), (110.0, 55.0));
        assert!(chart(&[(0, 0, 0)]).empty);
    }
}
