//! `genq submit`: enqueue one job and print its id.

use anyhow::{Context, Result, bail};
use clap::Args;

use genq::InputRef;
use genq::job::NewJob;

use super::db::DbArgs;

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// What to draw.
    #[arg(long)]
    pub prompt: String,
    /// Image model (default gpt-image-2).
    #[arg(long)]
    pub model: Option<String>,
    /// A model parameter, `key=value` (value parsed as JSON when it is, else a string); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// 0 to 1000, higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Do not run before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long)]
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Real failures allowed before the job is failed (1 to 100).
    #[arg(long, allow_negative_numbers = true)]
    pub max_attempts: Option<i32>,
    /// Submitting the same key again returns the first job instead of a new one.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Queue name.
    #[arg(long)]
    pub queue: Option<String>,
    /// `generate` (the default) or `edit` (the default when inputs are given).
    #[arg(long, value_parser = ["generate", "edit"])]
    pub operation: Option<String>,
    /// An image to edit, in order (repeatable, at most 16): an upload id
    /// (from POST /v1/uploads), an http(s) URL, or `job:<id>[:<index>]` for
    /// image <index> (default 0) of another job.
    #[arg(long = "input", value_name = "REF")]
    pub inputs: Vec<String>,
    /// The edit's mask (a PNG), named like an input.
    #[arg(long, value_name = "REF")]
    pub mask: Option<String>,
    /// POST the job's JSON here when it ends (signed; see the README).
    #[arg(long)]
    pub callback_url: Option<String>,
    #[command(flatten)]
    pub urls: super::urls::UrlArgs,
}

/// An input as the command line names it: an upload id, a URL, or
/// `job:<id>[:<index>]`.
fn input_ref(text: &str) -> Result<InputRef> {
    if let Some(rest) = text.strip_prefix("job:") {
        let (id, index) = match rest.split_once(':') {
            Some((id, index)) => (
                id,
                index
                    .parse()
                    .with_context(|| format!("{text:?}: the image index is not a number"))?,
            ),
            None => (rest, 0),
        };
        let id = id
            .parse()
            .with_context(|| format!("{text:?}: {id:?} is not a job id"))?;
        return Ok(InputRef::from_job(id, index));
    }
    if text.contains("://") {
        return Ok(InputRef::url(text));
    }
    match text.parse() {
        Ok(id) => Ok(InputRef::upload(id)),
        Err(_) => {
            bail!("input {text:?} is not an upload id, an http(s) URL, or job:<id>[:<index>]")
        }
    }
}

/// Validates and enqueues the job, then prints `{id, state, created}`.
pub async fn run(args: SubmitArgs) -> Result<()> {
    let mut params = serde_json::Map::new();
    for kv in &args.params {
        let Some((key, value)) = kv.split_once('=') else {
            bail!("--param {kv:?} is not key=value, e.g. --param size=1024x1024");
        };
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
        params.insert(key.to_string(), value);
    }
    let job = NewJob {
        prompt: args.prompt,
        model: args.model,
        queue: args.queue,
        params: (!params.is_empty()).then_some(serde_json::Value::Object(params)),
        priority: args.priority,
        run_at: args.run_at,
        max_attempts: args.max_attempts,
        idempotency_key: args.idempotency_key,
        expires_at: None,
        operation: args.operation.as_deref().map(str::parse).transpose()?,
        inputs: args
            .inputs
            .iter()
            .map(|i| input_ref(i))
            .collect::<Result<_>>()?,
        mask: args.mask.as_deref().map(input_ref).transpose()?,
        callback_url: args.callback_url,
    };
    genq::submit::validate(&job)?;
    let pool = genq::db::connect(&args.db.database_url, 2)
        .await
        .context("connecting to DATABASE_URL")?;
    let enqueued = genq::submit_with(&pool, &job, args.urls.policy()).await?;
    println!(
        "{}",
        serde_json::json!({ "id": enqueued.id, "state": enqueued.state.as_str(), "created": enqueued.created })
    );
    Ok(())
}
