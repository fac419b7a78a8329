//! Checking a job's model, prompt and params against the catalogue.
//!
//! Runs at submit time so producers learn at once, and in words, what is
//! wrong and how to fix it. Known models get a strict check (unknown keys are
//! refused, so a typo is not silently ignored); unknown models pass through
//! with only `n` and the prompt checked; retired models are refused.

use serde_json::{Map, Value};

use super::model_params::check_known;
use super::param_error::{ParamError, invalid};
use crate::provider::catalog::{Lookup, lookup};

/// Checks a job's model, prompt and params (and its fallback models').
/// See the module doc for what is checked.
pub fn validate(model: &str, prompt: &str, params: &Value) -> Result<(), ParamError> {
    check(model, prompt, params)?;
    if let Some(list) = object(params)?
        .get("fallback_models")
        .filter(|v| !v.is_null())
    {
        let names = list.as_array().ok_or_else(|| fallback_error(list, model))?;
        for name in names {
            let name = name
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| fallback_error(name, model))?;
            // The same params go to the fallback, so they must suit it too.
            check(name, prompt, params)?;
        }
    }
    Ok(())
}

fn fallback_error(v: &Value, model: &str) -> ParamError {
    invalid(
        "fallback_models",
        v,
        model,
        "an array of model names, e.g. [\"gpt-image-1.5\"]",
    )
}

fn object(params: &Value) -> Result<Map<String, Value>, ParamError> {
    match params {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m.clone()),
        Value::Array(_) => Err(ParamError::NotAnObject { got: "an array" }),
        Value::String(_) => Err(ParamError::NotAnObject { got: "a string" }),
        Value::Number(_) => Err(ParamError::NotAnObject { got: "a number" }),
        Value::Bool(_) => Err(ParamError::NotAnObject { got: "a boolean" }),
    }
}

fn check(model: &str, prompt: &str, params: &Value) -> Result<(), ParamError> {
    let spec = match lookup(model) {
        Lookup::Retired(advice) => {
            return Err(ParamError::RetiredModel {
                model: model.to_owned(),
                advice,
            });
        }
        Lookup::Known(spec) => Some(spec),
        Lookup::Unknown => None,
    };
    if prompt.trim().is_empty() {
        return Err(ParamError::EmptyPrompt);
    }
    let params = object(params)?;
    if let Some(n) = params.get("n").filter(|v| !v.is_null())
        && !n.as_u64().is_some_and(|n| (1..=10).contains(&n))
    {
        return Err(invalid("n", n, model, "an integer from 1 to 10"));
    }
    match spec {
        Some(spec) => check_known(spec, prompt, &params),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(model: &str, prompt: &str, params: Value) -> String {
        validate(model, prompt, &params)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn accepted() {
        #[rustfmt::skip]
        let cases = [
            ("gpt-image-2", json!(null)),
            ("gpt-image-2", json!({})),
            ("gpt-image-2", json!({"n": 10, "size": "1536x864", "quality": "high", "background": "transparent",
                "output_format": "webp", "output_compression": 0, "moderation": "low"})),
            ("gpt-image-2", json!({"size": null, "quality": null})),
            ("gpt-image-2", json!({"output_format": "jpeg", "output_compression": 100, "background": "opaque"})),
            ("gpt-image-2.5-flare", json!({"quality": "max"})),
            ("gpt-image-2.5-sunburst-2026-09-08", json!({"quality": "xhigh"})),
            ("gpt-image-1.5", json!({"size": "auto", "quality": "auto"})),
            ("gpt-image-1-mini", json!({"size": "1024x1536", "fallback_models": ["gpt-image-1.5", "someone-elses-model"]})),
            ("gpt-image-2", json!({"fallback_models": []})),
            ("my-model", json!({"n": 3, "anything": {"goes": true}, "style": "vivid"})),
        ];
        for (model, params) in cases {
            assert_eq!(
                validate(model, "a red fox", &params),
                Ok(()),
                "{model} {params}"
            );
        }
    }

    #[test]
    fn refused() {
        #[rustfmt::skip]
        let cases = [
            ("gpt-image-2", json!({"n": 11}), "n 11 is not supported by gpt-image-2; use an integer from 1 to 10"),
            ("my-model", json!({"n": 0}), "n 0 is not supported by my-model; use an integer from 1 to 10"),
            ("gpt-image-2", json!({"n": "2"}), "n \"2\" is not supported"),
            ("gpt-image-2", json!({"sise": "1024x1024"}), "unknown parameter \"sise\" for gpt-image-2; accepted: n, size, quality, background, output_format, output_compression, moderation, input_fidelity, safety_identifier, user, fallback_models"),
            ("dall-e-3", json!({}), "model \"dall-e-3\" is retired: DALL·E models are retired; use gpt-image-2 (the default) instead"),
            ("gpt-image-1", json!({}), "use gpt-image-2.5-sunburst or gpt-image-2.5-flare instead"),
            ("gpt-image-2", json!({"fallback_models": ["dall-e-2"]}), "model \"dall-e-2\" is retired"),
            ("gpt-image-2", json!({"fallback_models": "gpt-image-1.5"}), "fallback_models \"gpt-image-1.5\" is not supported by gpt-image-2; use an array of model names"),
            ("gpt-image-2", json!({"fallback_models": [""]}), "fallback_models \"\" is not supported"),
            ("gpt-image-2.5-flare", json!({"quality": "max", "fallback_models": ["gpt-image-1.5"]}), "quality \"max\" is not supported by gpt-image-1.5"),
            ("gpt-image-2", json!([1, 2]), "params must be a JSON object such as {\"size\": \"1024x1024\", \"n\": 2}, not an array"),
            ("my-model", json!("n=2"), "not a string"),
        ];
        for (model, params, want) in cases {
            let got = err(model, "a red fox", params.clone());
            assert!(
                got.starts_with(want) || got.contains(want),
                "{model} {params}:\n got  {got}\n want {want}"
            );
        }
    }

    #[test]
    fn prompts() {
        assert_eq!(
            err("gpt-image-2", "  \n", json!({})),
            "prompt is empty; describe the image to generate"
        );
        assert_eq!(
            err("my-model", "", json!({})),
            "prompt is empty; describe the image to generate"
        );
        let long = "é".repeat(32_001);
        assert_eq!(
            err("gpt-image-2", &long, json!({})),
            "prompt is 32001 characters but gpt-image-2 accepts at most 32000; shorten it"
        );
        assert_eq!(
            validate("gpt-image-2", &"é".repeat(32_000), &json!({})),
            Ok(())
        );
        assert_eq!(validate("my-model", &long, &json!({})), Ok(()));
    }
}
