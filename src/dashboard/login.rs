//! Signing in with the API token, and out.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Session;
use super::{Chrome, refuse_post, render};
use crate::api::ApiState;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
}

#[derive(Deserialize)]
pub(crate) struct NextPage {
    #[serde(default)]
    next: String,
}

/// Only a path on this server: never another site.
fn local(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_string()
    } else {
        "/".into()
    }
}

fn page(state: &ApiState, next: &str, error: Option<String>, status: StatusCode) -> Response {
    let mut chrome = Chrome::new(state, "Sign in", "login");
    chrome.error = error;
    render(
        status,
        &LoginPage {
            chrome,
            next: local(next),
        },
    )
}

pub(crate) async fn form(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<NextPage>,
) -> Response {
    if !state.session.required() {
        return Redirect::to(&local(&q.next)).into_response();
    }
    page(&state, &q.next, None, StatusCode::OK)
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

pub(crate) async fn sign_in(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if let Some(refused) = refuse_post(&state, &headers, &form.csrf) {
        return refused;
    }
    if !state.session.token_matches(form.token.trim()) {
        return page(
            &state,
            &form.next,
            Some(
                "That is not this server's API token (GENQ_API_TOKEN). Check it and try again."
                    .into(),
            ),
            StatusCode::UNAUTHORIZED,
        );
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = state.session.sign_in_cookie(https).unwrap_or_default();
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&local(&form.next)),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct SignOut {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn sign_out(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Response {
    if let Some(refused) = refuse_post(&state, &headers, &form.csrf) {
        return refused;
    }
    (
        [(header::SET_COOKIE, Session::sign_out_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_local_paths_are_followed() {
        for (next, to) in [
            ("/jobs?state=failed", "/jobs?state=failed"),
            ("", "/"),
            ("https://evil.example/", "/"),
            ("//evil.example", "/"),
            ("/\\evil", "/"),
            ("jobs", "/"),
        ] {
            assert_eq!(super::local(next), to, "{next}");
        }
    }
}
