//! The API's one error shape, `{"error": "what is wrong and how to fix it"}`,
//! and [`ApiJson`], a JSON extractor whose refusals use that shape too.
//!
//! Internal failures are logged with their detail and answered with a
//! generic message: database errors never reach the client.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::job::InvalidJob;
use crate::store::StoreError;
use crate::submit::SubmitError;

/// An error answer: its status and a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// What is wrong and how to fix it (the `error` field).
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: nothing at that id or path.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request is fine but the resource's state forbids it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 401: missing or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 500: logs `err` with `context` and answers without the detail.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"genq\""),
            );
        }
        response
    }
}

impl From<InvalidJob> for ApiError {
    fn from(err: InvalidJob) -> Self {
        ApiError::bad_request(err.0)
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::Field(err) => err.into(),
            SubmitError::Params(err) => ApiError::bad_request(err.to_string()),
            SubmitError::Input(err) => ApiError::bad_request(err.to_string()),
            err @ SubmitError::CallbackUrl(_) => ApiError::bad_request(err.to_string()),
            err @ SubmitError::IdempotencyConflict { .. } => ApiError::conflict(err.to_string()),
            SubmitError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Invalid(message) => ApiError::bad_request(message),
            StoreError::Db(sqlx::Error::PoolTimedOut) => {
                tracing::warn!("no database connection available within the timeout");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is busy or unreachable; try again shortly",
                )
            }
            StoreError::Db(err) => ApiError::internal("database error", &err),
        }
    }
}

/// `Json<T>`, but a body that is not valid JSON, has unknown or mistyped
/// fields, or is too large is refused in the API's own error shape (400,
/// 413 or 415) with serde's description of the problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    use std::error::Error;
    // The innermost cause is serde's own text ("unknown field `x`, expected one of …").
    let mut detail: &dyn Error = &rejection;
    while let Some(source) = detail.source() {
        detail = source;
    }
    match &rejection {
        JsonRejection::JsonDataError(_) => {
            ApiError::bad_request(format!("request body has the wrong fields: {detail}"))
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request(format!("request body is not valid JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with the header Content-Type: application/json",
        ),
        _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} KiB; shorten the prompt or params",
                super::BODY_LIMIT / 1024
            ),
        ),
        _ => ApiError::new(
            rejection.status(),
            format!("could not read the request body: {detail}"),
        ),
    }
}
