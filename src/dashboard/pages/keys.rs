//! The keys, with their state, limits, counts and operations.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{age, clip, store_error};
use crate::api::ApiState;
use crate::dashboard::{Chrome, Flash, render};

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
