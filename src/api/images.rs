//! `GET /v1/jobs/{id}/images/{n}`: a succeeded job's image `n`, streamed
//! from the output directory with its media type, or (in object storage) a
//! `307` to a presigned URL valid five minutes. The image is found by the
//! `key` genq recorded in the job's result, never by a path from the
//! request, and only in the configured store.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use tokio_util::io::ReaderStream;

use super::ApiState;
use super::error::ApiError;
use super::jobs::{no_such_job, parse_id};
use crate::job::JobState;
use crate::output::{ImageError, Served};
use crate::store::jobs as store_jobs;

/// Streams image `n` (from 0) of job `id`.
pub async fn show(
    State(state): State<Arc<ApiState>>,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let n: usize = n.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "image number {n:?} is not a number; images count from 0"
        ))
    })?;
    let job = store_jobs::get(&state.pool, id)
        .await?
        .ok_or_else(|| no_such_job(id))?;
    if job.state != JobState::Succeeded {
        return Err(ApiError::conflict(format!(
            "job {id} is {}; it has images once it has succeeded",
            job.state
        )));
    }
    let images = job.images();
    let Some(image) = images.get(n) else {
        return Err(ApiError::not_found(match images.len() {
            0 => format!("job {id} has no stored images"),
            count => format!("job {id} has {count} images: use 0 to {}", count - 1),
        }));
    };
    let key = image.get("key").and_then(|k| k.as_str()).ok_or_else(|| {
        ApiError::not_found(format!(
            "image {n} of job {id} was stored before genq recorded where; read its path from GET /v1/jobs/{id}"
        ))
    })?;
    let Some(store) = &state.images else {
        return Err(ApiError::not_found(
            "this server has no output directory to serve images from",
        ));
    };
    let served = store.serve(key).await.map_err(|err| match err {
        ImageError::BadKey => ApiError::not_found(format!(
            "image {n} of job {id} has no key genq wrote; it cannot be served"
        )),
        ImageError::Gone => ApiError::new(
            StatusCode::GONE,
            format!(
                "image {n} of job {id} is not in this server's output store ({}): \
                 it was deleted, or written to another host's directory or another bucket",
                store.describe()
            ),
        ),
        other => ApiError::internal("reading an image", &other),
    })?;
    let (file, len) = match served {
        Served::File(file, len) => (file, len),
        Served::Redirect(url) => {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, url)
                .header(header::CACHE_CONTROL, "private, no-store")
                .body(Body::empty())
                .map_err(|e| ApiError::internal("building a redirect", &e));
        }
    };
    let content_type = image
        .get("content_type")
        .and_then(|c| c.as_str())
        .unwrap_or("image/png");
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CACHE_CONTROL, "private, max-age=86400, immutable")
        .body(Body::from_stream(ReaderStream::new(file)))
        .map_err(|e| ApiError::internal("building an image response", &e))
}
