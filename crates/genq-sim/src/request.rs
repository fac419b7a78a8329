//! The body of `POST /images/generations`: parsed leniently (unknown fields ignored, like
//! OpenAI), then validated into a [`GenRequest`] whose `auto` values are resolved the way
//! the answer reports them. Also reads the test-only fault directives a prompt may carry:
//! `[sim:500]`, `[sim:503]`, `[sim:500x2]` (the first 2 requests with that prompt fail) and `[sim:sleep=MS]`.

use std::time::Duration;

use serde::Deserialize;

use super::errors::ApiError;

/// Models the simulator accepts besides any name starting with `sim-`.
pub const MODELS: [&str; 4] = [
    "gpt-image-2",
    "gpt-image-1.5",
    "gpt-image-1",
    "gpt-image-1-mini",
];

/// Longest `[sim:sleep=MS]` honoured, so a typo cannot park a connection forever.
const MAX_SLEEP_MS: u64 = 600_000;

/// The JSON body as sent; every field optional so validation can say what is wrong.
#[derive(Debug, Default, Deserialize)]
pub struct RawRequest {
    /// Model name.
    pub model: Option<String>,
    /// Prompt text.
    pub prompt: Option<String>,
    /// Number of images (1..=10).
    pub n: Option<i64>,
    size: Option<String>,
    quality: Option<String>,
    background: Option<String>,
    output_format: Option<String>,
    output_compression: Option<i64>,
    moderation: Option<String>,
    response_format: Option<String>,
    style: Option<String>,
    stream: Option<bool>,
}

impl RawRequest {
    /// `n` as the log records it: the requested count, 1 if absent, 0 if nonsensical.
    pub fn logged_n(&self) -> u32 {
        self.n.map_or(1, |n| u32::try_from(n).unwrap_or(0))
    }
}

/// A valid image request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    /// Model name.
    pub model: String,
    /// Prompt text.
    pub prompt: String,
    /// Number of images.
    pub n: u32,
    /// `WIDTHxHEIGHT`, `auto` resolved to `1024x1024`.
    pub size: String,
    /// `low`/`medium`/`high`, `auto` resolved to `medium`.
    pub quality: String,
    /// `transparent` or `opaque` (`auto` resolves to `opaque`).
    pub background: String,
    /// Fault directives found in the prompt.
    pub faults: Faults,
}

/// Test-only fault directives embedded in a prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// `[sim:500]` or `[sim:503]`: answer with that status.
    pub status: Option<u16>,
    /// `[sim:sleep=MS]`: wait this long before answering.
    pub sleep: Duration,
    /// `[sim:500x2]`: the first 2 requests with this exact prompt get a 500, later ones pass.
    pub fail_first: Option<(u16, u32)>,
    /// `[sim:500nul]`: a 500 whose message holds `\u0000` and control
    /// characters, as a misbehaving proxy or provider might send.
    pub unprintable: bool,
}

/// Parses the body; a body that is not a JSON object is reported as OpenAI would.
pub fn parse(body: &[u8]) -> Result<RawRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })
}

fn one_of(
    value: Option<&str>,
    allowed: &[&str],
    param: &'static str,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(ApiError::invalid_request(
            format!(
                "Invalid value: '{v}'. Supported values are: {}.",
                allowed.join(", ")
            ),
            Some(param),
        )),
        other => Ok(other.map(str::to_string)),
    }
}

/// Checks `raw` and resolves defaults.
pub fn validate(raw: &RawRequest) -> Result<GenRequest, ApiError> {
    let invalid = |msg: String, param| Err(ApiError::invalid_request(msg, Some(param)));
    let model = raw.model.clone().unwrap_or_default();
    if model.is_empty() {
        return invalid("Missing required parameter: 'model'.".into(), "model");
    }
    if !MODELS.contains(&model.as_str()) && !model.starts_with("sim-") {
        return invalid(format!("The model '{model}' does not exist."), "model");
    }
    let prompt = raw.prompt.clone().unwrap_or_default();
    if prompt.trim().is_empty() {
        return invalid("Missing required parameter: 'prompt'.".into(), "prompt");
    }
    let n = match raw.n.unwrap_or(1) {
        n @ 1..=10 => u32::try_from(n).unwrap_or(1),
        n => return invalid(format!("Invalid 'n': {n}. Must be between 1 and 10."), "n"),
    };
    let size = match raw.size.as_deref() {
        None | Some("auto") => "1024x1024".to_string(),
        Some(s) if parse_size(s).is_some() => s.to_string(),
        Some(s) => {
            return invalid(
                format!("Invalid size '{s}': use WIDTHxHEIGHT or auto."),
                "size",
            );
        }
    };
    let quality = one_of(
        raw.quality.as_deref(),
        &["low", "medium", "high", "auto"],
        "quality",
    )?
    .filter(|q| q != "auto")
    .unwrap_or_else(|| "medium".to_string());
    let background = one_of(
        raw.background.as_deref(),
        &["transparent", "opaque", "auto"],
        "background",
    )?
    .filter(|b| b == "transparent")
    .unwrap_or_else(|| "opaque".to_string());
    one_of(
        raw.output_format.as_deref(),
        &["png", "jpeg", "webp"],
        "output_format",
    )?;
    one_of(raw.moderation.as_deref(), &["low", "auto"], "moderation")?;
    one_of(
        raw.response_format.as_deref(),
        &["b64_json"],
        "response_format",
    )?;
    one_of(raw.style.as_deref(), &["vivid", "natural"], "style")?;
    if raw
        .output_compression
        .is_some_and(|c| !(0..=100).contains(&c))
    {
        return invalid(
            "output_compression must be between 0 and 100.".into(),
            "output_compression",
        );
    }
    if raw.stream == Some(true) {
        return invalid(
            "Streaming is not supported by the simulator.".into(),
            "stream",
        );
    }
    let faults = faults(&prompt);
    Ok(GenRequest {
        model,
        prompt,
        n,
        size,
        quality,
        background,
        faults,
    })
}

/// `WIDTHxHEIGHT` with both sides in 1..=8192.
pub fn parse_size(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    let ok = |v: u32| (1..=8192).contains(&v);
    (ok(w) && ok(h)).then_some((w, h))
}

/// Reads `[sim:500]`, `[sim:503]`, `[sim:500nul]`, `[sim:500xN]` and
/// `[sim:sleep=MS]` out of a prompt.
pub fn faults(prompt: &str) -> Faults {
    let mut found = Faults::default();
    for piece in prompt.split("[sim:").skip(1) {
        let Some((directive, _)) = piece.split_once(']') else {
            continue;
        };
        match directive {
            "500" => found.status = Some(500),
            "503" => found.status = Some(503),
            "500nul" => {
                found.status = Some(500);
                found.unprintable = true;
            }
            d if d.contains('x') => {
                let parsed = d.split_once('x').and_then(|(status, times)| {
                    let status: u16 = status.parse().ok().filter(|s| (500..600).contains(s))?;
                    Some((status, times.parse::<u32>().ok()?))
                });
                if parsed.is_some() {
                    found.fail_first = parsed;
                }
            }
            d => {
                if let Some(ms) = d
                    .strip_prefix("sleep=")
                    .and_then(|ms| ms.parse::<u64>().ok())
                {
                    found.sleep = Duration::from_millis(ms.min(MAX_SLEEP_MS));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<GenRequest, ApiError> {
        validate(&parse(body.as_bytes())?)
    }

    #[test]
    fn accepts_and_resolves_defaults() {
        let req = check(r#"{"model":"gpt-image-1","prompt":"a cat","extra":1}"#).expect("ok");
        assert_eq!((req.n, req.size.as_str()), (1, "1024x1024"));
        assert_eq!(
            (req.quality.as_str(), req.background.as_str()),
            ("medium", "opaque")
        );
        let req = check(
            r#"{"model":"sim-fast","prompt":"x","n":3,"size":"1536x1024","quality":"low",
                "background":"transparent","output_format":"webp","response_format":"b64_json",
                "user":"u1","moderation":"low","output_compression":80,"style":null}"#,
        )
        .expect("ok");
        assert_eq!((req.n, req.quality.as_str()), (3, "low"));
        assert_eq!(req.background, "transparent");
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            (r#"{"model":"gpt-image-1","prompt":""}"#, "prompt"),
            (r#"{"model":"gpt-image-1","prompt":"x","n":0}"#, "n"),
            (r#"{"model":"gpt-image-1","prompt":"x","n":11}"#, "n"),
            (r#"{"model":"dall-e-9","prompt":"x"}"#, "model"),
            (r#"{"prompt":"x"}"#, "model"),
            (
                r#"{"model":"gpt-image-1","prompt":"x","size":"big"}"#,
                "size",
            ),
            (
                r#"{"model":"gpt-image-1","prompt":"x","quality":"ultra"}"#,
                "quality",
            ),
            (
                r#"{"model":"gpt-image-1","prompt":"x","response_format":"url"}"#,
                "response_format",
            ),
            (
                r#"{"model":"gpt-image-1","prompt":"x","stream":true}"#,
                "stream",
            ),
        ];
        for (body, param) in cases {
            let err = check(body).expect_err(body);
            assert_eq!(err.param, Some(param), "{body}");
            assert_eq!(err.status.as_u16(), 400);
            assert_eq!(err.kind, "invalid_request_error");
        }
        assert!(check("not json").is_err());
        assert!(check(r#"{"model":"gpt-image-1","prompt":"x","n":1.5}"#).is_err());
    }

    #[test]
    fn fault_directives() {
        assert_eq!(faults("plain"), Faults::default());
        assert_eq!(faults("a [sim:500] b").status, Some(500));
        assert_eq!(faults("[sim:503]").status, Some(503));
        let nul = faults("[sim:500nul]");
        assert_eq!((nul.status, nul.unprintable), (Some(500), true));
        assert_eq!(faults("x [sim:500x2]").fail_first, Some((500, 2)));
        assert_eq!(faults("[sim:200x2] [sim:500xz]").fail_first, None);
        let both = faults("x [sim:sleep=250] y [sim:500]");
        assert_eq!(both.sleep, Duration::from_millis(250));
        assert_eq!(both.status, Some(500));
        assert_eq!(faults("[sim:sleep=abc] [sim:404] [sim:500").status, None);
    }
}
