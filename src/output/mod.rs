//! Where generated images go: `<job id>/<attempt>/<n>.<ext>` under the
//! local directory `GENQ_OUTPUT_DIR` (the default), or under a bucket and
//! prefix in S3 or an S3-compatible store (`GENQ_OUTPUT_URL=s3://…`, see
//! [`s3`]).
//!
//! - Each attempt writes under its own key, so a run that lost its lease
//!   (and whose job was claimed again) can never overwrite the images of the
//!   run that won; the job's `result` names the winner's images, and it is
//!   written under the completion's fence.
//! - Writes are whole or absent (a temp file and a rename; an object put):
//!   a reader never sees half an image.
//! - Decoding and hashing run on the blocking pool, one image at a time,
//!   and each image's base64 text is dropped as soon as it is decoded.
//! - An image returned as a URL is fetched with a timeout and a size bound,
//!   and only over http(s).
//! - Reading back ([`OutputStore::read`], [`OutputStore::serve`]) takes a
//!   result's `key` ([`key`]), never a path.

pub mod key;
pub mod s3;

use async_openai::types::images::{Image, ImagesResponse};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::bounded::{self, Bounded};
pub use s3::OutputUrlError;
use s3::S3Dir;

/// How long fetching one image URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest image URL genq fetches.
const MAX_URL_LEN: usize = 4096;

/// Why images could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("image {index} is not valid base64: {source}")]
    Decode {
        index: usize,
        source: base64::DecodeError,
    },
    #[error("fetching image {index} failed: {message}")]
    Fetch { index: usize, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(String),
    #[error("the provider returned no images")]
    Empty,
}

/// Why a stored image cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The key is not `<job id>/<attempt>/<n>.<png|jpeg|webp>`.
    #[error("not an image key genq wrote")]
    BadKey,
    /// The image is not there (pruned, or written on another host's disk).
    #[error("the image is not in this output store")]
    Gone,
    #[error("the image is {bytes} bytes, more than {max_bytes}")]
    TooLarge { bytes: u64, max_bytes: u64 },
    /// The disk or the object store failed.
    #[error("reading the image: {0}")]
    Read(std::io::Error),
}

/// The media type of an image written with extension `ext`.
pub fn content_type(ext: &str) -> &'static str {
    match ext {
        "jpeg" | "jpg" => "image/jpeg",
        "webp" => "image/webp",
        _ => "image/png",
    }
}

/// How [`OutputStore::serve`] hands an image out.
#[derive(Debug)]
pub enum Served {
    /// A local file to stream, and its length.
    File(tokio::fs::File, u64),
    /// A presigned URL to redirect to (valid [`s3::SIGNED_URL_TTL`]).
    Redirect(String),
}

#[derive(Debug, Clone)]
enum Backend {
    Dir(PathBuf),
    S3(Arc<S3Dir>),
}

/// Where a worker writes job outputs and the API reads them.
#[derive(Debug, Clone)]
pub struct OutputStore {
    backend: Backend,
    http: reqwest::Client,
}

impl OutputStore {
    /// The local directory `root`.
    pub fn new(root: impl AsRef<Path>) -> Self {
        OutputStore::with(Backend::Dir(root.as_ref().to_path_buf()))
    }

    /// S3 (or an S3-compatible store) at `url`, `s3://bucket/prefix`,
    /// configured by the `AWS_*` pairs of `env` (the caller's environment:
    /// the library reads none).
    pub fn s3(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, OutputUrlError> {
        let dir = S3Dir::from_url(url, env)?;
        Ok(OutputStore::with(Backend::S3(Arc::new(dir))))
    }

    /// The store at `url` (`GENQ_OUTPUT_URL`) when one is given, else the
    /// directory `dir`.
    pub fn from_url_or_dir(
        url: Option<&str>,
        dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, OutputUrlError> {
        match url.filter(|u| !u.trim().is_empty()) {
            Some(url) => OutputStore::s3(url, env),
            None => Ok(OutputStore::new(dir)),
        }
    }

    fn with(backend: Backend) -> Self {
        OutputStore {
            backend,
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(Duration::from_secs(10))
                .build()
                .expect("a reqwest client with timeouts"),
        }
    }

    /// Where images go, for logs and messages: a directory or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir(root) => root.display().to_string(),
            Backend::S3(s3) => s3.describe(),
        }
    }

    /// Hands out the image stored under `key` (a result's `images[n].key`):
    /// a local file to stream, or a presigned URL to an object. A key of any
    /// other shape is refused.
    pub async fn serve(&self, key: &str) -> Result<Served, ImageError> {
        if !key::is_valid(key) {
            return Err(ImageError::BadKey);
        }
        match &self.backend {
            Backend::Dir(root) => {
                let (file, len) = open(&root.join(key)).await?;
                Ok(Served::File(file, len))
            }
            Backend::S3(s3) => Ok(Served::Redirect(s3.signed_get(key).await?)),
        }
    }

    /// The bytes of the image stored under `key`, at most `max_bytes`.
    pub async fn read(&self, key: &str, max_bytes: u64) -> Result<Bytes, ImageError> {
        use tokio::io::AsyncReadExt;
        if !key::is_valid(key) {
            return Err(ImageError::BadKey);
        }
        match &self.backend {
            Backend::Dir(root) => {
                let (file, size) = open(&root.join(key)).await?;
                if size > max_bytes {
                    return Err(ImageError::TooLarge {
                        bytes: size,
                        max_bytes,
                    });
                }
                let mut bytes = Vec::with_capacity(size as usize);
                file.take(max_bytes)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(ImageError::Read)?;
                Ok(bytes.into())
            }
            Backend::S3(s3) => s3.read(key, max_bytes).await,
        }
    }

    /// Deletes every image of `job_id` (all its attempts), as retention
    /// deletes its row. A job with no images is no error.
    pub async fn remove_job(&self, job_id: Uuid) -> Result<(), String> {
        match &self.backend {
            Backend::Dir(root) => {
                let dir = root.join(job_id.to_string());
                match tokio::fs::remove_dir_all(&dir).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(format!("deleting {}: {e}", dir.display()))
                    }
                    _ => Ok(()),
                }
            }
            Backend::S3(s3) => s3.remove_job(job_id).await.map_err(|e| e.to_string()),
        }
    }

    /// Writes every image of `response` for `attempt` of `job_id`, each at
    /// most `max_image_bytes` when fetched from a URL; returns the job's
    /// `result`. Consumes the response so each image's text is freed once
    /// decoded.
    pub async fn save(
        &self,
        job_id: Uuid,
        attempt: i32,
        response: ImagesResponse,
        max_image_bytes: u64,
    ) -> Result<Value, OutputError> {
        if response.data.is_empty() {
            return Err(OutputError::Empty);
        }
        let ext = response
            .output_format
            .as_ref()
            .and_then(crate::provider::openai::wire_name)
            .unwrap_or_else(|| "png".into());
        if let Backend::Dir(root) = &self.backend {
            let dir = root.join(job_id.to_string()).join(attempt.to_string());
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|source| OutputError::Write {
                    path: dir.clone(),
                    source,
                })?;
        }
        let mut images = Vec::with_capacity(response.data.len());
        for (index, image) in response.data.into_iter().enumerate() {
            let key = key::image(job_id, attempt, index, &ext);
            let (encoded, revised_prompt) = match image.as_ref() {
                Image::B64Json {
                    b64_json,
                    revised_prompt,
                } => (Encoded::Base64(b64_json.clone()), revised_prompt.clone()),
                Image::Url {
                    url,
                    revised_prompt,
                } => (
                    Encoded::Raw(self.fetch(index, url, max_image_bytes).await?),
                    revised_prompt.clone(),
                ),
            };
            drop(image);
            let (bytes, sha256) = tokio::task::spawn_blocking(move || encoded.decode(index))
                .await
                .expect("decoding an image does not panic")?;
            let size = bytes.len();
            let mut entry = json!({
                "key": key,
                "content_type": content_type(&ext),
                "bytes": size,
                "sha256": sha256,
                "revised_prompt": revised_prompt,
            });
            match &self.backend {
                Backend::Dir(root) => {
                    let path = root.join(&key);
                    let at = path.clone();
                    tokio::task::spawn_blocking(move || write_atomically(&at, &bytes))
                        .await
                        .expect("writing an image does not panic")?;
                    entry["path"] = path.display().to_string().into();
                    entry["location"] = entry["path"].clone();
                }
                Backend::S3(s3) => {
                    s3.put(&key, bytes, content_type(&ext)).await.map_err(|e| {
                        OutputError::Store(format!("writing {}: {e}", s3.location(&key)))
                    })?;
                    entry["location"] = s3.location(&key).into();
                }
            }
            images.push(entry);
        }
        Ok(json!({
            "images": images,
            "output_format": ext,
            "size": response.size,
            "quality": response.quality,
            "background": response.background,
            "usage": response.usage,
        }))
    }

    async fn fetch(&self, index: usize, url: &str, limit: u64) -> Result<Bytes, OutputError> {
        let fail = |message: String| OutputError::Fetch { index, message };
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && url.len() <= MAX_URL_LEN)
            .ok_or_else(|| {
                fail(format!(
                    "not an http(s) URL of at most {MAX_URL_LEN} characters"
                ))
            })?;
        let response = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| fail(crate::cause::chain(&e.without_url())))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        match bounded::read(response, limit).await {
            Ok(Bounded::Whole(bytes)) => Ok(bytes),
            Ok(Bounded::Cut(_)) => Err(fail(format!(
                "more than {limit} bytes, the most its size allows"
            ))),
            Err(e) => Err(fail(crate::cause::chain(&e.without_url()))),
        }
    }
}

/// A local file and its length, or `Gone`.
async fn open(path: &Path) -> Result<(tokio::fs::File, u64), ImageError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ImageError::Gone),
        Err(e) => return Err(ImageError::Read(e)),
    };
    let len = file.metadata().await.map_err(ImageError::Read)?.len();
    Ok((file, len))
}

/// One image as the provider gave it.
enum Encoded {
    Base64(std::sync::Arc<String>),
    Raw(Bytes),
}

impl Encoded {
    /// Decodes and hashes the image (blocking); returns it and its SHA-256.
    fn decode(self, index: usize) -> Result<(Bytes, String), OutputError> {
        let bytes = match self {
            Encoded::Base64(text) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|source| OutputError::Decode { index, source })?;
                drop(text);
                Bytes::from(decoded)
            }
            Encoded::Raw(bytes) => bytes,
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok((bytes, sha256))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let tmp = path.with_extension(format!("tmp-{}", Uuid::new_v4().simple()));
    let err = |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn saves_each_image_with_its_hash_and_replaces_on_rerun() {
        let root =
            std::env::temp_dir().join(format!("genq-output-test-{}", Uuid::new_v4().simple()));
        let store = OutputStore::new(&root);
        let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        let response = ImagesResponse {
            data: vec![
                Arc::new(Image::B64Json {
                    b64_json: Arc::new(b64.clone()),
                    revised_prompt: Some("a fox".into()),
                }),
                Arc::new(Image::B64Json {
                    b64_json: Arc::new(b64),
                    revised_prompt: None,
                }),
            ],
            ..ImagesResponse::default()
        };
        let job = Uuid::new_v4();
        let result = store.save(job, 1, response.clone(), 1 << 20).await.unwrap();
        let images = result["images"].as_array().unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(
            images[0]["path"],
            root.join(job.to_string())
                .join("1")
                .join("0.png")
                .display()
                .to_string()
        );
        assert_eq!(images[0]["bytes"], png.len());
        assert_eq!(images[0]["sha256"], hex::encode(Sha256::digest(&png)));
        assert_eq!(images[0]["revised_prompt"], "a fox");
        assert_eq!(
            std::fs::read(root.join(job.to_string()).join("1").join("1.png")).unwrap(),
            png
        );
        store.save(job, 1, response.clone(), 1 << 20).await.unwrap();
        assert_eq!(
            std::fs::read_dir(root.join(job.to_string()).join("1"))
                .unwrap()
                .count(),
            2,
            "no temp files left"
        );
        // Another attempt writes beside it, never over it.
        store.save(job, 2, response, 1 << 20).await.unwrap();
        assert_eq!(
            std::fs::read(root.join(job.to_string()).join("1").join("0.png")).unwrap(),
            png
        );
        assert!(root.join(job.to_string()).join("2").join("0.png").exists());
        let bad = ImagesResponse {
            data: vec![Arc::new(Image::B64Json {
                b64_json: Arc::new("***".into()),
                revised_prompt: None,
            })],
            ..ImagesResponse::default()
        };
        assert!(matches!(
            store.save(job, 1, bad, 1 << 20).await,
            Err(OutputError::Decode { index: 0, .. })
        ));
        assert!(matches!(
            store.save(job, 1, ImagesResponse::default(), 1 << 20).await,
            Err(OutputError::Empty)
        ));
        std::fs::remove_dir_all(root).unwrap();
    }
}
