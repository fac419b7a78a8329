//! The strict check of a known model's params: every key must be one the
//! model accepts, with a value it accepts. [`super::params`] decides
//! *whether* a model gets this check; this file only runs it.

use serde_json::{Map, Value};

use super::param_error::{ParamError, invalid};
use crate::provider::catalog::{FLEXIBLE_RULE, ModelSpec, STANDARD_SIZES, Sizes};

/// Params accepted for known models: the Images API's plus genq's own
/// `fallback_models`.
pub const ACCEPTED_KEYS: &[&str] = &[
    "n",
    "size",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "input_fidelity",
    "safety_identifier",
    "user",
    "fallback_models",
];

/// One of `allowed`, as a string.
fn one_of(key: &'static str, v: &Value, allowed: &[&str], model: &str) -> Result<(), ParamError> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(invalid(
            key,
            v,
            model,
            format!("one of {}", allowed.join(", ")),
        )),
    }
}

/// Checks `prompt` length and `params` for a model in the catalogue.
pub(super) fn check_known(
    spec: &ModelSpec,
    prompt: &str,
    params: &Map<String, Value>,
) -> Result<(), ParamError> {
    let model = spec.name;
    let chars = prompt.chars().count();
    if chars > spec.max_prompt_chars {
        return Err(ParamError::PromptTooLong {
            model: model.to_owned(),
            chars,
            max: spec.max_prompt_chars,
        });
    }
    let get = |k: &str| params.get(k).filter(|v| !v.is_null());
    for key in params.keys() {
        let (legacy, why) = match key.as_str() {
            "response_format" => (
                "response_format",
                "GPT image models always return base64-encoded images (b64_json)",
            ),
            "style" => (
                "style",
                "it only applied to retired DALL·E models; describe the style in the prompt instead",
            ),
            k if ACCEPTED_KEYS.contains(&k) => continue,
            _ => {
                let accepted = ACCEPTED_KEYS.join(", ");
                return Err(ParamError::UnknownKey {
                    key: key.clone(),
                    model: model.to_owned(),
                    accepted,
                });
            }
        };
        return Err(ParamError::Unsupported {
            key: legacy,
            model: model.to_owned(),
            why,
        });
    }
    if let Some(v) = get("size")
        && !v.as_str().is_some_and(|s| spec.size_ok(s))
    {
        let mut expected = format!("one of {}", STANDARD_SIZES.join(", "));
        if spec.sizes == Sizes::Flexible {
            expected = format!("{expected}, or {FLEXIBLE_RULE}");
        }
        return Err(invalid("size", v, model, expected));
    }
    if let Some(v) = get("quality") {
        one_of("quality", v, spec.qualities, model)?;
    }
    if let Some(v) = get("moderation") {
        one_of("moderation", v, &["low", "auto"], model)?;
    }
    if let Some(v) = get("input_fidelity") {
        one_of("input_fidelity", v, &["low", "high"], model)?;
    }
    if let Some(v) = get("background") {
        one_of("background", v, &["transparent", "opaque", "auto"], model)?;
    }
    let format = get("output_format");
    if let Some(v) = format {
        one_of("output_format", v, &["png", "jpeg", "webp"], model)?;
    }
    let format = format.and_then(Value::as_str).unwrap_or("png");
    if let Some(v) = get("output_compression") {
        if v.as_u64().is_none_or(|c| c > 100) {
            return Err(invalid(
                "output_compression",
                v,
                model,
                "an integer from 0 to 100",
            ));
        }
        if format == "png" {
            return Err(ParamError::Conflict(
                "output_compression only applies to output_format \"jpeg\" or \"webp\" (png is lossless); \
                 set one of those or remove output_compression"
                    .to_owned(),
            ));
        }
    }
    if format == "jpeg" && get("background").and_then(Value::as_str) == Some("transparent") {
        return Err(ParamError::Conflict(
            "background \"transparent\" needs output_format \"png\" or \"webp\" (jpeg has no alpha channel)".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::validation::params::validate;
    use serde_json::json;

    #[test]
    fn refused() {
        #[rustfmt::skip]
        let cases = [
            ("gpt-image-2", json!({"size": "512x512"}), "size \"512x512\" is not supported by gpt-image-2; use one of 1024x1024, 1536x1024, 1024x1536, auto, or WIDTHxHEIGHT"),
            ("gpt-image-1.5", json!({"size": "1792x1024"}), "size \"1792x1024\" is not supported by gpt-image-1.5; use one of 1024x1024, 1536x1024, 1024x1536, auto"),
            ("gpt-image-2", json!({"quality": "hd"}), "quality \"hd\" is not supported by gpt-image-2; use one of low, medium, high, auto"),
            ("gpt-image-2", json!({"quality": "max"}), "quality \"max\" is not supported by gpt-image-2"),
            ("gpt-image-2", json!({"background": "white"}), "background \"white\" is not supported by gpt-image-2; use one of transparent, opaque, auto"),
            ("gpt-image-2", json!({"output_format": "gif"}), "output_format \"gif\" is not supported by gpt-image-2; use one of png, jpeg, webp"),
            ("gpt-image-2", json!({"moderation": "off"}), "moderation \"off\" is not supported by gpt-image-2; use one of low, auto"),
            ("gpt-image-2", json!({"output_format": "jpeg", "output_compression": 101}), "output_compression 101 is not supported by gpt-image-2; use an integer from 0 to 100"),
            ("gpt-image-2", json!({"output_compression": 50}), "output_compression only applies to output_format \"jpeg\" or \"webp\""),
            ("gpt-image-2", json!({"output_format": "jpeg", "background": "transparent"}), "background \"transparent\" needs output_format \"png\" or \"webp\""),
            ("gpt-image-2", json!({"response_format": "url"}), "response_format is not supported by gpt-image-2: GPT image models always return base64-encoded images (b64_json); remove it"),
            ("gpt-image-1.5", json!({"style": "vivid"}), "style is not supported by gpt-image-1.5: it only applied to retired DALL·E models; describe the style in the prompt instead; remove it"),
        ];
        for (model, params, want) in cases {
            let got = validate(model, "a red fox", &params)
                .expect_err("should be refused")
                .to_string();
            assert!(
                got.starts_with(want),
                "{model} {params}:\n got  {got}\n want {want}"
            );
        }
    }

    #[test]
    fn exact_size_message() {
        let got = validate("gpt-image-1.5", "a fox", &json!({"size": "512x512"})).unwrap_err();
        assert_eq!(
            got.to_string(),
            "size \"512x512\" is not supported by gpt-image-1.5; use one of 1024x1024, 1536x1024, 1024x1536, auto"
        );
    }
}
