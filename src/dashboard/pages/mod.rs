//! The pages: overview, jobs (filters, pages, bulk actions), one job, keys,
//! a file each. Each builds a view of plain strings from the store, and its
//! template escapes them; what they share is here.

mod job;
mod jobs;
mod keys;
mod overview;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::problem;
use crate::api::ApiState;

pub(crate) use job::{image, job};
pub(crate) use jobs::{JobsQuery, jobs};
pub(crate) use keys::keys;
pub(crate) use overview::overview;

pub(super) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(super) fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

pub(super) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

pub(super) fn store_error(state: &ApiState, err: crate::store::StoreError) -> Response {
    problem(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "The database did not answer",
        &format!("{err}. Try again in a moment."),
        "/",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_clipping_read_short() {
        assert_eq!(age(59.9), "59s");
        assert_eq!(age(125.0), "2m 5s");
        assert_eq!(age(7300.0), "2h 1m");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
