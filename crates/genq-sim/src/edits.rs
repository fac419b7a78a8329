//! `POST /v1/images/edits`: OpenAI's multipart form for an image edit. The
//! images (`image` or repeated `image[]`, up to 16) and the optional `mask`
//! are checked the way the API does (PNG, JPEG or WebP by their bytes, each
//! at most [`MAX_IMAGE_BYTES`]; a PNG mask); the text fields become the same
//! request a generation is, so an edit meets the same keys, limits and error
//! answers. What each part was is recorded in the log ([`InputPart`]), so a
//! test can see every part a client sent.

use axum::extract::Multipart;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::errors::ApiError;

/// Most images one edit takes.
pub const MAX_IMAGES: usize = 16;
/// Largest image (or mask) accepted, as the API documents for GPT image models.
pub const MAX_IMAGE_BYTES: u64 = 50 * 1024 * 1024;

/// One file part of an edit, as the sim received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPart {
    /// The form field: `image`, `image[]` or `mask`.
    pub field: String,
    /// The file name the client gave, if any.
    pub file_name: Option<String>,
    /// The image type its bytes show: `png`, `jpeg` or `webp`.
    pub format: Option<String>,
    /// Its length in bytes.
    pub bytes: u64,
}

impl InputPart {
    /// (field, file name, format, bytes): the part at a glance, for tests.
    pub fn seen(&self) -> (&str, Option<&str>, Option<&str>, u64) {
        (
            self.field.as_str(),
            self.file_name.as_deref(),
            self.format.as_deref(),
            self.bytes,
        )
    }
}

/// The edit's text fields as a JSON request body (numbers as numbers), and
/// its file parts; or the 400 the API would answer.
pub async fn read(mut form: Multipart) -> Result<(Vec<u8>, Vec<InputPart>), ApiError> {
    let mut fields = Map::new();
    let mut parts = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| invalid(e.to_string(), None))?
    {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "image" | "image[]" | "mask" => {
                let file_name = field.file_name().map(str::to_string);
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| invalid(e.to_string(), None))?;
                parts.push(InputPart {
                    format: sniff(&data).map(str::to_string),
                    field: name,
                    file_name,
                    bytes: data.len() as u64,
                });
            }
            _ => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| invalid(e.to_string(), None))?;
                let value = match name.as_str() {
                    "n" | "output_compression" => text
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                    _ => Value::String(text),
                };
                fields.insert(name, value);
            }
        }
    }
    check(&parts)?;
    let body = serde_json::to_vec(&Value::Object(fields)).expect("a JSON object serializes");
    Ok((body, parts))
}

/// The API's rules for the file parts.
fn check(parts: &[InputPart]) -> Result<(), ApiError> {
    let images: Vec<&InputPart> = parts.iter().filter(|p| p.field != "mask").collect();
    if images.is_empty() {
        return Err(invalid(
            "An image is required: send it as `image` (or several as `image[]`).".into(),
            Some("image"),
        ));
    }
    if images.len() > MAX_IMAGES {
        return Err(invalid(
            format!(
                "Too many images: {} were sent, at most {MAX_IMAGES} are accepted.",
                images.len()
            ),
            Some("image"),
        ));
    }
    for (i, part) in parts.iter().enumerate() {
        let param = if part.field == "mask" {
            "mask"
        } else {
            "image"
        };
        if part.bytes > MAX_IMAGE_BYTES {
            return Err(invalid(
                format!(
                    "Image {i} is {} bytes; each image must be at most {MAX_IMAGE_BYTES} bytes.",
                    part.bytes
                ),
                Some(param),
            ));
        }
        let allowed: &[&str] = if param == "mask" {
            &["png"]
        } else {
            &["png", "jpeg", "webp"]
        };
        if !part.format.as_deref().is_some_and(|f| allowed.contains(&f)) {
            return Err(invalid(
                format!(
                    "Invalid file '{}': unsupported image format. Supported formats are: {}.",
                    part.file_name.as_deref().unwrap_or(param),
                    allowed.join(", ")
                ),
                Some(param),
            ));
        }
    }
    Ok(())
}

/// The image type `data` starts with.
pub fn sniff(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpeg")
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

fn invalid(message: String, param: Option<&'static str>) -> ApiError {
    ApiError::invalid_request(message, param)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(field: &str, format: Option<&str>, bytes: u64) -> InputPart {
        InputPart {
            field: field.into(),
            file_name: Some("x".into()),
            format: format.map(str::to_string),
            bytes,
        }
    }

    #[test]
    fn sniffs_the_three_formats() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("jpeg"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("webp"));
        assert_eq!(sniff(b"GIF89a"), None);
    }

    #[test]
    fn the_apis_rules_for_parts() {
        let png = |f: &str| part(f, Some("png"), 10);
        let cases: Vec<(Vec<InputPart>, Option<&str>)> = vec![
            (vec![png("image")], None),
            (
                vec![
                    png("image[]"),
                    part("image[]", Some("webp"), 10),
                    png("mask"),
                ],
                None,
            ),
            (vec![], Some("An image is required")),
            (vec![png("mask")], Some("An image is required")),
            (vec![png("image[]"); 17], Some("Too many images: 17")),
            (
                vec![part("image", Some("gif"), 10)],
                Some("unsupported image format"),
            ),
            (
                vec![png("image"), part("mask", Some("jpeg"), 10)],
                Some("Supported formats are: png."),
            ),
            (
                vec![part("image", Some("png"), MAX_IMAGE_BYTES + 1)],
                Some("must be at most"),
            ),
        ];
        for (parts, want) in cases {
            match (check(&parts), want) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) => {
                    assert!(e.message.contains(want), "{}: want {want}", e.message)
                }
                (got, want) => panic!("{parts:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
