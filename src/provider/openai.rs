//! The Images API client: async-openai's typed request and response, sent
//! through our own tower service so that every call is exactly one HTTP
//! request (async-openai's default client retries 429s and 5xx by itself,
//! behind our buckets' backs) and so that every answer's status, headers
//! and error body reach genq (async-openai's errors carry no headers).
//!
//! The service records what it saw into a per-call slot, carried by a
//! task-local, so one client serves every concurrent call.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::images::{
    CreateImageEditRequest, CreateImageRequest, ImageEditInput, ImageInput, ImagesResponse,
    InputFidelity,
};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::images_api::ImagesApi;
use crate::bounded::Bounded;
use crate::input::{EditImage, EditInputs};
use crate::secret::ApiSecret;

/// Why a call produced no images.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    /// The provider answered with a non-success status.
    #[error("HTTP {status}")]
    Http { status: u16, body: Bytes },
    #[error("the provider did not answer in time: {0}")]
    Timeout(String),
    #[error("could not reach the provider: {0}")]
    Connect(String),
    #[error("the provider's answer could not be read: {0}")]
    Decode(String),
    /// The answer was larger than the request allows (see `footprint`).
    #[error("the provider's answer was too large: {0}")]
    TooLarge(String),
    #[error("{0}")]
    Other(String),
}

/// Everything one call learned.
#[derive(Debug)]
pub struct ProviderResponse {
    /// None when no HTTP answer came back.
    pub status: Option<u16>,
    pub headers: HeaderMap,
    pub result: Result<Delivered, CallFailure>,
}

/// What a successful call handed back.
#[derive(Debug)]
pub enum Delivered {
    /// The provider's answer, with the images to store.
    Images(ImagesResponse),
    /// Nothing was sent (`images_api::DryRun`): a success with nothing to store.
    NotSent,
}

#[derive(Default)]
struct Seen {
    /// Most bytes a successful answer may have.
    limit: u64,
    status: Option<u16>,
    headers: HeaderMap,
    body: Option<Bytes>,
    transport: Option<CallFailure>,
}

tokio::task_local! {
    static SEEN: Arc<Mutex<Seen>>;
}

/// One HTTP client for one provider base URL, shared by all calls and keys.
#[derive(Clone)]
pub struct ImagesClient {
    base_url: String,
    /// `host:port` of `base_url`, to say where a connection failed.
    endpoint: Arc<str>,
    http: reqwest::Client,
}

impl ImagesClient {
    /// `base_url` such as `https://api.openai.com/v1` or `http://127.0.0.1:8089/v1`.
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .expect("a reqwest client with timeouts");
        ImagesClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            endpoint: endpoint(base_url).into(),
            http,
        }
    }

    /// The reqwest client, for fetching images returned as URLs.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl ImagesClient {
    /// Sends the one request `call` makes with a client for `secret`, and
    /// gathers what came back.
    async fn send<F, Fut>(&self, secret: &ApiSecret, params: &Value, call: F) -> ProviderResponse
    where
        F: FnOnce(Client<OpenAIConfig>) -> Fut,
        Fut: Future<Output = Result<ImagesResponse, OpenAIError>>,
    {
        let config = OpenAIConfig::new()
            // Not OPENAI_ORG_ID / OPENAI_PROJECT_ID from the environment: keys of
            // different accounts must not be sent with one account's headers.
            .with_org_id("")
            .with_project_id("")
            .with_api_base(&self.base_url)
            .with_api_key(secret.expose());
        let client = Client::with_config(config).with_http_service(OneShot {
            http: self.http.clone(),
            endpoint: self.endpoint.clone(),
        });
        let seen = Arc::new(Mutex::new(Seen {
            limit: super::footprint::max_answer_bytes(params),
            ..Seen::default()
        }));
        let outcome = SEEN.scope(seen.clone(), call(client)).await;
        let seen = std::mem::take(&mut *seen.lock().expect("seen lock"));
        let result = match outcome {
            Ok(images) => Ok(Delivered::Images(images)),
            Err(err) => Err(match (seen.transport, seen.status, seen.body) {
                (Some(transport), _, _) => transport,
                (None, Some(status), Some(body)) => CallFailure::Http { status, body },
                (None, Some(_), None) => CallFailure::Decode(describe(&err)),
                (None, None, _) => CallFailure::Other(describe(&err)),
            }),
        };
        ProviderResponse {
            status: seen.status,
            headers: seen.headers,
            result,
        }
    }
}

/// An answer for a request that could not be built (nothing was sent).
fn unsent(failure: CallFailure) -> ProviderResponse {
    ProviderResponse {
        status: None,
        headers: HeaderMap::new(),
        result: Err(failure),
    }
}

impl ImagesApi for ImagesClient {
    /// Exactly one `POST {base}/images/generations` with `secret`.
    async fn generate(
        &self,
        secret: &ApiSecret,
        model: &str,
        prompt: &str,
        params: &Value,
    ) -> ProviderResponse {
        match build_request(model, prompt, params) {
            Ok(request) => {
                self.send(secret, params, |client| async move {
                    client.images().generate(request).await
                })
                .await
            }
            Err(e) => unsent(e),
        }
    }

    /// Exactly one multipart `POST {base}/images/edits` with `secret`.
    async fn edit(
        &self,
        secret: &ApiSecret,
        model: &str,
        prompt: &str,
        params: &Value,
        inputs: &EditInputs,
    ) -> ProviderResponse {
        match build_edit_request(model, prompt, params, inputs) {
            Ok(request) => {
                self.send(secret, params, |client| async move {
                    client.images().edit(request).await
                })
                .await
            }
            Err(e) => unsent(e),
        }
    }

    fn peak_bytes(&self, params: &Value) -> u64 {
        super::footprint::peak_bytes(params)
    }
}

/// async-openai's error text, without anything that could carry a secret.
/// The word an async-openai enum is on the wire (`ImageQuality::Low` is
/// `"low"`), if it serializes as one.
pub(crate) fn wire_name<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

fn describe(err: &OpenAIError) -> String {
    crate::provider::classify::redact_keys(&err.to_string())
}

/// The typed request from genq's params; genq's own keys are left out.
fn build_request(
    model: &str,
    prompt: &str,
    params: &Value,
) -> Result<CreateImageRequest, CallFailure> {
    let mut body = serde_json::Map::new();
    if let Some(params) = params.as_object() {
        for (k, v) in params {
            if k != "fallback_models" && !k.starts_with("genq_") && k != "noop_delay_ms" {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    body.insert("model".into(), Value::String(model.into()));
    body.insert("prompt".into(), Value::String(prompt.into()));
    serde_json::from_value(Value::Object(body)).map_err(|e| {
        CallFailure::Other(format!(
            "params not accepted by the Images API request: {e}"
        ))
    })
}

/// The multipart edit request: genq's params (those an edit takes) with the
/// input images and mask as files.
fn build_edit_request(
    model: &str,
    prompt: &str,
    params: &Value,
    inputs: &EditInputs,
) -> Result<CreateImageEditRequest, CallFailure> {
    let mut common = params.clone();
    let fidelity = match common
        .as_object_mut()
        .and_then(|p| p.remove("input_fidelity"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(serde_json::from_value::<InputFidelity>(v).map_err(|e| {
            CallFailure::Other(format!(
                "input_fidelity not accepted by the edit request: {e}"
            ))
        })?),
    };
    let base = build_request(model, prompt, &common)?;
    let file =
        |image: &EditImage| ImageInput::from_bytes(image.file_name.clone(), image.bytes.clone());
    let mut images: Vec<ImageInput> = inputs.images.iter().map(file).collect();
    let image = match images.len() {
        0 => {
            return Err(CallFailure::Other(
                "an edit needs at least one input image".into(),
            ));
        }
        1 => ImageEditInput::Image(images.remove(0)),
        _ => ImageEditInput::Images(images),
    };
    Ok(CreateImageEditRequest {
        image,
        prompt: base.prompt,
        mask: inputs.mask.as_ref().map(file),
        background: base.background,
        model: base.model,
        n: base.n,
        size: base.size,
        output_format: base.output_format,
        output_compression: base.output_compression,
        input_fidelity: fidelity,
        quality: base.quality,
        safety_identifier: base.safety_identifier,
        #[allow(deprecated)]
        user: base.user,
        ..CreateImageEditRequest::default()
    })
}

/// A tower service that sends the request once and records what came back.
#[derive(Clone)]
struct OneShot {
    http: reqwest::Client,
    endpoint: Arc<str>,
}

impl tower::Service<HttpRequestFactory> for OneShot {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        let endpoint = self.endpoint.clone();
        let seen = SEEN.try_with(Arc::clone).ok();
        Box::pin(async move {
            let record = |f: &mut dyn FnMut(&mut Seen)| {
                if let Some(seen) = &seen {
                    f(&mut seen.lock().expect("seen lock"));
                }
            };
            let request = factory.build().await?;
            let response = match http.execute(request).await {
                Ok(r) => r,
                Err(e) => {
                    let (failure, err) = transport_failure(e, &endpoint);
                    record(&mut |s| s.transport = Some(failure.clone()));
                    return Err(err);
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let mut limit = ERROR_BODY_LIMIT;
            record(&mut |s| {
                s.status = Some(status.as_u16());
                s.headers = headers.clone();
                if status.is_success() {
                    limit = s.limit;
                }
            });
            // Read the body ourselves, within its bound, then hand async-openai an equal response.
            let body = match crate::bounded::read(response, limit).await {
                Ok(Bounded::Whole(b)) => b,
                Ok(Bounded::Cut(b)) if !status.is_success() => b,
                Ok(Bounded::Cut(_)) => {
                    let message = format!("more than {limit} bytes, the most its size and n allow");
                    record(&mut |s| s.transport = Some(CallFailure::TooLarge(message.clone())));
                    return Err(OpenAIError::InvalidArgument(message));
                }
                Err(e) => {
                    let (failure, err) = transport_failure(e, &endpoint);
                    record(&mut |s| s.transport = Some(failure.clone()));
                    return Err(err);
                }
            };
            if !status.is_success() {
                record(&mut |s| s.body = Some(body.clone()));
            }
            let mut rebuilt = http::Response::builder().status(status);
            if let Some(h) = rebuilt.headers_mut() {
                *h = headers;
            }
            let rebuilt = rebuilt
                .body(reqwest::Body::from(body))
                .expect("a response from valid parts");
            Ok(reqwest::Response::from(rebuilt))
        })
    }
}

/// Most bytes of an error answer kept (the message is cut further when stored).
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// A transport error as genq classifies it, with its root cause (a refused
/// connection, an untrusted certificate) and where it happened, and as
/// async-openai carries it (without the URL, which is harmless but noisy).
fn transport_failure(e: reqwest::Error, endpoint: &str) -> (CallFailure, OpenAIError) {
    let e = e.without_url();
    let text = format!("{} ({endpoint})", crate::cause::chain(&e));
    let failure = if e.is_timeout() {
        CallFailure::Timeout(text)
    } else if e.is_connect() {
        CallFailure::Connect(text)
    } else {
        CallFailure::Other(text)
    };
    (failure, OpenAIError::Reqwest(e))
}

/// `host:port` of a base URL (the port the scheme implies if none is given).
fn endpoint(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(url) => format!(
            "{}:{}",
            url.host_str().unwrap_or("?"),
            url.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => "an unparsable base URL".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_endpoint_is_host_and_port() {
        let cases = [
            ("https://api.openai.com/v1", "api.openai.com:443"),
            ("http://127.0.0.1:8089/v1", "127.0.0.1:8089"),
            ("http://user:pw@proxy.example/v1", "proxy.example:80"),
        ];
        for (url, want) in cases {
            assert_eq!(super::endpoint(url), want);
        }
    }
}
