//! The image models genq knows, and what each accepts.
//!
//! One table in code, so a bad job is refused when it is submitted, with a
//! message saying how to fix it, instead of failing later at the provider
//! after waiting for a rate-limit slot. The table follows async-openai 0.43's
//! `ImageModel` and `CreateImageRequest` docs. Checking a job's params
//! against it is `crate::validation`'s work.

/// The model used when a job names none. The one definition: `NewJob`,
/// the CLI and the API use it, and a test checks that the `genq.jobs.model`
/// column's SQL default is the same name.
pub const DEFAULT_MODEL: &str = "gpt-image-2";

use serde_json::Value;

/// Sizes every GPT image model accepts.
pub const STANDARD_SIZES: &[&str] = &["1024x1024", "1536x1024", "1024x1536", "auto"];

/// How a model's `size` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// Only [`STANDARD_SIZES`].
    Standard,
    /// [`STANDARD_SIZES`] or any `WIDTHxHEIGHT` within [`flexible_size_ok`].
    Flexible,
}

/// What one model accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The API name.
    pub name: &'static str,
    /// Accepted `size` values.
    pub sizes: Sizes,
    /// Accepted `quality` values.
    pub qualities: &'static [&'static str],
    /// Longest prompt, in characters.
    pub max_prompt_chars: usize,
}

const Q: &[&str] = &["low", "medium", "high", "auto"];
const Q_2_5: &[&str] = &["low", "medium", "high", "xhigh", "max", "auto"];

const fn spec(name: &'static str, sizes: Sizes, qualities: &'static [&'static str]) -> ModelSpec {
    ModelSpec {
        name,
        sizes,
        qualities,
        max_prompt_chars: 32_000,
    }
}

/// The known models, default first.
pub const MODELS: &[ModelSpec] = &[
    spec("gpt-image-2", Sizes::Flexible, Q),
    spec("gpt-image-2-2026-04-21", Sizes::Flexible, Q),
    spec("gpt-image-2.5-sunburst", Sizes::Flexible, Q_2_5),
    spec("gpt-image-2.5-sunburst-2026-09-08", Sizes::Flexible, Q_2_5),
    spec("gpt-image-2.5-flare", Sizes::Flexible, Q_2_5),
    spec("gpt-image-2.5-flare-2026-09-08", Sizes::Flexible, Q_2_5),
    spec("gpt-image-1.5", Sizes::Standard, Q),
    spec("gpt-image-1-mini", Sizes::Standard, Q),
    spec("chatgpt-image-latest", Sizes::Standard, Q),
];

/// Models the API no longer serves, with what to use instead.
pub const RETIRED: &[(&str, &str)] = &[
    (
        "dall-e-2",
        "DALL·E models are retired; use gpt-image-2 (the default) instead",
    ),
    (
        "dall-e-3",
        "DALL·E models are retired; use gpt-image-2 (the default) instead",
    ),
    (
        "gpt-image-1",
        "gpt-image-1 was shut down on October 23, 2026; use gpt-image-2.5-sunburst or gpt-image-2.5-flare instead",
    ),
];

/// What genq knows about a model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// In [`MODELS`].
    Known(&'static ModelSpec),
    /// In [`RETIRED`]: the advice to show.
    Retired(&'static str),
    /// Anything else (a new model, a compatible provider's): passed through.
    Unknown,
}

/// Finds `model` in the catalogue (exact, case-sensitive, as the API is).
pub fn lookup(model: &str) -> Lookup {
    if let Some(spec) = MODELS.iter().find(|m| m.name == model) {
        Lookup::Known(spec)
    } else if let Some((_, advice)) = RETIRED.iter().find(|(name, _)| *name == model) {
        Lookup::Retired(advice)
    } else {
        Lookup::Unknown
    }
}

/// Smallest and largest pixel counts for a flexible size. The documented
/// maximum is 3840x2160; the minimum is not in async-openai's docs, so this
/// is the conservative floor commonly reported for gpt-image-2 (1024x640).
pub const FLEXIBLE_PIXELS: (u64, u64) = (655_360, 3840 * 2160);

/// Longest edge of a flexible size.
pub const FLEXIBLE_MAX_EDGE: u64 = 3840;

/// Human-readable form of the flexible-size rule, for error messages.
pub const FLEXIBLE_RULE: &str = "WIDTHxHEIGHT with both multiples of 16, edges up to 3840, \
     aspect ratio between 1:3 and 3:1 and 655360 to 8294400 pixels";

/// Whether `size` is a `WIDTHxHEIGHT` the flexible models accept: both
/// multiples of 16, edges ≤ [`FLEXIBLE_MAX_EDGE`], aspect ratio within 1:3 to
/// 3:1, pixel count within [`FLEXIBLE_PIXELS`].
pub fn flexible_size_ok(size: &str) -> bool {
    let Some((w, h)) = size.split_once('x') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(w) || !digits(h) {
        return false;
    }
    let (w, h): (u64, u64) = (w.parse().unwrap_or(0), h.parse().unwrap_or(0));
    let (short, long) = (w.min(h), w.max(h));
    let pixels = w * h;
    short > 0
        && w % 16 == 0
        && h % 16 == 0
        && long <= FLEXIBLE_MAX_EDGE
        && long <= 3 * short
        && (FLEXIBLE_PIXELS.0..=FLEXIBLE_PIXELS.1).contains(&pixels)
}

/// The number of images a job asks for: `n`, default 1, clamped to 1..=10
/// (validated params are always in range).
pub fn image_count(params: &Value) -> u32 {
    params
        .get("n")
        .and_then(Value::as_u64)
        .map_or(1, |n| n.clamp(1, 10) as u32)
}

impl ModelSpec {
    /// Whether this model accepts `size`.
    pub fn size_ok(&self, size: &str) -> bool {
        STANDARD_SIZES.contains(&size) || (self.sizes == Sizes::Flexible && flexible_size_ok(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_table() {
        assert_eq!(MODELS[0].name, DEFAULT_MODEL);
        for name in [
            "gpt-image-2",
            "gpt-image-2.5-flare-2026-09-08",
            "gpt-image-1.5",
            "gpt-image-1-mini",
        ] {
            assert!(
                matches!(lookup(name), Lookup::Known(s) if s.name == name),
                "{name}"
            );
        }
        for name in ["dall-e-2", "dall-e-3", "gpt-image-1"] {
            assert!(matches!(lookup(name), Lookup::Retired(_)), "{name}");
        }
        for name in ["gpt-image-9", "GPT-IMAGE-2", "", "my-local-model"] {
            assert_eq!(lookup(name), Lookup::Unknown, "{name}");
        }
    }

    #[test]
    fn sizes_table() {
        let g2 = &MODELS[0];
        let g15 = MODELS.iter().find(|m| m.name == "gpt-image-1.5").unwrap();
        #[rustfmt::skip]
        let cases = [
            ("1024x1024", true, true), ("1536x1024", true, true), ("1024x1536", true, true), ("auto", true, true),
            ("1792x1024", true, false), ("1024x1792", true, false), ("1536x864", true, false),
            ("3840x2160", true, false), ("2160x3840", true, false), ("1024x640", true, false),
            ("512x512", false, false), ("256x256", false, false), ("3856x2160", false, false),
            ("3072x1008", false, false), ("1000x1000", false, false), ("1024x1025", false, false),
            ("4096x4096", false, false), ("1024X1024", false, false), ("x1024", false, false),
            ("1024x", false, false), ("0x0", false, false), ("-1024x1024", false, false),
            ("99999999999x1", false, false), ("AUTO", false, false), ("", false, false),
        ];
        for (size, ok2, ok15) in cases {
            assert_eq!(g2.size_ok(size), ok2, "gpt-image-2 {size}");
            assert_eq!(g15.size_ok(size), ok15, "gpt-image-1.5 {size}");
        }
    }

    #[test]
    fn counts() {
        for (params, want) in [
            (serde_json::json!(null), 1),
            (serde_json::json!({}), 1),
            (serde_json::json!({"n": 4}), 4),
            (serde_json::json!({"n": null}), 1),
            (serde_json::json!({"n": 99}), 10),
            (serde_json::json!({"n": "3"}), 1),
        ] {
            assert_eq!(image_count(&params), want, "{params}");
        }
    }
}
