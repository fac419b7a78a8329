//! What a provider answer means for the job and for the key: the one place
//! that turns HTTP status, error body and headers into a decision.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use std::time::Duration;

use super::headers;

/// The decision an answer leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success,
    /// 429 rate limit: the key cools down (for `wait` if the provider said);
    /// the job is rescheduled for another key without spending an attempt.
    /// `daily`: the message says a per-day limit is spent.
    RateLimited {
        wait: Option<Duration>,
        daily: bool,
    },
    /// Quota, billing, bad or forbidden key: the key is disabled; the job goes elsewhere.
    KeyDisabled {
        reason: String,
    },
    /// A 403 for one model (e.g. an organization not verified for it): the
    /// key stays in use for other models; the job goes elsewhere.
    ModelRejected {
        reason: String,
    },
    /// The job itself was refused (content policy, invalid request): fail, no retry.
    JobRejected {
        message: String,
    },
    /// 5xx, 408, timeouts, connection errors: retry later, spending an attempt.
    Transient {
        message: String,
    },
}

/// Longest provider message kept (bodies can be large).
const MAX_MESSAGE: usize = 500;

#[derive(Deserialize)]
struct Body {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<serde_json::Value>,
}

/// Classifies a non-success HTTP answer (a 2xx is always [`Verdict::Success`]).
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Success;
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice::<Body>(body)
        .ok()
        .and_then(|b| b.error);
    let code = parsed
        .as_ref()
        .and_then(|e| e.code.as_ref())
        .and_then(|c| c.as_str().map(str::to_string))
        .unwrap_or_default();
    let kind = parsed
        .as_ref()
        .and_then(|e| e.kind.clone())
        .unwrap_or_default();
    let message = {
        let raw = parsed
            .as_ref()
            .and_then(|e| e.message.clone())
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                if text.trim().is_empty() {
                    format!("HTTP {status} with no body")
                } else {
                    text.into_owned()
                }
            });
        let label = if code.is_empty() {
            kind.clone()
        } else {
            code.clone()
        };
        let text = redact_keys(&truncate(raw.trim()));
        if label.is_empty() {
            text
        } else {
            format!("{label}: {text}")
        }
    };
    if is_quota(&code) || is_quota(&kind) {
        return Verdict::KeyDisabled { reason: message };
    }
    match status {
        429 => {
            let wait = [
                headers::retry_after(headers, now),
                headers::hint_in_message(&message),
            ]
            .into_iter()
            .flatten()
            .max();
            Verdict::RateLimited {
                wait,
                daily: is_daily(&message),
            }
        }
        403 if names_a_model(&message) => Verdict::ModelRejected { reason: message },
        401 | 403 => Verdict::KeyDisabled { reason: message },
        408 | 409 | 425 | 500..=599 => Verdict::Transient { message },
        _ => Verdict::JobRejected { message },
    }
}

/// A 429 whose message says a daily limit is spent (OpenAI: "requests per
/// day (RPD)", "images per day").
fn is_daily(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("per day") || m.contains("(rpd)") || m.contains("(ipd)")
}

/// A 403 about one model rather than the key: "must be verified to use the
/// model `x`", "does not have access to model x".
fn names_a_model(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("model")
        && ["verified", "access", "not allowed", "not available"]
            .iter()
            .any(|w| m.contains(w))
}

/// Classifies a call that got no HTTP answer (timeout, refused connection).
pub fn classify_transport(description: &str) -> Verdict {
    Verdict::Transient {
        message: redact_keys(&truncate(description)),
    }
}

/// Quota and billing codes: the key cannot be used until someone pays or raises a limit.
fn is_quota(code: &str) -> bool {
    matches!(
        code,
        "insufficient_quota"
            | "billing_hard_limit_reached"
            | "credit_balance_exhausted"
            | "billing_not_active"
    ) || code.ends_with("_spend_limit_exceeded")
        || code.ends_with("_usage_limit_exceeded")
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Replaces anything that looks like an API key (`sk-…`) with a marker:
/// OpenAI's 401 message echoes a masked key, and masks vary.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sk-") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 3..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.')))
            .unwrap_or(tail.len());
        // Keep a trailing sentence full stop.
        let end = if tail[..end].ends_with('.') {
            end - 1
        } else {
            end
        };
        out.push_str("sk-…redacted");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn body(kind: &str, code: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn answers_map_to_decisions() {
        let now = Utc::now();
        let mut wait = HeaderMap::new();
        wait.insert("retry-after", HeaderValue::from_static("7"));
        let none = HeaderMap::new();
        let rate = body(
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for images per min.",
        );
        assert_eq!(
            classify(429, &wait, &rate, now),
            Verdict::RateLimited {
                wait: Some(Duration::from_secs(7)),
                daily: false
            }
        );
        assert_eq!(
            classify(429, &none, &rate, now),
            Verdict::RateLimited {
                wait: None,
                daily: false
            }
        );
        assert_eq!(
            classify(429, &none, b"", now),
            Verdict::RateLimited {
                wait: None,
                daily: false
            }
        );
        // A daily limit, with its wait only in the message; the longer hint wins.
        let daily = body(
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for gpt-image-1 in organization org-x on requests per day (RPD): \
             Limit 200, Used 200, Requested 1. Please try again in 7m12s.",
        );
        assert_eq!(
            classify(429, &wait, &daily, now),
            Verdict::RateLimited {
                wait: Some(Duration::from_secs(432)),
                daily: true
            }
        );
        // A 403 for one model spares the key; a plain 403 disables it.
        let unverified = body(
            "invalid_request_error",
            "",
            "Your organization must be verified to use the model `gpt-image-1`.",
        );
        assert!(matches!(
            classify(403, &none, &unverified, now),
            Verdict::ModelRejected { .. }
        ));
        let region = body(
            "request_forbidden",
            "unsupported_country_region_territory",
            "Country, region, or territory not supported",
        );
        assert!(matches!(
            classify(403, &none, &region, now),
            Verdict::KeyDisabled { .. }
        ));
        let cases: &[(u16, Vec<u8>, &str)] = &[
            (
                429,
                body(
                    "insufficient_quota",
                    "insufficient_quota",
                    "You exceeded your current quota",
                ),
                "KeyDisabled",
            ),
            (
                429,
                body(
                    "invalid_request_error",
                    "credit_balance_exhausted",
                    "No credits",
                ),
                "KeyDisabled",
            ),
            (
                429,
                body(
                    "invalid_request_error",
                    "monthly_spend_limit_exceeded",
                    "Limit",
                ),
                "KeyDisabled",
            ),
            (
                429,
                body(
                    "invalid_request_error",
                    "project_usage_limit_exceeded",
                    "Limit",
                ),
                "KeyDisabled",
            ),
            (
                400,
                body(
                    "invalid_request_error",
                    "billing_hard_limit_reached",
                    "Billing hard limit",
                ),
                "KeyDisabled",
            ),
            (
                401,
                body(
                    "invalid_request_error",
                    "invalid_api_key",
                    "Incorrect API key provided: sk-proj-****abcd.",
                ),
                "KeyDisabled",
            ),
            (
                403,
                body(
                    "invalid_request_error",
                    "unsupported_country_region_territory",
                    "Not supported",
                ),
                "KeyDisabled",
            ),
            (
                400,
                body(
                    "image_generation_user_error",
                    "content_policy_violation",
                    "Rejected by the safety system",
                ),
                "JobRejected",
            ),
            (
                400,
                body("invalid_request_error", "moderation_blocked", "Blocked"),
                "JobRejected",
            ),
            (
                400,
                body("invalid_request_error", "invalid_value", "Invalid size"),
                "JobRejected",
            ),
            (
                404,
                body(
                    "invalid_request_error",
                    "model_not_found",
                    "The model does not exist",
                ),
                "JobRejected",
            ),
            (413, b"too big".to_vec(), "JobRejected"),
            (
                500,
                body("server_error", "", "The server had an error"),
                "Transient",
            ),
            (502, b"<html>bad gateway</html>".to_vec(), "Transient"),
            (503, Vec::new(), "Transient"),
            (408, Vec::new(), "Transient"),
        ];
        for (status, b, want) in cases {
            let got = classify(*status, &none, b, now);
            let name = format!("{got:?}");
            assert!(
                name.starts_with(want),
                "{status} {}: {name}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn messages_keep_the_provider_words_but_no_key() {
        let b = body(
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided: sk-proj-****abcd. See docs.",
        );
        let Verdict::KeyDisabled { reason } = classify(401, &HeaderMap::new(), &b, Utc::now())
        else {
            panic!()
        };
        assert_eq!(
            reason,
            "invalid_api_key: Incorrect API key provided: sk-…redacted. See docs."
        );
        assert_eq!(
            redact_keys("key sk-abc_DEF-123 and sk-xyz"),
            "key sk-…redacted and sk-…redacted"
        );
        let long = "x".repeat(2000);
        let Verdict::Transient { message } =
            classify(500, &HeaderMap::new(), long.as_bytes(), Utc::now())
        else {
            panic!()
        };
        assert!(message.chars().count() <= MAX_MESSAGE + 1);
    }
}
