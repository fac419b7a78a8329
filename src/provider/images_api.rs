//! What sends one Images API request for [`super::images::ImagesProvider`]:
//! the real client ([`super::openai::ImagesClient`], whose impl lives with
//! it) or [`DryRun`], which
//! sends nothing. The provider reserves, books, classifies and stores the
//! same way whichever it holds, so a dry run measures genq's own cost per
//! job with the limiter included and no provider in the way
//! (`genq worker --provider dry-run`).

use reqwest::header::HeaderMap;
use serde_json::Value;
use std::future::Future;

use super::openai::{Delivered, ProviderResponse};
use crate::input::EditInputs;
use crate::secret::ApiSecret;

/// One request to the Images API, and what its answer may weigh.
pub trait ImagesApi: Send + Sync + 'static {
    /// Sends exactly one generation request with `secret`.
    fn generate(
        &self,
        secret: &ApiSecret,
        model: &str,
        prompt: &str,
        params: &Value,
    ) -> impl Future<Output = ProviderResponse> + Send;

    /// Sends exactly one edit request: `inputs` (images and mask) changed
    /// as `prompt` says.
    fn edit(
        &self,
        secret: &ApiSecret,
        model: &str,
        prompt: &str,
        params: &Value,
        inputs: &EditInputs,
    ) -> impl Future<Output = ProviderResponse> + Send;

    /// Most bytes a job with `params` holds in memory while its answer is
    /// read and stored (see `footprint`).
    fn peak_bytes(&self, params: &Value) -> u64;
}

/// A client that sends nothing: every request succeeds at once with no
/// images, and holds no memory for an answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct DryRun;

impl ImagesApi for DryRun {
    async fn generate(&self, _: &ApiSecret, _: &str, _: &str, _: &Value) -> ProviderResponse {
        ProviderResponse {
            status: None,
            headers: HeaderMap::new(),
            result: Ok(Delivered::NotSent),
        }
    }

    async fn edit(
        &self,
        secret: &ApiSecret,
        model: &str,
        prompt: &str,
        params: &Value,
        _: &EditInputs,
    ) -> ProviderResponse {
        self.generate(secret, model, prompt, params).await
    }

    fn peak_bytes(&self, _: &Value) -> u64 {
        0
    }
}
