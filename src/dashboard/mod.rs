//! The web dashboard `genq serve` and `genq run` serve at `/`: the queue at
//! a glance, jobs to filter, inspect, retry or cancel (one or in bulk), and
//! keys to watch and operate. Server-rendered HTML (askama templates, which
//! escape every value), one stylesheet and one small script embedded in the
//! binary; no build step, no CDN.
//!
//! - Pages: `/` (overview), `/jobs`, `/jobs/{id}`, `/keys`; `/live` and
//!   `/live/jobs/{id}` are the JSON the script polls every 2 s.
//! - With `GENQ_API_TOKEN` set, every page needs a sign-in (`/login`,
//!   [`session`]); every change is a POST carrying the CSRF token, from
//!   this origin.
//! - Every answer carries a strict Content-Security-Policy: scripts and
//!   styles from this server only, no inline script, no framing.

mod actions;
mod live;
mod login;
mod pages;
pub mod session;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::api::ApiState;
pub use session::Session;

/// The policy every dashboard answer carries. Images may come from an
/// object store's presigned URL (a 307 from `/jobs/{id}/images/{n}`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: https: http:; connect-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, to merge into the API's router.
pub(crate) fn routes(state: Arc<ApiState>) -> Router<Arc<ApiState>> {
    let signed_in = Router::new()
        .route("/", get(pages::overview))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/bulk", post(actions::bulk))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/retry", post(actions::retry))
        .route("/jobs/{id}/cancel", post(actions::cancel))
        .route("/jobs/{id}/images/{n}", get(pages::image))
        .route("/keys", get(pages::keys))
        .route("/keys/{id}/{action}", post(actions::key))
        .route("/live", get(live::totals))
        .route("/live/jobs/{id}", get(live::job))
        .route("/logout", post(login::sign_out))
        .route_layer(middleware::from_fn_with_state(state, gate));
    Router::new()
        .merge(signed_in)
        .route("/login", get(login::form).post(login::sign_in))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .layer(middleware::map_response(security_headers))
}

/// Pages need a signed-in browser when the server has a token: a page is
/// redirected to the sign-in form, anything else is refused.
async fn gate(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let cookie = request
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok());
    if state.session.signed_in(cookie) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if request.method() == axum::http::Method::GET && !path.starts_with("/live") {
        let next_page = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let query = serde_urlencoded::to_string([("next", next_page)]).unwrap_or_default();
        return Redirect::to(&format!("/login?{query}")).into_response();
    }
    problem(
        &state,
        StatusCode::UNAUTHORIZED,
        "Sign in first",
        "This server needs its API token: sign in, then try again.",
        "/login",
    )
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn js() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
}

/// The note a change leaves for the page it redirects to (`?done=`).
#[derive(serde::Deserialize, Default)]
pub(crate) struct Flash {
    #[serde(default)]
    pub done: Option<String>,
}

/// What every page's frame shows.
pub(crate) struct Chrome {
    pub title: String,
    /// Which tab is lit: overview, jobs, keys, or login (no tabs).
    pub nav: &'static str,
    pub csrf: String,
    pub can_sign_out: bool,
    pub flash: Option<String>,
    pub error: Option<String>,
}

impl Chrome {
    pub fn new(state: &ApiState, title: impl Into<String>, nav: &'static str) -> Self {
        Chrome {
            title: title.into(),
            nav,
            csrf: state.session.csrf().to_string(),
            can_sign_out: state.session.required() && nav != "login",
            flash: None,
            error: None,
        }
    }
}

/// A rendered page, or a plain 500 saying the template failed.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {err}"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage {
    chrome: Chrome,
    heading: String,
    message: String,
    back: String,
}

/// A page saying what went wrong and where to go back to.
pub(crate) fn problem(
    state: &ApiState,
    status: StatusCode,
    heading: &str,
    message: &str,
    back: &str,
) -> Response {
    render(
        status,
        &ProblemPage {
            chrome: Chrome::new(state, heading, "problem"),
            heading: heading.into(),
            message: message.into(),
            back: back.into(),
        },
    )
}

/// The page for a job id that is not one.
pub(crate) fn not_a_job(state: &ApiState, id: &str) -> Response {
    problem(
        state,
        StatusCode::NOT_FOUND,
        "No such job",
        &format!("{id:?} is not a job id."),
        "/jobs",
    )
}

/// The refusal of a POST that did not come from this dashboard (a wrong or
/// missing CSRF token, or another origin); `None` when it did.
pub(crate) fn refuse_post(state: &ApiState, headers: &HeaderMap, csrf: &str) -> Option<Response> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let origin_ok = session::same_origin(header(header::ORIGIN), header(header::HOST));
    if origin_ok && state.session.csrf_ok(csrf) {
        return None;
    }
    Some(problem(
        state,
        StatusCode::FORBIDDEN,
        "Refused",
        "This change did not come from a genq dashboard page (its form token was missing or wrong, or it came from another site). Reload the page and try again.",
        "/",
    ))
}
