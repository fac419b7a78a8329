//! The images an edit job sends: where a producer says they are
//! ([`InputRef`]: an upload, a URL, or an image of another job), how they
//! are checked (their bytes are PNG, JPEG or WebP, within the API's size
//! and count limits), and how a worker gets their bytes when it runs the
//! job (`resolve`).
//!
//! - [`format`](mod@format): an image's format by its first bytes.
//! - [`address`]: which URLs may be fetched (no private addresses unless
//!   allowed), checked on the resolved addresses.
//! - `fetch`: fetching a URL from exactly the addresses checked, with a
//!   timeout and a size cap.
//! - `resolve`: a job's input rows to the bytes sent.

pub mod address;
mod fetch;
pub mod format;
pub(crate) mod resolve;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use address::UrlPolicy;
pub use format::ImageFormat;

/// Most input images of one edit (the Images API's limit).
pub const MAX_INPUT_IMAGES: usize = 16;
/// Largest input image, in bytes (the Images API's limit: 50 MB).
pub const MAX_INPUT_BYTES: usize = 50 * 1024 * 1024;
/// Most images one job returns (`n` is at most 10): the range of `index`.
pub const MAX_IMAGES_PER_JOB: u32 = 10;

/// Where an input image is, as a producer names it: exactly one of an
/// upload id (`POST /v1/uploads`), an `http(s)` URL, or image `index`
/// (from 0) of job `from_job`.
///
/// JSON: `{"upload": "<id>"}`, `{"url": "https://…"}`,
/// `{"from_job": "<id>", "index": 0}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_job: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl InputRef {
    pub fn upload(id: Uuid) -> Self {
        InputRef {
            upload: Some(id),
            ..InputRef::default()
        }
    }

    pub fn url(url: impl Into<String>) -> Self {
        InputRef {
            url: Some(url.into()),
            ..InputRef::default()
        }
    }

    pub fn from_job(job: Uuid, index: u32) -> Self {
        InputRef {
            from_job: Some(job),
            index: Some(index),
            ..InputRef::default()
        }
    }

    /// The one source this names, or why it names none or several.
    pub fn source(&self) -> Result<Source, String> {
        let named = [
            self.upload.is_some(),
            self.url.is_some(),
            self.from_job.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            return Err(
                "must name exactly one of upload (an id from POST /v1/uploads), url, or from_job"
                    .into(),
            );
        }
        if self.index.is_some() && self.from_job.is_none() {
            return Err("index goes with from_job (which image of that job)".into());
        }
        Ok(match (self.upload, &self.url, self.from_job) {
            (Some(id), _, _) => Source::Upload(id),
            (_, Some(url), _) => Source::Url(url.clone()),
            (_, _, Some(job)) => {
                let index = self.index.unwrap_or(0);
                if index >= MAX_IMAGES_PER_JOB {
                    return Err(format!(
                        "index {index} is out of range; a job has at most \
                         {MAX_IMAGES_PER_JOB} images, counted from 0"
                    ));
                }
                Source::FromJob { job, index }
            }
            (None, None, None) => unreachable!("exactly one source is named"),
        })
    }
}

/// Where one input image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Upload(Uuid),
    Url(String),
    FromJob { job: Uuid, index: u32 },
}

/// Whether an input is one of the images or the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Image,
    Mask,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Image => "image",
            Role::Mask => "mask",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "image" => Ok(Role::Image),
            "mask" => Ok(Role::Mask),
            other => Err(format!("unknown input role {other:?}")),
        }
    }
}

/// One input as `genq.inputs` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub role: Role,
    pub position: i32,
    pub source: Source,
}

impl Input {
    /// As the API shows it: `{"role", "position", "upload" | "url" | "from_job" + "index"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut shown = match &self.source {
            Source::Upload(id) => serde_json::json!({ "upload": id }),
            Source::Url(url) => serde_json::json!({ "url": url }),
            Source::FromJob { job, index } => {
                serde_json::json!({ "from_job": job, "index": index })
            }
        };
        shown["role"] = self.role.as_str().into();
        shown["position"] = self.position.into();
        shown
    }

    /// How an error names this input: `inputs[2]` or `mask`.
    pub fn label(&self) -> String {
        match self.role {
            Role::Image => format!("inputs[{}]", self.position),
            Role::Mask => "mask".into(),
        }
    }
}

/// The rows `genq.inputs` holds for a job's `inputs` and `mask`, or the
/// first one that names no single source (its label, and why).
pub fn rows(inputs: &[InputRef], mask: Option<&InputRef>) -> Result<Vec<Input>, (String, String)> {
    let images = inputs.iter().enumerate().map(|(n, r)| (Role::Image, n, r));
    images
        .chain(mask.map(|m| (Role::Mask, 0, m)))
        .map(|(role, position, r)| {
            let input = |source| Input {
                role,
                position: position as i32,
                source,
            };
            match r.source() {
                Ok(source) => Ok(input(source)),
                Err(why) => Err((input(Source::Upload(Uuid::nil())).label(), why)),
            }
        })
        .collect()
}

/// One input image's bytes, ready to send.
#[derive(Debug, Clone)]
pub struct EditImage {
    /// The file name sent in the multipart form (`input-0.png`, `mask.png`).
    pub file_name: String,
    pub bytes: bytes::Bytes,
}

/// Everything an edit sends besides its prompt and params.
#[derive(Debug, Clone, Default)]
pub struct EditInputs {
    pub images: Vec<EditImage>,
    pub mask: Option<EditImage>,
}

impl EditInputs {
    /// Bytes held for the request.
    pub fn bytes(&self) -> u64 {
        self.images
            .iter()
            .chain(self.mask.iter())
            .map(|i| i.bytes.len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_names_exactly_one_source() {
        let id = Uuid::nil();
        let cases: Vec<(InputRef, Result<Source, &str>)> = vec![
            (InputRef::upload(id), Ok(Source::Upload(id))),
            (
                InputRef::url("https://x.test/a.png"),
                Ok(Source::Url("https://x.test/a.png".into())),
            ),
            (
                InputRef::from_job(id, 2),
                Ok(Source::FromJob { job: id, index: 2 }),
            ),
            (
                InputRef {
                    from_job: Some(id),
                    ..InputRef::default()
                },
                Ok(Source::FromJob { job: id, index: 0 }),
            ),
            (InputRef::default(), Err("must name exactly one of upload")),
            (
                InputRef {
                    url: Some("https://x.test/a.png".into()),
                    ..InputRef::upload(id)
                },
                Err("must name exactly one of upload"),
            ),
            (
                InputRef {
                    index: Some(1),
                    ..InputRef::upload(id)
                },
                Err("index goes with from_job"),
            ),
            (InputRef::from_job(id, 10), Err("index 10 is out of range")),
        ];
        for (input, want) in cases {
            match (input.source(), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
