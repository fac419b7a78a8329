//! The error answers of the simulated API, in OpenAI's exact shape
//! (`{"error":{"message","type","param","code"}}`), so clients exercise the same parsing and
//! classification they need against the real service.

use axum::http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

use super::limits::LimitKind;

/// One OpenAI-style error answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    /// Human-readable `error.message`.
    pub message: String,
    /// `error.param`.
    pub param: Option<&'static str>,
    /// `error.code`.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 401 for an unknown key, showing only its last four characters.
    pub fn invalid_api_key(secret: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            message: format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                mask_secret(secret)
            ),
            param: None,
            code: Some("invalid_api_key"),
        }
    }

    /// 401 when no bearer token came at all.
    pub fn missing_api_key() -> Self {
        Self {
            message: "You didn't provide an API key. You need to provide your API key in an \
                      Authorization header using Bearer auth (i.e. Authorization: Bearer \
                      YOUR_KEY). You can obtain an API key from \
                      https://platform.openai.com/account/api-keys."
                .to_string(),
            ..Self::invalid_api_key("")
        }
    }

    /// 429 for a key whose quota is exhausted (retrying does not help).
    pub fn insufficient_quota() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "insufficient_quota",
            message: "You exceeded your current quota, please check your plan and billing \
                      details. For more information on this error, read the docs: \
                      https://platform.openai.com/docs/guides/error-codes/api-errors."
                .to_string(),
            param: None,
            code: Some("insufficient_quota"),
        }
    }

    /// 429 for a request over a per-minute limit, in OpenAI's words: `used` is what the
    /// last 60 s admitted, `requested` 1 request or `n` images, and the wait is written as
    /// OpenAI writes it (`1.5s`, `20ms`, `6m0s`), rounded up to the millisecond.
    pub fn rate_limited(usage: &LimitUsage<'_>) -> Self {
        Self::limit_reached(usage, "min")
    }

    /// 429 for a request over a daily cap (RPD or IPD), worded like [`Self::rate_limited`].
    pub fn daily_limited(usage: &LimitUsage<'_>) -> Self {
        Self::limit_reached(usage, "day")
    }

    fn limit_reached(usage: &LimitUsage<'_>, period: &str) -> Self {
        let (what, letter) = match usage.by {
            LimitKind::Requests => ("requests", 'R'),
            LimitKind::Images => ("images", 'I'),
        };
        let short = format!("{letter}P{}", if period == "day" { 'D' } else { 'M' });
        let LimitUsage {
            model,
            organization,
            limit,
            used,
            requested,
            wait,
            ..
        } = usage;
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "requests",
            message: format!(
                "Rate limit reached for {model} in organization {organization} on {what} per \
                 {period} ({short}): Limit {limit}, Used {used}, Requested {requested}. Please \
                 try again in {}. Visit https://platform.openai.com/account/rate-limits to \
                 learn more.",
                super::headers::go_duration(*wait)
            ),
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// 403 for a model the key's organization may not use.
    pub fn model_forbidden(model: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "invalid_request_error",
            message: format!(
                "Your organization must be verified to use the model `{model}`. Please go to: \
                 https://platform.openai.com/settings/organization/general and click on Verify \
                 Organization."
            ),
            param: None,
            code: None,
        }
    }

    /// 400 for a prompt the safety system refuses.
    pub fn content_policy() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "image_generation_user_error",
            message: "Your request was rejected as a result of our safety system. Your request \
                      may contain content that is not allowed by our safety system."
                .to_string(),
            param: None,
            code: Some("content_policy_violation"),
        }
    }

    /// 400 for a malformed request.
    pub fn invalid_request(message: String, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message,
            param,
            code: Some("invalid_value"),
        }
    }

    /// A 5xx (500 or 503) as if the provider broke.
    pub fn server_error(status: StatusCode) -> Self {
        let message = if status == StatusCode::SERVICE_UNAVAILABLE {
            "The engine is currently overloaded, please try again later."
        } else {
            "The server had an error while processing your request. Sorry about that!"
        };
        Self {
            status,
            kind: "server_error",
            message: message.to_string(),
            param: None,
            code: None,
        }
    }

    /// A 500 whose message carries NUL and terminal escapes (`[sim:500nul]`).
    pub fn unprintable_server_error() -> Self {
        Self {
            message: "The server had an error\u{0} while processing\u{1b}[2J your request.\u{0}"
                .to_string(),
            ..Self::server_error(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// What a rate-limit message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitUsage<'a> {
    /// The limit that refused: requests or images.
    pub by: LimitKind,
    /// The model asked for.
    pub model: &'a str,
    /// The key's organization (`org-sim` when it names none).
    pub organization: &'a str,
    /// The limit.
    pub limit: u32,
    /// Already used (admitted) in its window.
    pub used: u64,
    /// What this request asked for.
    pub requested: u32,
    /// The true wait until it would pass.
    pub wait: Duration,
}

/// `sk-...WXYZ`: a recognisable tail, never enough to reuse. Short secrets are hidden whole.
pub fn mask_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let prefix = if secret.starts_with("sk-") { "sk-" } else { "" };
    if chars.len() < 12 {
        return format!("{prefix}...");
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}...{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_openai_shape() {
        let body = ApiError::invalid_api_key("sk-live-abcdefghWXYZ").body();
        let err = &body["error"];
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["code"], "invalid_api_key");
        assert!(err["param"].is_null());
        let message = err["message"].as_str().expect("message");
        assert!(message.starts_with("Incorrect API key provided: sk-...WXYZ."));
        assert!(!message.contains("abcdefgh"));

        let quota = ApiError::insufficient_quota();
        assert_eq!(quota.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(quota.body()["error"]["type"], "insufficient_quota");

        let forbidden = ApiError::model_forbidden("gpt-image-1.5");
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
        assert_eq!(
            forbidden.body(),
            json!({"error": {
                "message": "Your organization must be verified to use the model \
                            `gpt-image-1.5`. Please go to: \
                            https://platform.openai.com/settings/organization/general and \
                            click on Verify Organization.",
                "type": "invalid_request_error",
                "param": null,
                "code": null,
            }})
        );

        let policy = ApiError::content_policy().body();
        assert_eq!(policy["error"]["code"], "content_policy_violation");
        assert_eq!(policy["error"]["type"], "image_generation_user_error");

        let broke = ApiError::server_error(StatusCode::INTERNAL_SERVER_ERROR).body();
        assert_eq!(broke["error"]["type"], "server_error");
        assert!(broke["error"]["code"].is_null());
    }

    #[test]
    fn rate_limit_messages() {
        let usage = |by, limit, used, requested, wait_ms| LimitUsage {
            by,
            model: "gpt-image-2",
            organization: "org-sim",
            limit,
            used,
            requested,
            wait: Duration::from_millis(wait_ms),
        };
        let table = [
            (
                ApiError::daily_limited(&usage(LimitKind::Requests, 20, 20, 1, 432_000)),
                "Rate limit reached for gpt-image-2 in organization org-sim on requests per day \
                 (RPD): Limit 20, Used 20, Requested 1. Please try again in 7m12s.",
            ),
            (
                ApiError::daily_limited(&usage(LimitKind::Images, 50, 48, 4, 1_500)),
                "Rate limit reached for gpt-image-2 in organization org-sim on images per day \
                 (IPD): Limit 50, Used 48, Requested 4. Please try again in 1.5s.",
            ),
            (
                ApiError::rate_limited(&usage(LimitKind::Requests, 60, 60, 1, 20)),
                "Rate limit reached for gpt-image-2 in organization org-sim on requests per min \
                 (RPM): Limit 60, Used 60, Requested 1. Please try again in 20ms.",
            ),
            (
                ApiError::rate_limited(&usage(LimitKind::Images, 5, 4, 2, 1_250)),
                "Rate limit reached for gpt-image-2 in organization org-sim on images per min \
                 (IPM): Limit 5, Used 4, Requested 2. Please try again in 1.25s.",
            ),
        ];
        for (error, start) in table {
            let body = error.body();
            assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(body["error"]["type"], "requests");
            assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            assert!(body["error"]["param"].is_null());
            let text = body["error"]["message"].as_str().expect("message");
            assert!(text.starts_with(start), "{text}");
            assert!(
                text.ends_with("/account/rate-limits to learn more."),
                "{text}"
            );
        }
    }

    #[test]
    fn masking() {
        assert_eq!(mask_secret("sk-sim-0123456789abcd"), "sk-...abcd");
        assert_eq!(mask_secret("sk-short"), "sk-...");
        assert_eq!(mask_secret("plainsecretvalue"), "...alue");
        assert_eq!(mask_secret(""), "...");
    }
}
