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
    RateLimited {
        /// The longest wait the provider named, in a header or in the
        /// message ([`headers::wait_hint`]).
        wait: Option<Duration>,
        /// The message says the DAILY limit is spent ("per day", RPD, IPD),
        /// not a per-minute one.
        daily: bool,
    },
    /// Quota, billing, bad or forbidden key: the key is disabled; the job goes elsewhere.
    KeyDisabled {
        reason: String,
    },
    /// 403 for one model (not allowed to the key's project, or the
    /// organization must be verified to use it): the key stays usable for
    /// other models.
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
    let message = {
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
        429 => Verdict::RateLimited {
            // The raw text: truncation must not cut the hint off.
            wait: headers::wait_hint(headers, &raw, now),
            daily: is_daily(&raw),
        },
        403 if is_model_refusal(&code, &raw) => Verdict::ModelRejected { reason: message },
        401 | 403 => Verdict::KeyDisabled { reason: message },
        408 | 409 | 425 | 500..=599 => Verdict::Transient { message },
        _ => Verdict::JobRejected { message },
    }
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

/// A 429 message about a daily limit: OpenAI's "... on requests per day
/// (RPD): Limit 200, Used 200 ..." or "images per day (IPD)".
fn is_daily(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("per day")
        || lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| matches!(word, "rpd" | "ipd"))
}

/// A 403 that refuses one model, not the key: "Your organization must be
/// verified to use the model `gpt-image-1`", "Project `proj_x` does not
/// have access to model `gpt-image-1`", a model "not allowed". A region
/// refusal, or a 403 naming no model (missing scopes, bad project), is
/// about the key.
fn is_model_refusal(code: &str, message: &str) -> bool {
    if code == "unsupported_country_region_territory" {
        return false;
    }
    let lower = message.to_ascii_lowercase();
    lower.contains("model")
        && ["access", "verif", "not allowed"]
            .iter()
            .any(|word| lower.contains(word))
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
    fn rate_limits_take_the_longest_wait_and_tell_daily_limits() {
        let now: DateTime<Utc> = "2026-11-23T10:00:00Z".parse().unwrap();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let rpd = "Rate limit reached for gpt-image-1 in organization org-x on requests per day (RPD): Limit 200, Used 200, Requested 1. Please try again in 7m12s. Visit https://platform.openai.com/account/rate-limits to learn more.";
        let ipd = "Rate limit reached for gpt-image-1 in organization org-x on images per day (IPD): Limit 50, Used 50, Requested 2. Please try again in 1h2m3s.";
        let rpm = "Rate limit reached for gpt-image-1 in organization org-x on requests per min (RPM): Limit 5, Used 5, Requested 1. Please try again in 12s. Visit https://platform.openai.com/account/rate-limits to learn more.";
        let ipm = "Rate limit reached for images per min. Limit: 5/1min. Current: 6/1min. Please try again in 1.5s.";
        let tpm = "Rate limit reached for gpt-image-1 on tokens per min (TPM): Limit 40000, Used 39900, Requested 500. Please try again in 20ms.";
        // A hint far past the 500 characters kept of a message still counts.
        let long = format!("{} Please try again in 9s.", "x".repeat(2 * MAX_MESSAGE));
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<Duration>, bool);
        let cases: &[Case] = &[
            (&[], rpd, Some(ms(432_000)), true),
            (&[("retry-after", "1")], rpd, Some(ms(432_000)), true),
            (&[("retry-after", "3600")], rpd, Some(s(3600)), true),
            (&[], ipd, Some(s(3723)), true),
            (
                &[],
                "You reached your limit of 100 requests per day.",
                None,
                true,
            ),
            (&[], "Daily cap: RPD exhausted", None, true),
            (&[("retry-after-ms", "250")], rpm, Some(s(12)), false),
            (&[("retry-after", "20")], rpm, Some(s(20)), false),
            (
                &[("x-ratelimit-reset-requests", "6m0s")],
                rpm,
                Some(s(360)),
                false,
            ),
            (&[], ipm, Some(ms(1500)), false),
            (&[], tpm, Some(ms(20)), false),
            (&[("retry-after", "2")], tpm, Some(s(2)), false),
            (
                &[
                    ("retry-after", "Mon, 23 Nov 2026 10:00:40 GMT"),
                    ("date", "Mon, 23 Nov 2026 10:00:10 GMT"),
                ],
                rpm,
                Some(s(30)),
                false,
            ),
            (&[], &long, Some(s(9)), false),
            // "rapid" and "ipdate" are no RPD/IPD.
            (&[], "Too rapid; slow down (ipdate).", None, false),
            (&[], "Rate limit reached.", None, false),
        ];
        for (pairs, message, wait, daily) in cases {
            let headers: HeaderMap = pairs
                .iter()
                .map(|(k, v)| {
                    (
                        reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    )
                })
                .collect();
            let b = body("requests", "rate_limit_exceeded", message);
            assert_eq!(
                classify(429, &headers, &b, now),
                Verdict::RateLimited {
                    wait: *wait,
                    daily: *daily
                },
                "{pairs:?} {message}"
            );
        }
        // Without a JSON body the text itself is read.
        assert_eq!(
            classify(429, &HeaderMap::new(), rpd.as_bytes(), now),
            Verdict::RateLimited {
                wait: Some(ms(432_000)),
                daily: true
            }
        );
        // Quota codes on a 429 still disable the key, whatever the message.
        let quota = body("insufficient_quota", "insufficient_quota", rpd);
        assert!(matches!(
            classify(429, &HeaderMap::new(), &quota, now),
            Verdict::KeyDisabled { .. }
        ));
    }

    #[test]
    fn a_403_for_one_model_spares_the_key() {
        let now = Utc::now();
        let none = HeaderMap::new();
        let cases: &[(u16, &str, &str, &str)] = &[
            (
                403,
                "",
                "Your organization must be verified to use the model `gpt-image-1`. Please go to: https://platform.openai.com/settings/organization/general and click on Verify Organization. If you just verified, it can take up to 15 minutes for access to propagate.",
                "ModelRejected",
            ),
            (
                403,
                "model_not_found",
                "Project `proj_abc` does not have access to model `gpt-image-1`",
                "ModelRejected",
            ),
            (
                403,
                "",
                "The model `dall-e-3` is not allowed for this project.",
                "ModelRejected",
            ),
            (
                403,
                "",
                "You do not have access to the MODEL gpt-image-1.",
                "ModelRejected",
            ),
            (
                403,
                "unsupported_country_region_territory",
                "Country, region, or territory not supported",
                "KeyDisabled",
            ),
            (
                403,
                "unsupported_country_region_territory",
                "Access to the model is not supported in your region",
                "KeyDisabled",
            ),
            (
                403,
                "",
                "You have insufficient permissions for this operation. Missing scopes: api.model.images.request. Check that you have the correct role in your organization (Reader, Writer, Owner) and project (Member, Owner), and if you're using a restricted API key that it has the necessary scopes.",
                "KeyDisabled",
            ),
            (403, "", "Access denied.", "KeyDisabled"),
            (403, "", "The model is busy.", "KeyDisabled"),
            // Only a 403 spares the key; 401 and quota codes do not.
            (
                401,
                "",
                "You do not have access to the model `gpt-image-1`.",
                "KeyDisabled",
            ),
            (
                404,
                "model_not_found",
                "The model `gpt-image-9` does not exist or you do not have access to it.",
                "JobRejected",
            ),
        ];
        for (status, code, message, want) in cases {
            let b = body("invalid_request_error", code, message);
            let got = classify(*status, &none, &b, now);
            let name = format!("{got:?}");
            assert!(name.starts_with(want), "{status} {message}: {name}");
        }
        // The reason is the provider's words, labelled, with no key.
        let b = body(
            "invalid_request_error",
            "",
            "Key sk-proj-abc123 must be verified to use the model `gpt-image-1`.",
        );
        assert_eq!(
            classify(403, &none, &b, now),
            Verdict::ModelRejected {
                reason: "invalid_request_error: Key sk-…redacted must be verified to use the model `gpt-image-1`.".into()
            }
        );
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
