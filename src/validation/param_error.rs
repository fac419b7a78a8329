//! Why a job's params are refused: one error type shared by the
//! catalogue-level check ([`super::params`]) and the strict per-model check
//! (`model_params`), so neither needs the other's internals.

use serde_json::Value;

/// Why a job's params are refused. The message says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The prompt is empty or blank.
    #[error("prompt is empty; describe the image to generate")]
    EmptyPrompt,
    /// The prompt is longer than the model accepts.
    #[error("prompt is {chars} characters but {model} accepts at most {max}; shorten it")]
    PromptTooLong {
        /// The model.
        model: String,
        /// The prompt's length in characters.
        chars: usize,
        /// The model's limit.
        max: usize,
    },
    /// The model is no longer served.
    #[error("model \"{model}\" is retired: {advice}")]
    RetiredModel {
        /// The model asked for.
        model: String,
        /// What to use instead.
        advice: &'static str,
    },
    /// `params` is not a JSON object.
    #[error(
        "params must be a JSON object such as {{\"size\": \"1024x1024\", \"n\": 2}}, not {got}"
    )]
    NotAnObject {
        /// What it is instead ("an array").
        got: &'static str,
    },
    /// A key the model does not accept.
    #[error("unknown parameter \"{key}\" for {model}; accepted: {accepted}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The model.
        model: String,
        /// The accepted keys, comma-separated.
        accepted: String,
    },
    /// A legacy key GPT image models refuse.
    #[error("{key} is not supported by {model}: {why}; remove it")]
    Unsupported {
        /// The key.
        key: &'static str,
        /// The model.
        model: String,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// A value outside what the model accepts.
    #[error("{key} {value} is not supported by {model}; use {expected}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value, as JSON (strings quoted).
        value: String,
        /// The model.
        model: String,
        /// What is accepted.
        expected: String,
    },
    /// Two params that do not go together.
    #[error("{0}")]
    Conflict(String),
}

/// A value outside what `model` accepts for `key`.
pub(super) fn invalid(
    key: &'static str,
    value: &Value,
    model: &str,
    expected: impl Into<String>,
) -> ParamError {
    ParamError::Invalid {
        key,
        value: value.to_string(),
        model: model.to_owned(),
        expected: expected.into(),
    }
}
