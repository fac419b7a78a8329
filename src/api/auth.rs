//! Bearer-token authentication (`GENQ_API_TOKEN`) and the rule that a
//! server reachable beyond loopback must have a token; `/metrics` too when
//! `GENQ_METRICS_REQUIRE_TOKEN` asks for it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::ApiError;

/// Middleware: when the state has a token, requests must carry
/// `Authorization: Bearer <token>`; otherwise 401 saying what is missing.
pub async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = state.token.as_deref() {
        match bearer(request.headers()) {
            Err(message) => return ApiError::unauthorized(message).into_response(),
            Ok(given) if !token_matches(given, expected) => {
                return ApiError::unauthorized(
                    "wrong bearer token: it does not match the server's GENQ_API_TOKEN",
                )
                .into_response();
            }
            Ok(_) => {}
        }
    }
    next.run(request).await
}

/// Middleware for `/metrics`: like [`require_token`] when the state says
/// `/metrics` needs the token, else open.
pub async fn require_metrics_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if !state.metrics_need_token {
        return next.run(request).await;
    }
    require_token(State(state), request, next).await
}

/// Whether `/metrics` needs the token: `GENQ_METRICS_REQUIRE_TOKEN` is on
/// and the listener is reachable beyond loopback (on loopback only this
/// host can scrape it).
pub fn metrics_need_token(listen: SocketAddr, require: bool) -> bool {
    require && !listen.ip().is_loopback()
}

/// Whether `/metrics` on `listen` needs the token ([`metrics_need_token`]);
/// refuses `GENQ_METRICS_REQUIRE_TOKEN` beyond loopback with no token to
/// require.
pub fn check_metrics_listen(
    listen: SocketAddr,
    token: Option<&str>,
    require: bool,
) -> Result<bool, String> {
    let has_token = token.is_some_and(|t| !t.trim().is_empty());
    let needed = metrics_need_token(listen, require);
    if !needed || has_token {
        return Ok(needed);
    }
    Err(format!(
        "GENQ_METRICS_REQUIRE_TOKEN is set and {listen} is beyond loopback, but there is no \
         GENQ_API_TOKEN to require; set GENQ_API_TOKEN (or --api-token)"
    ))
}

/// The bearer token of a request, or what is wrong with its header.
fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("missing bearer token: send the header Authorization: Bearer <GENQ_API_TOKEN>");
    };
    let value = value.to_str().unwrap_or_default().trim();
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err("the Authorization header is not of the form: Bearer <GENQ_API_TOKEN>"),
    }
}

/// Compares in constant time. Hashing first hides the expected token's length too.
pub(crate) fn token_matches(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.ct_eq(&expected).into()
}

/// Refuses to listen beyond loopback without a token: anyone who could reach
/// the port could submit, cancel and retry jobs and spend the API keys' budget.
pub fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    let has_token = token.is_some_and(|t| !t.trim().is_empty());
    if addr.ip().is_loopback() || has_token {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {addr} without GENQ_API_TOKEN: anyone who can reach it could \
         submit and cancel jobs; set GENQ_API_TOKEN (or --api-token), or listen on 127.0.0.1"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn bearer_header_forms() {
        let mut headers = HeaderMap::new();
        assert!(
            bearer(&headers)
                .unwrap_err()
                .contains("missing bearer token")
        );
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer(&headers).unwrap_err().contains("not of the form"));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Ok("abc"));
    }

    #[test]
    fn metrics_need_the_token_only_when_asked_and_reachable() {
        let public: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        // (listen, GENQ_METRICS_REQUIRE_TOKEN, token, needs the token, starts)
        let rows = [
            (public, false, None, false, true),
            (public, true, Some("t"), true, true),
            (public, true, None, true, false),
            (public, true, Some(" "), true, false),
            (local, true, None, false, true),
            (local, true, Some("t"), false, true),
        ];
        for (listen, require, token, needs, starts) in rows {
            assert_eq!(
                metrics_need_token(listen, require),
                needs,
                "{listen} {require}"
            );
            let checked = check_metrics_listen(listen, token, require);
            assert_eq!(checked.is_ok(), starts, "{listen} {require} {token:?}");
            if let Ok(needed) = checked {
                assert_eq!(needed, needs, "{listen} {require} {token:?}");
            }
        }
    }

    #[test]
    fn listening_beyond_loopback_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(
            check_listen(public, None)
                .unwrap_err()
                .contains("GENQ_API_TOKEN")
        );
        assert!(check_listen(public, Some(" ")).is_err());
        assert!(check_listen(public, Some("t")).is_ok());
        assert!(check_listen(local, None).is_ok());
        assert!(check_listen(local6, None).is_ok());
    }
}
