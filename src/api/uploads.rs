//! `POST /v1/uploads`: an input image for edits, sent as one multipart
//! file part. Its bytes must be a PNG, JPEG or WebP image of at most 50 MiB
//! (judged by the bytes, not the name or declared type); the answer's `id`
//! goes in a job's `inputs` (`{"upload": "<id>"}`) or `mask`.

use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::ApiError;
use crate::input::{ImageFormat, MAX_INPUT_BYTES, format};
use crate::store::inputs::{self, Upload};

/// The body limit of this route: one image and the form around it.
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_INPUT_BYTES + 64 * 1024)
}

/// Stores the one file part of the form: 201 with the upload's `id`,
/// `content_type`, `bytes`, `sha256`, `file_name` and `created_at`.
pub async fn create(
    State(state): State<Arc<ApiState>>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Upload>), ApiError> {
    let mut form = form.map_err(|e| {
        ApiError::bad_request(format!(
            "send the image as multipart/form-data with one file part, e.g. \
             curl -F file=@hero.png …/v1/uploads ({})",
            e.body_text()
        ))
    })?;
    let mut upload: Option<(Option<String>, bytes::Bytes)> = None;
    while let Some(field) = form.next_field().await.map_err(too_large_or_bad)? {
        if field.file_name().is_none() {
            continue; // a text field: nothing genq reads
        }
        if upload.is_some() {
            return Err(ApiError::bad_request(
                "one file per upload; send each image in its own POST /v1/uploads",
            ));
        }
        let name = field.file_name().map(clean_name);
        let bytes = field.bytes().await.map_err(too_large_or_bad)?;
        upload = Some((name, bytes));
    }
    let Some((name, bytes)) = upload else {
        return Err(ApiError::bad_request(
            "the form has no file part; send the image as one, e.g. curl -F file=@hero.png",
        ));
    };
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(too_large());
    }
    let Some(kind) = ImageFormat::sniff(&bytes) else {
        return Err(ApiError::bad_request(format!(
            "the file is {}; upload a PNG, JPEG or WebP image",
            format::describe_unaccepted(&bytes)
        )));
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let stored = inputs::insert_upload(
        &state.pool,
        kind.content_type(),
        &sha256,
        name.as_deref(),
        &bytes,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// A client's file name, kept for display only: no control characters or
/// path, at most 255 characters.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars().filter(|c| !c.is_control()).take(255).collect()
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the image is larger than {} MiB, the most the Images API takes; make it smaller",
            MAX_INPUT_BYTES / (1024 * 1024)
        ),
    )
}

fn too_large_or_bad(err: axum::extract::multipart::MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::bad_request(format!(
            "the multipart form could not be read: {}",
            err.body_text()
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_names_lose_paths_and_control_characters() {
        let cases = [
            ("hero.png", "hero.png"),
            ("../../etc/passwd", "passwd"),
            ("C:\\art\\hero.png", "hero.png"),
            ("a\u{0}b\nc.png", "abc.png"),
        ];
        for (name, want) in cases {
            assert_eq!(super::clean_name(name), want);
        }
    }
}
