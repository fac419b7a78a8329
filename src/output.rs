//! Where generated images go: `GENQ_OUTPUT_DIR/<job id>/<attempt>/<n>.<ext>`.
//!
//! - Each attempt writes under its own directory, so a run that lost its
//!   lease (and whose job was claimed again) can never overwrite the
//!   images of the run that won; the job's `result` names the winner's
//!   files, and it is written under the completion's fence.
//! - Files are written atomically (temp file + rename): a reader never sees
//!   half an image.
//! - Decoding, hashing and writing run on the blocking pool, one image at a
//!   time, and each image's base64 text is dropped as soon as it is decoded.
//! - An image returned as a URL is fetched with a timeout and a size bound,
//!   and only over http(s).

use async_openai::types::images::{Image, ImagesResponse};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

use crate::bounded::{self, Bounded};

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
    #[error("the provider returned no images")]
    Empty,
}

/// Why a stored image cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The key is not `<job id>/<attempt>/<n>.<png|jpeg|webp>`.
    #[error("not an image key genq wrote")]
    BadKey,
    /// The file is not there (pruned, or written on another host's disk).
    #[error("the image file is not in this output directory")]
    Gone,
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

/// A directory of job outputs.
#[derive(Debug, Clone)]
pub struct OutputStore {
    root: PathBuf,
    http: reqwest::Client,
}

impl OutputStore {
    pub fn new(root: impl AsRef<Path>) -> Self {
        OutputStore {
            root: root.as_ref().to_path_buf(),
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .connect_timeout(Duration::from_secs(10))
                .build()
                .expect("a reqwest client with timeouts"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens the image stored under `key` (a result's `images[n].key`,
    /// `<job id>/<attempt>/<n>.<ext>`) for reading. A key of any other
    /// shape is refused, so a stored result can never name a file outside
    /// this directory.
    pub async fn open(&self, key: &str) -> Result<(tokio::fs::File, u64), ImageError> {
        let parts: Vec<&str> = key.split('/').collect();
        let well_formed = matches!(parts.as_slice(), [job, attempt, file]
        if Uuid::parse_str(job).is_ok()
            && attempt.parse::<u32>().is_ok()
            && file.split_once('.').is_some_and(|(n, ext)| {
                n.parse::<u32>().is_ok() && ["png", "jpeg", "webp"].contains(&ext)
            }));
        if !well_formed {
            return Err(ImageError::BadKey);
        }
        let file = match tokio::fs::File::open(self.root.join(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ImageError::Gone),
            Err(e) => return Err(ImageError::Read(e)),
        };
        let len = file.metadata().await.map_err(ImageError::Read)?.len();
        Ok((file, len))
    }

    /// The bytes of the image stored under `key`, at most `max_bytes`.
    pub async fn read(&self, key: &str, max_bytes: u64) -> Result<bytes::Bytes, ImageError> {
        use tokio::io::AsyncReadExt;
        let (file, len) = self.open(key).await?;
        if len > max_bytes {
            return Err(ImageError::Read(std::io::Error::other(format!(
                "{len} bytes, more than {max_bytes}"
            ))));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(max_bytes)
            .read_to_end(&mut bytes)
            .await
            .map_err(ImageError::Read)?;
        Ok(bytes.into())
    }

    /// Deletes every image of `job_id` (all its attempts), as retention
    /// deletes its row. A job with no images is no error.
    pub async fn remove_job(&self, job_id: Uuid) -> std::io::Result<()> {
        match tokio::fs::remove_dir_all(self.root.join(job_id.to_string())).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
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
            .and_then(|f| serde_json::to_value(f).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "png".into());
        let dir = self.root.join(job_id.to_string()).join(attempt.to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| OutputError::Write {
                path: dir.clone(),
                source,
            })?;
        let mut images = Vec::with_capacity(response.data.len());
        for (index, image) in response.data.into_iter().enumerate() {
            let path = dir.join(format!("{index}.{ext}"));
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
            let (bytes, sha256) = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || encoded.store(index, &path))
                    .await
                    .expect("storing an image does not panic")?
            };
            images.push(json!({
                "path": path.display().to_string(),
                "key": format!("{job_id}/{attempt}/{index}.{ext}"),
                "content_type": content_type(&ext),
                "bytes": bytes,
                "sha256": sha256,
                "revised_prompt": revised_prompt,
            }));
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

    async fn fetch(
        &self,
        index: usize,
        url: &str,
        limit: u64,
    ) -> Result<bytes::Bytes, OutputError> {
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

/// One image as the provider gave it.
enum Encoded {
    Base64(std::sync::Arc<String>),
    Raw(bytes::Bytes),
}

impl Encoded {
    /// Decodes, hashes and writes the image (blocking); returns its length
    /// and SHA-256.
    fn store(self, index: usize, path: &Path) -> Result<(usize, String), OutputError> {
        let bytes = match self {
            Encoded::Base64(text) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|source| OutputError::Decode { index, source })?;
                drop(text);
                bytes::Bytes::from(decoded)
            }
            Encoded::Raw(bytes) => bytes,
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        write_atomically(path, &bytes)?;
        Ok((bytes.len(), sha256))
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
