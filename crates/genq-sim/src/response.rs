//! The success answer: OpenAI's `ImagesResponse` with `n` base64 PNGs and plausible token
//! usage, shaped so `async_openai::types::images::ImagesResponse` deserializes it.
//!
//! The PNGs are small (16x16) whatever size was asked, unless the sim is set to send full
//! size images (uncompressed, so as large as the size allows); `size` in the answer echoes
//! the request. `output_format` is always `png`, because the bytes are PNG.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::png;
use super::request::GenRequest;

/// Side of the generated square images, in pixels.
pub const IMAGE_SIDE: u32 = 16;

/// Body of a 200 answer.
#[derive(Debug, Serialize)]
pub struct ImagesResponse {
    created: i64,
    data: Vec<ImageData>,
    background: String,
    output_format: &'static str,
    size: String,
    quality: String,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct ImageData {
    b64_json: String,
    revised_prompt: Option<String>,
}

/// The tokens a request was billed, as the API reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub total_tokens: u32,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub input_tokens_details: InputDetails,
}

/// What the input tokens were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDetails {
    pub text_tokens: u32,
    pub image_tokens: u32,
}

/// Input tokens the sim bills per input image (an edit's images and mask): a
/// fixed, plausible figure, so edits cost more than generations.
pub const IMAGE_INPUT_TOKENS: u32 = 323;

/// The usage billed for `req` with `input_images` input images: about four
/// characters a text token, and the output tokens OpenAI publishes per image
/// for the quality and size.
pub fn usage(req: &GenRequest, input_images: u32) -> Usage {
    let text_tokens = u32::try_from(req.prompt.chars().count().div_ceil(4))
        .unwrap_or(u32::MAX)
        .max(1);
    Usage {
        total_tokens: 0,
        input_tokens: 0,
        output_tokens: output_tokens_per_image(&req.quality, &req.size).saturating_mul(req.n),
        input_tokens_details: InputDetails {
            text_tokens,
            image_tokens: 0,
        },
    }
    .with_input_images(input_images)
}

impl Usage {
    /// This usage with `images` input images billed, and the totals that follow.
    pub fn with_input_images(mut self, images: u32) -> Usage {
        let details = &mut self.input_tokens_details;
        details.image_tokens = IMAGE_INPUT_TOKENS.saturating_mul(images);
        self.input_tokens = details.text_tokens.saturating_add(details.image_tokens);
        self.total_tokens = self.input_tokens.saturating_add(self.output_tokens);
        self
    }
}

/// Builds the answer to `req`, created at unix time `created`, billing `usage`.
pub fn images_response(
    req: &GenRequest,
    created: i64,
    full_size: bool,
    usage: Usage,
) -> ImagesResponse {
    let data = (0..req.n)
        .map(|i| ImageData {
            b64_json: base64::engine::general_purpose::STANDARD.encode(image(req, i, full_size)),
            revised_prompt: None,
        })
        .collect();
    ImagesResponse {
        created,
        data,
        background: req.background.clone(),
        output_format: "png",
        size: req.size.clone(),
        quality: req.quality.clone(),
        usage,
    }
}

/// Image `index` of `req`: a solid colour derived from the prompt, so answers are
/// deterministic and different prompts look different.
fn image(req: &GenRequest, index: u32, full_size: bool) -> Vec<u8> {
    let digest = Sha256::new()
        .chain_update(req.prompt.as_bytes())
        .chain_update(index.to_be_bytes())
        .finalize();
    let alpha = if req.background == "transparent" {
        0
    } else {
        255
    };
    let (w, h) = if full_size {
        super::request::parse_size(&req.size).unwrap_or((1536, 1024))
    } else {
        (IMAGE_SIDE, IMAGE_SIDE)
    };
    png::solid(w, h, [digest[0], digest[1], digest[2], alpha])
}

/// OpenAI's published output-token cost of one image, by quality and (square or not) size.
fn output_tokens_per_image(quality: &str, size: &str) -> u32 {
    let square = size.split_once('x').is_none_or(|(w, h)| w == h);
    match (quality, square) {
        ("low", true) => 272,
        ("low", false) => 408,
        ("high", true) => 4160,
        ("high", false) => 6240,
        (_, true) => 1056,
        (_, false) => 1584,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Faults, GenRequest};

    fn request(n: u32, background: &str) -> GenRequest {
        GenRequest {
            model: "gpt-image-1".into(),
            prompt: "a lighthouse at dawn".into(),
            n,
            size: "1536x1024".into(),
            quality: "low".into(),
            background: background.into(),
            faults: Faults::default(),
        }
    }

    #[test]
    fn deserializes_as_async_openai_images_response() {
        use async_openai::types::images::{Image, ImageQuality, ImagesResponse as Theirs};
        let req = request(2, "opaque");
        let json =
            serde_json::to_string(&images_response(&req, 1_700_000_000, false, usage(&req, 0)))
                .expect("serializes");
        let theirs: Theirs = serde_json::from_str(&json).expect("async-openai reads it");
        assert_eq!(theirs.created, 1_700_000_000);
        assert_eq!(theirs.data.len(), 2);
        assert_eq!(theirs.quality, Some(ImageQuality::Low));
        let usage = theirs.usage.expect("usage");
        assert_eq!(usage.output_tokens, 816);
        assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);
        match theirs.data[0].as_ref() {
            Image::B64Json { b64_json, .. } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64_json.as_str())
                    .expect("base64");
                assert!(bytes.starts_with(&png::SIGNATURE));
            }
            other => panic!("expected b64_json, got {other:?}"),
        }
    }

    #[test]
    fn shape_and_determinism() {
        let req = request(1, "transparent");
        let value = serde_json::to_value(images_response(&req, 5, false, usage(&req, 0)))
            .expect("serializes");
        assert_eq!(value["background"], "transparent");
        assert_eq!(value["output_format"], "png");
        assert_eq!(value["size"], "1536x1024");
        assert!(value["data"][0]["revised_prompt"].is_null());
        assert_eq!(value["usage"]["input_tokens_details"]["image_tokens"], 0);
        let again = serde_json::to_value(images_response(&req, 5, false, usage(&req, 0)))
            .expect("serializes");
        assert_eq!(value, again);
    }

    #[test]
    fn usage_follows_prompt_inputs_quality_and_size() {
        // (quality, size, n, input images) -> (text, image, output) tokens
        let cases = [
            ("low", "1536x1024", 2, 0, (5, 0, 816)),
            ("low", "1024x1024", 1, 0, (5, 0, 272)),
            ("high", "1024x1024", 3, 0, (5, 0, 12_480)),
            ("medium", "1024x1536", 1, 2, (5, 646, 1584)),
            ("auto", "auto", 1, 1, (5, 323, 1056)),
        ];
        for (quality, size, n, inputs, (text, image, output)) in cases {
            let mut req = request(n, "opaque");
            req.quality = quality.into();
            req.size = size.into();
            let u = usage(&req, inputs);
            assert_eq!(
                (
                    u.input_tokens_details.text_tokens,
                    u.input_tokens_details.image_tokens,
                    u.output_tokens
                ),
                (text, image, output),
                "{quality} {size} n={n} inputs={inputs}"
            );
            assert_eq!(u.input_tokens, text + image);
            assert_eq!(u.total_tokens, u.input_tokens + u.output_tokens);
        }
    }
}
