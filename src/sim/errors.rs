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

    /// 429 for a request over the key's rate; `current` counts the window including this one.
    pub fn rate_limited(by: LimitKind, limit: u32, current: u64, wait_secs: f64) -> Self {
        let what = match by {
            LimitKind::Requests => "requests",
            LimitKind::Images => "images",
        };
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "requests",
            message: format!(
                "Rate limit reached for {what} per min. Limit: {limit}/1min. Current: \
                 {current}/1min. Please try again in {wait_secs:.3}s."
            ),
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// 429 for a request over the key's daily cap.
    pub fn daily_limited(model: &str, organization: &str, limit: u32, wait: Duration) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "requests",
            message: format!(
                "Rate limit reached for {model} in organization {organization} on requests per day \
                 (RPD): Limit {limit}, Used {limit}, Requested 1. Please try again in {}.",
                super::headers::go_duration(wait)
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

        let limited = ApiError::rate_limited(LimitKind::Images, 5, 6, 1.25).body();
        assert_eq!(limited["error"]["code"], "rate_limit_exceeded");
        assert_eq!(limited["error"]["type"], "requests");
        let text = limited["error"]["message"].as_str().expect("message");
        assert!(text.contains("images per min. Limit: 5/1min. Current: 6/1min"));
        assert!(text.contains("try again in 1.250s"));

        let policy = ApiError::content_policy().body();
        assert_eq!(policy["error"]["code"], "content_policy_violation");
        assert_eq!(policy["error"]["type"], "image_generation_user_error");

        let broke = ApiError::server_error(StatusCode::INTERNAL_SERVER_ERROR).body();
        assert_eq!(broke["error"]["type"], "server_error");
        assert!(broke["error"]["code"].is_null());
    }

    #[test]
    fn masking() {
        assert_eq!(mask_secret("sk-sim-0123456789abcd"), "sk-...abcd");
        assert_eq!(mask_secret("sk-short"), "sk-...");
        assert_eq!(mask_secret("plainsecretvalue"), "...alue");
        assert_eq!(mask_secret(""), "...");
    }
}
