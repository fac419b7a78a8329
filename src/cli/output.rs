//! Where images go, as the worker, `serve`, `run` and `demo` are told: a
//! local directory (`GENQ_OUTPUT_DIR`, the default) or S3 / an
//! S3-compatible store (`GENQ_OUTPUT_URL=s3://bucket/prefix`, with the
//! standard `AWS_*` variables).

use anyhow::Result;
use clap::Args;
use genq::output::OutputStore;

#[derive(Args, Clone)]
pub struct OutputArgs {
    /// Where images are written: <dir>/<job id>/<attempt>/<n>.<ext>.
    #[arg(long, env = "GENQ_OUTPUT_DIR", default_value = "./genq-output")]
    pub output_dir: std::path::PathBuf,
    /// Write images to object storage instead: s3://bucket/prefix (credentials,
    /// region and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL; plain http only to a loopback endpoint
    /// unless AWS_ALLOW_HTTP=true).
    #[arg(long, env = "GENQ_OUTPUT_URL")]
    pub output_url: Option<String>,
}

impl OutputArgs {
    /// The store these flags name.
    pub fn store(&self) -> Result<OutputStore> {
        Ok(OutputStore::from_url_or_dir(
            self.output_url.as_deref(),
            &self.output_dir,
            std::env::vars(),
        )?)
    }
}
