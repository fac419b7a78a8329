//! Fetching an input image from a URL: from exactly the addresses
//! `address::resolve` checked (so the name cannot resolve elsewhere between
//! the check and the connection), redirects followed by hand and each
//! target checked the same way, within a timeout and a size cap, and the
//! bytes must be an accepted image.

use bytes::Bytes;
use std::time::Duration;

use super::address::{self, UrlError, UrlPolicy};
use super::format::{self, ImageFormat};
use crate::bounded::{self, Bounded};

/// How long fetching one input URL may take, redirects included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// Why an input URL gave no image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// It will fail the same way again (the URL, the address, the answer).
    #[error("{0}")]
    Refused(String),
    /// It may work later (timeout, connection, a 5xx or 429).
    #[error("{0}")]
    Transient(String),
}

/// The bytes of the image at `url`, at most `max_bytes`.
pub async fn fetch(url: &str, policy: UrlPolicy, max_bytes: u64) -> Result<Bytes, FetchError> {
    let refused = |why: String| FetchError::Refused(why);
    let mut target = address::parse(url).map_err(|e| refused(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
    for _ in 0..=MAX_REDIRECTS {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let client = address::pinned_client(&target, policy, left)
            .await
            .map_err(|e| match e {
                UrlError::Resolve { .. } | UrlError::Client(_) => {
                    FetchError::Transient(e.to_string())
                }
                e => refused(e.to_string()),
            })?;
        let response = client
            .get(target.clone())
            .header(reqwest::header::ACCEPT, "image/png, image/jpeg, image/webp")
            .send()
            .await
            .map_err(|e| FetchError::Transient(crate::cause::chain(&e.without_url())))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| target.join(l).ok())
                .ok_or_else(|| refused(format!("HTTP {status} without a usable Location")))?;
            target = address::parse(location.as_str())
                .map_err(|e| refused(format!("redirected to a URL that {e}")))?;
            continue;
        }
        if !status.is_success() {
            let why = format!("HTTP {status}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                FetchError::Transient(why)
            } else {
                refused(why)
            });
        }
        let body = match bounded::read(response, max_bytes).await {
            Ok(Bounded::Whole(body)) => body,
            Ok(Bounded::Cut(_)) => {
                return Err(refused(format!(
                    "is larger than {max_bytes} bytes, the most an input image may be"
                )));
            }
            Err(e) => {
                return Err(FetchError::Transient(crate::cause::chain(&e.without_url())));
            }
        };
        if ImageFormat::sniff(&body).is_none() {
            return Err(refused(format!(
                "answered with {}, not a PNG, JPEG or WebP image",
                format::describe_unaccepted(&body)
            )));
        }
        return Ok(body);
    }
    Err(refused(format!(
        "redirected more than {MAX_REDIRECTS} times"
    )))
}
