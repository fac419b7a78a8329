//! Where generated images go: `GENQ_OUTPUT_DIR/<job id>/<n>.<ext>`, written
//! atomically (temp file + rename) so a reader never sees half an image and
//! a re-run of the same job (at-least-once) simply replaces its files.

use async_openai::types::images::{Image, ImagesResponse};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use uuid::Uuid;

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
            http: reqwest::Client::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes every image of `response` for `job_id`; returns the job's `result`.
    pub async fn save(
        &self,
        job_id: Uuid,
        response: &ImagesResponse,
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
        let dir = self.root.join(job_id.to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| OutputError::Write {
                path: dir.clone(),
                source,
            })?;
        let mut images = Vec::with_capacity(response.data.len());
        for (index, image) in response.data.iter().enumerate() {
            let (bytes, revised_prompt) = match image.as_ref() {
                Image::B64Json {
                    b64_json,
                    revised_prompt,
                } => (
                    base64::engine::general_purpose::STANDARD
                        .decode(b64_json.as_bytes())
                        .map_err(|source| OutputError::Decode { index, source })?,
                    revised_prompt.clone(),
                ),
                Image::Url {
                    url,
                    revised_prompt,
                } => (self.fetch(index, url).await?, revised_prompt.clone()),
            };
            let path = dir.join(format!("{index}.{ext}"));
            write_atomically(&path, &bytes).await?;
            images.push(json!({
                "path": path.display().to_string(),
                "bytes": bytes.len(),
                "sha256": hex::encode(Sha256::digest(&bytes)),
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

    async fn fetch(&self, index: usize, url: &str) -> Result<Vec<u8>, OutputError> {
        let fail = |message: String| OutputError::Fetch { index, message };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        Ok(response
            .bytes()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?
            .to_vec())
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let tmp = path.with_extension(format!("tmp-{}", Uuid::new_v4().simple()));
    let err = |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    };
    tokio::fs::write(&tmp, bytes).await.map_err(err)?;
    tokio::fs::rename(&tmp, path).await.map_err(err)
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
        let result = store.save(job, &response).await.unwrap();
        let images = result["images"].as_array().unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(
            images[0]["path"],
            root.join(job.to_string())
                .join("0.png")
                .display()
                .to_string()
        );
        assert_eq!(images[0]["bytes"], png.len());
        assert_eq!(images[0]["sha256"], hex::encode(Sha256::digest(&png)));
        assert_eq!(images[0]["revised_prompt"], "a fox");
        assert_eq!(
            std::fs::read(root.join(job.to_string()).join("1.png")).unwrap(),
            png
        );
        store.save(job, &response).await.unwrap();
        assert_eq!(
            std::fs::read_dir(root.join(job.to_string()))
                .unwrap()
                .count(),
            2,
            "no temp files left"
        );
        let bad = ImagesResponse {
            data: vec![Arc::new(Image::B64Json {
                b64_json: Arc::new("***".into()),
                revised_prompt: None,
            })],
            ..ImagesResponse::default()
        };
        assert!(matches!(
            store.save(job, &bad).await,
            Err(OutputError::Decode { index: 0, .. })
        ));
        assert!(matches!(
            store.save(job, &ImagesResponse::default()).await,
            Err(OutputError::Empty)
        ));
        std::fs::remove_dir_all(root).unwrap();
    }
}
