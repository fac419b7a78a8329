//! The image models genq knows and the parameters each accepts: one table,
//! checked before a job is enqueued (API, CLI) and again when it is claimed
//! (plain SQL inserts skip the first check), so a bad job fails with a
//! message that says what to fix instead of a provider 400.
//!
//! Unknown model names pass through (a newer model than this table): only
//! `n` and the prompt are checked for them.

use serde_json::Value;

/// A model's accepted parameters.
#[derive(Debug)]
pub struct ModelSpec {
    pub name: &'static str,
    pub sizes: &'static [&'static str],
    pub qualities: &'static [&'static str],
    pub max_prompt_chars: usize,
}

const GPT_IMAGE_SIZES: &[&str] = &["auto", "1024x1024", "1536x1024", "1024x1536"];
const GPT_IMAGE_QUALITIES: &[&str] = &["auto", "low", "medium", "high"];

/// The known models (async-openai 0.43's `ImageModel`, plus `gpt-image-1`).
pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "gpt-image-2",
        sizes: GPT_IMAGE_SIZES,
        qualities: GPT_IMAGE_QUALITIES,
        max_prompt_chars: 32_000,
    },
    ModelSpec {
        name: "gpt-image-1.5",
        sizes: GPT_IMAGE_SIZES,
        qualities: GPT_IMAGE_QUALITIES,
        max_prompt_chars: 32_000,
    },
    ModelSpec {
        name: "gpt-image-1",
        sizes: GPT_IMAGE_SIZES,
        qualities: GPT_IMAGE_QUALITIES,
        max_prompt_chars: 32_000,
    },
    ModelSpec {
        name: "gpt-image-1-mini",
        sizes: GPT_IMAGE_SIZES,
        qualities: GPT_IMAGE_QUALITIES,
        max_prompt_chars: 32_000,
    },
];

const RETIRED: &[&str] = &["dall-e-2", "dall-e-3"];

/// Parameters every known model takes, besides size and quality.
const COMMON_PARAMS: &[&str] = &[
    "size",
    "quality",
    "n",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "user",
    "safety_identifier",
    // genq's own: models to try when no key can serve this one soon.
    "fallback_models",
];

/// Bad job parameters; the text says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// The spec of a known model.
pub fn spec(model: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name == model)
}

/// Images a job asks for (`n`, default 1): the cost against image limits.
pub fn image_count(params: &Value) -> u32 {
    params
        .get("n")
        .and_then(Value::as_u64)
        .map_or(1, |n| n.clamp(1, 10) as u32)
}

/// Checks a job's model, prompt and params.
pub fn validate(model: &str, prompt: &str, params: &Value) -> Result<(), ParamError> {
    let bad = |msg: String| Err(ParamError(msg));
    if RETIRED.contains(&model) {
        return bad(format!(
            "{model} is retired; use gpt-image-2 (the default), gpt-image-1.5 or gpt-image-1-mini"
        ));
    }
    if prompt.trim().is_empty() {
        return bad("prompt is empty; give a description of the image to generate".into());
    }
    let Some(params) = params.as_object() else {
        return bad(format!(
            "params must be a JSON object such as {{\"size\": \"1024x1024\"}}, not {params}"
        ));
    };
    if let Some(n) = params.get("n")
        && !n.as_u64().is_some_and(|n| (1..=10).contains(&n))
    {
        return bad(format!(
            "n {n} is out of range; use a whole number from 1 to 10"
        ));
    }
    if let Some(fallbacks) = params.get("fallback_models") {
        let Some(list) = fallbacks
            .as_array()
            .filter(|l| l.iter().all(Value::is_string))
        else {
            return bad(format!(
                "fallback_models must be a list of model names, not {fallbacks}"
            ));
        };
        for name in list.iter().filter_map(Value::as_str) {
            if name == model || RETIRED.contains(&name) || name.trim().is_empty() {
                return bad(format!(
                    "fallback model {name:?} is not usable; name other current models"
                ));
            }
        }
    }
    let Some(spec) = spec(model) else {
        return Ok(());
    };
    let chars = prompt.chars().count();
    if chars > spec.max_prompt_chars {
        return bad(format!(
            "prompt is {chars} characters; {model} takes at most {}",
            spec.max_prompt_chars
        ));
    }
    for key in params.keys() {
        match key.as_str() {
            "response_format" => {
                return bad(format!(
                    "response_format is not supported by {model}: GPT image models always return base64 images; remove it"
                ));
            }
            "style" => {
                return bad(format!(
                    "style is not supported by {model}; describe the style in the prompt instead"
                ));
            }
            k if !COMMON_PARAMS.contains(&k) => {
                return bad(format!(
                    "unknown parameter {k:?} for {model}; accepted: {}",
                    COMMON_PARAMS.join(", ")
                ));
            }
            _ => {}
        }
    }
    one_of(params, "size", spec.sizes, model)?;
    one_of(params, "quality", spec.qualities, model)?;
    one_of(
        params,
        "background",
        &["auto", "transparent", "opaque"],
        model,
    )?;
    one_of(params, "output_format", &["png", "jpeg", "webp"], model)?;
    one_of(params, "moderation", &["auto", "low"], model)?;
    if let Some(c) = params.get("output_compression") {
        if c.as_u64().is_none_or(|c| c > 100) {
            return bad(format!(
                "output_compression {c} is out of range; use 0 to 100"
            ));
        }
        let format = params
            .get("output_format")
            .and_then(Value::as_str)
            .unwrap_or("png");
        if format == "png" {
            return bad(
                "output_compression applies to jpeg and webp only; set output_format or remove it"
                    .into(),
            );
        }
    }
    if params.get("background").and_then(Value::as_str) == Some("transparent")
        && params.get("output_format").and_then(Value::as_str) == Some("jpeg")
    {
        return bad("a transparent background needs output_format png or webp, not jpeg".into());
    }
    Ok(())
}

fn one_of(
    params: &serde_json::Map<String, Value>,
    key: &str,
    allowed: &[&str],
    model: &str,
) -> Result<(), ParamError> {
    match params.get(key) {
        None => Ok(()),
        Some(Value::String(v)) if allowed.contains(&v.as_str()) => Ok(()),
        Some(v) => Err(ParamError(format!(
            "{key} {v} is not supported by {model}; use one of {}",
            allowed.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn good_jobs_pass() {
        let ok = [
            ("gpt-image-2", json!({})),
            (
                "gpt-image-2",
                json!({"size": "1536x1024", "quality": "high", "n": 4, "background": "transparent", "output_format": "webp", "output_compression": 80, "moderation": "low"}),
            ),
            (
                "gpt-image-1-mini",
                json!({"size": "auto", "fallback_models": ["gpt-image-1.5"]}),
            ),
            ("some-future-model", json!({"anything": true, "n": 2})),
        ];
        for (model, params) in ok {
            assert_eq!(
                validate(model, "a fox", &params),
                Ok(()),
                "{model} {params}"
            );
        }
    }

    #[test]
    fn bad_jobs_say_what_to_fix() {
        let cases = [
            (
                "gpt-image-2",
                "fox",
                json!({"size": "512x512"}),
                "size \"512x512\" is not supported by gpt-image-2; use one of auto, 1024x1024, 1536x1024, 1024x1536",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"n": 11}),
                "n 11 is out of range; use a whole number from 1 to 10",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"n": "2"}),
                "n \"2\" is out of range",
            ),
            ("new-model", "fox", json!({"n": 0}), "n 0 is out of range"),
            ("gpt-image-2", " ", json!({}), "prompt is empty"),
            (
                "dall-e-3",
                "fox",
                json!({}),
                "dall-e-3 is retired; use gpt-image-2",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"style": "vivid"}),
                "style is not supported by gpt-image-2",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"response_format": "url"}),
                "response_format is not supported",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"colour": "red"}),
                "unknown parameter \"colour\" for gpt-image-2; accepted: size, quality",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"output_compression": 50}),
                "output_compression applies to jpeg and webp only",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"output_format": "jpeg", "output_compression": 101}),
                "output_compression 101 is out of range",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"background": "transparent", "output_format": "jpeg"}),
                "transparent background needs",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"quality": "hd"}),
                "quality \"hd\" is not supported by gpt-image-2",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"fallback_models": "gpt-image-1"}),
                "fallback_models must be a list",
            ),
            (
                "gpt-image-2",
                "fox",
                json!({"fallback_models": ["dall-e-2"]}),
                "fallback model \"dall-e-2\" is not usable",
            ),
        ];
        for (model, prompt, params, want) in cases {
            let err = validate(model, prompt, &params).unwrap_err();
            assert!(
                err.0.contains(want),
                "{model} {params}: got {err}, want {want}"
            );
        }
        let long = "x".repeat(32_001);
        assert!(
            validate("gpt-image-2", &long, &json!({}))
                .unwrap_err()
                .0
                .contains("takes at most 32000")
        );
    }

    #[test]
    fn image_count_defaults_to_one() {
        assert_eq!(image_count(&json!({})), 1);
        assert_eq!(image_count(&json!({"n": 4})), 4);
    }
}
