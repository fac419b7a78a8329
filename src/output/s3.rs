//! Images in S3 or an S3-compatible store (`GENQ_OUTPUT_URL=s3://bucket/prefix`),
//! through `object_store`. Credentials, region and endpoint come from the
//! standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for S3-compatible
//! stores); none of them is ever logged or stored. A put is whole or
//! absent, so readers never see half an image.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStore, PutOptions, PutPayload};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use super::ImageError;

/// How long a presigned image URL stays valid.
pub const SIGNED_URL_TTL: Duration = Duration::from_secs(300);

/// A bucket and a prefix in it.
#[derive(Debug, Clone)]
pub struct S3Output {
    store: Arc<AmazonS3>,
    bucket: String,
    /// Without leading or trailing `/`; may be empty.
    prefix: String,
}

/// Why `GENQ_OUTPUT_URL` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("GENQ_OUTPUT_URL {url:?}: {why}")]
pub struct OutputUrlError {
    pub url: String,
    pub why: String,
}

impl S3Output {
    /// The store at `url` (`s3://bucket/prefix`), configured from `AWS_*`.
    pub fn from_url(url: &str) -> Result<S3Output, OutputUrlError> {
        let endpoint = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
            .iter()
            .find_map(|v| std::env::var(v).ok())
            .unwrap_or_default();
        // An S3-compatible store on plain http is the operator's explicit choice.
        let builder = AmazonS3Builder::from_env().with_allow_http(endpoint.starts_with("http://"));
        S3Output::with_builder(url, builder)
    }

    /// The store at `url`, configured by `builder` (credentials, region,
    /// endpoint) instead of the environment.
    pub fn with_builder(url: &str, builder: AmazonS3Builder) -> Result<S3Output, OutputUrlError> {
        let fail = |why: &str| OutputUrlError {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| fail("not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(fail("names no bucket; use s3://bucket/prefix"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        let store = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| fail(&format!("the S3 client could not be set up: {e}")))?;
        Ok(S3Output {
            store: Arc::new(store),
            bucket: bucket.to_string(),
            prefix,
        })
    }

    fn path(&self, key: &str) -> Path {
        Path::from(self.object_name(key))
    }

    fn object_name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// `s3://bucket/prefix/<key>`.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.object_name(key))
    }

    /// `s3://bucket/prefix`, for logs.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Writes the object, with its media type (so a presigned GET serves it as an image).
    pub async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), String> {
        let options = PutOptions {
            attributes: Attributes::from_iter([(
                Attribute::ContentType,
                AttributeValue::from(content_type.to_string()),
            )]),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(key), PutPayload::from_bytes(bytes), options)
            .await
            .map(|_| ())
            .map_err(|e| format!("writing {}: {e}", self.location(key)))
    }

    /// The object's size, or `Gone`.
    async fn size(&self, key: &str) -> Result<u64, ImageError> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(ImageError::Gone),
            Err(e) => Err(ImageError::Store(e.to_string())),
        }
    }

    /// The object's bytes, at most `max_bytes`.
    pub async fn get(&self, key: &str, max_bytes: u64) -> Result<Bytes, ImageError> {
        let size = self.size(key).await?;
        if size > max_bytes {
            return Err(ImageError::TooLarge { size, max_bytes });
        }
        match self.store.get(&self.path(key)).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(|e| ImageError::Store(e.to_string())),
            Err(object_store::Error::NotFound { .. }) => Err(ImageError::Gone),
            Err(e) => Err(ImageError::Store(e.to_string())),
        }
    }

    /// A presigned GET URL for the object, valid [`SIGNED_URL_TTL`]; `Gone`
    /// if there is no such object.
    pub async fn signed_get(&self, key: &str) -> Result<String, ImageError> {
        self.size(key).await?;
        self.store
            .signed_url(http::Method::GET, &self.path(key), SIGNED_URL_TTL)
            .await
            .map(|url| url.to_string())
            .map_err(|e| ImageError::Store(e.to_string()))
    }

    /// Deletes every object of `job_id` (all its attempts).
    pub async fn remove_job(&self, job_id: Uuid) -> Result<(), String> {
        let prefix = self.path(&job_id.to_string());
        let listed = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        self.store
            .delete_stream(listed)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| format!("deleting {}: {e}", self.location(&job_id.to_string())))
    }
}
