//! Images in S3 or an S3-compatible store (`GENQ_OUTPUT_URL=s3://bucket/prefix`)
//! through `object_store`: `<prefix>/<job id>/<attempt>/<n>.<ext>`.
//!
//! - Credentials, region and endpoint come from the standard `AWS_*`
//!   variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//!   `AWS_ENDPOINT_URL`…), handed in by the caller: the library reads no
//!   environment. None of them is ever logged, shown by `Debug` or stored.
//! - Plain http is allowed for a loopback endpoint (a store on this host);
//!   elsewhere only with `AWS_ALLOW_HTTP=true`.
//! - A PUT is whole or absent, so a reader never sees half an image, and
//!   each attempt writes under its own prefix, as on disk.
//! - Images are served by a presigned GET URL, valid [`SIGNED_URL_TTL`].

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
};
use std::time::Duration;
use uuid::Uuid;

use super::ImageError;

/// How long a presigned image URL stays valid.
pub const SIGNED_URL_TTL: Duration = Duration::from_secs(5 * 60);

/// Why `GENQ_OUTPUT_URL` cannot be used. Its text never repeats the URL
/// (it could hold credentials) nor any `AWS_*` value.
#[derive(Debug, thiserror::Error)]
#[error("GENQ_OUTPUT_URL: {0}")]
pub struct OutputUrlError(String);

/// A bucket and a prefix in it.
pub(super) struct S3Dir {
    store: AmazonS3,
    bucket: String,
    /// Without leading or trailing `/`; may be empty.
    prefix: String,
}

/// Shows the bucket and prefix only: the client holds the credentials.
impl std::fmt::Debug for S3Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Dir")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Dir {
    /// The store at `url` (`s3://bucket/prefix`), configured by the `AWS_*`
    /// pairs of `env` (other names are ignored).
    pub fn from_url(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<S3Dir, OutputUrlError> {
        let (bucket, prefix) = parse_url(url)?;
        let mut builder = AmazonS3Builder::new();
        let mut endpoint = None;
        let mut allow_http = false;
        for (name, value) in env {
            if !name.starts_with("AWS_") {
                continue;
            }
            let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() else {
                continue;
            };
            match name.as_str() {
                "AWS_ENDPOINT_URL" | "AWS_ENDPOINT" | "AWS_ENDPOINT_URL_S3" => {
                    endpoint = Some(value.clone())
                }
                "AWS_ALLOW_HTTP" => allow_http = value.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
            builder = builder.with_config(key, value);
        }
        if let Some(endpoint) = &endpoint {
            let parsed = reqwest::Url::parse(endpoint)
                .map_err(|_| OutputUrlError("AWS_ENDPOINT_URL is not a URL".into()))?;
            let host = parsed.host_str().unwrap_or_default().to_string();
            if parsed.scheme() == "http" {
                if is_loopback(&host) {
                    builder = builder.with_allow_http(true);
                } else if !allow_http {
                    return Err(OutputUrlError(format!(
                        "AWS_ENDPOINT_URL is plain http to {host}, beyond this host: \
                         use https, or set AWS_ALLOW_HTTP=true to send requests unencrypted"
                    )));
                }
            }
        }
        let store = builder
            .with_bucket_name(&bucket)
            // A job's attempt should fail and retry, not hang in a retry loop.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| OutputUrlError(format!("the S3 client could not be set up: {e}")))?;
        Ok(S3Dir {
            store,
            bucket,
            prefix,
        })
    }

    fn object(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn path(&self, key: &str) -> Path {
        Path::from(self.object(key))
    }

    /// `s3://bucket/prefix/<key>`.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.object(key))
    }

    /// `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }

    /// Stores `bytes` under `key` with its media type; the error says where.
    pub async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), String> {
        let options = PutOptions {
            attributes: Attributes::from_iter([(Attribute::ContentType, content_type.to_string())]),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.path(key), PutPayload::from_bytes(bytes), options)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The size of the object under `key`; `Gone` if there is none.
    async fn size(&self, key: &str) -> Result<u64, ImageError> {
        self.store
            .head(&self.path(key))
            .await
            .map(|meta| meta.size)
            .map_err(|e| self.image_error(key, e))
    }

    /// The bytes under `key`, refused past `max_bytes`.
    pub async fn read(&self, key: &str, max_bytes: u64) -> Result<Bytes, ImageError> {
        let found = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.image_error(key, e))?;
        let size = found.meta.size;
        if size > max_bytes {
            return Err(ImageError::TooLarge {
                bytes: size,
                max_bytes,
            });
        }
        let mut body = bytes::BytesMut::with_capacity(size as usize);
        let mut chunks = found.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.image_error(key, e))?;
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(ImageError::TooLarge {
                    bytes: (body.len() + chunk.len()) as u64,
                    max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// A presigned GET URL for the object under `key`, valid
    /// [`SIGNED_URL_TTL`]; `Gone` if there is no such object.
    pub async fn signed_get(&self, key: &str) -> Result<String, ImageError> {
        self.size(key).await?;
        self.store
            .signed_url(http::Method::GET, &self.path(key), SIGNED_URL_TTL)
            .await
            .map(String::from)
            .map_err(|e| self.image_error(key, e))
    }

    /// Deletes every object of `job_id` (all its attempts): those listed
    /// under `<prefix>/<job id>/`.
    pub async fn remove_job(&self, job_id: Uuid) -> std::io::Result<()> {
        let job = self.path(&job_id.to_string());
        let listed = self
            .store
            .list(Some(&job))
            .map_ok(|meta| meta.location)
            .boxed();
        self.store
            .delete_stream(listed)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|e| {
                std::io::Error::other(format!(
                    "deleting {}/: {e}",
                    self.location(&job_id.to_string())
                ))
            })
    }

    fn image_error(&self, key: &str, err: object_store::Error) -> ImageError {
        match err {
            object_store::Error::NotFound { .. } => ImageError::Gone,
            other => ImageError::Read(std::io::Error::other(format!(
                "{}: {other}",
                self.location(key)
            ))),
        }
    }
}

/// The bucket and prefix of `s3://bucket/prefix`. The prefix is plain
/// path segments of S3's safe characters, so it means the same to every
/// store and in every URL.
fn parse_url(url: &str) -> Result<(String, String), OutputUrlError> {
    let fail = |why: &str| Err(OutputUrlError(why.to_string()));
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return fail("not a URL; use s3://bucket/prefix");
    };
    if parsed.scheme() != "s3" {
        return fail("only s3:// URLs are supported: s3://bucket/prefix");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return fail(
            "must not hold credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead",
        );
    }
    if parsed.port().is_some() || parsed.query().is_some() || parsed.fragment().is_some() {
        return fail(
            "is s3://bucket/prefix only (an S3-compatible store's address goes in AWS_ENDPOINT_URL)",
        );
    }
    let bucket = parsed.host_str().unwrap_or_default();
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return fail(
            "names no valid bucket (3 to 63 lowercase letters, digits, '-' or '.'): s3://bucket/prefix",
        );
    }
    // The URL parser resolves `a/../b`; a prefix should say what it means.
    let dot_segment = url.split(['/', '?', '#']).any(|s| s == "." || s == "..");
    let prefix = parsed.path().trim_matches('/');
    let prefix_ok = !dot_segment
        && (prefix.is_empty()
            || prefix.split('/').all(|segment| {
                !segment.is_empty()
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b))
            }));
    if !prefix_ok {
        return fail(
            "the prefix must be path segments of letters, digits and !-_.*'() (no empty, . or .. segment)",
        );
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Whether `host` is this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_urls_name_a_bucket_and_a_clean_prefix() {
        let ok = [
            ("s3://images", ("images", "")),
            ("s3://images/", ("images", "")),
            ("s3://images/genq", ("images", "genq")),
            ("s3://my.bucket-1/a/b/", ("my.bucket-1", "a/b")),
        ];
        for (url, (bucket, prefix)) in ok {
            let (b, p) = parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((b.as_str(), p.as_str()), (bucket, prefix), "{url}");
        }
        let refused = [
            ("/tmp/out", "not a URL"),
            ("https://images/genq", "only s3://"),
            ("s3://AKIA:hunter2@images/genq", "must not hold credentials"),
            ("s3://images:9000/genq", "s3://bucket/prefix only"),
            ("s3://images/genq?x=1", "s3://bucket/prefix only"),
            ("s3://Images/genq", "no valid bucket"),
            ("s3:///genq", "no valid bucket"),
            ("s3://images/a//b", "the prefix"),
            ("s3://images/a/../b", "the prefix"),
            ("s3://images/a%20b", "the prefix"),
        ];
        for (url, why) in refused {
            let err = parse_url(url).expect_err(url).to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn http_is_allowed_for_a_loopback_endpoint_only_unless_asked() {
        let env = |endpoint: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![
                ("AWS_ENDPOINT_URL".to_string(), endpoint.to_string()),
                ("AWS_ACCESS_KEY_ID".into(), "AKIDEXAMPLE".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "hunter2-secret".into()),
            ];
            pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            pairs
        };
        for endpoint in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            S3Dir::from_url("s3://images/genq", env(endpoint, &[])).expect(endpoint);
        }
        S3Dir::from_url("s3://images/genq", env("https://s3.example.com", &[])).unwrap();
        let err = S3Dir::from_url("s3://images/genq", env("http://minio:9000", &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_ALLOW_HTTP=true"), "{err}");
        S3Dir::from_url(
            "s3://images/genq",
            env("http://minio:9000", &[("AWS_ALLOW_HTTP", "true")]),
        )
        .unwrap();
        let store = S3Dir::from_url("s3://images/genq", env("http://127.0.0.1:9000", &[])).unwrap();
        let shown = format!("{store:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(store.describe(), "s3://images/genq");
        assert_eq!(
            store.location("x/1/0.png"),
            "s3://images/genq/x/1/0.png",
            "locations name the bucket and the prefix"
        );
    }
}
