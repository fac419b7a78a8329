//! The one place the binary wires an `ImagesProvider`: `genq worker`,
//! `genq run` and `genq demo` all build theirs with [`images_provider`].

use anyhow::{Context, Result, bail};
use clap::Args;
use sqlx::PgPool;
use std::time::Duration;

use genq::cost::PriceTable;
use genq::keys::Keyring;
use genq::output::OutputStore;
use genq::provider::images::{ImagesProvider, ImagesSettings};
use genq::provider::images_api::ImagesApi;

#[derive(Args)]
pub struct OpenAiArgs {
    /// Provider base URL (point at `genq sim` for local runs).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
    #[command(flatten)]
    pub urls: super::urls::UrlArgs,
    #[command(flatten)]
    pub output: super::output::OutputArgs,
    /// Requests per minute assumed for a key and model with no configured limit, until learned.
    #[arg(long, env = "GENQ_DEFAULT_RPM", default_value_t = 60.0)]
    pub default_rpm: f64,
    /// Seconds one provider call may take before it counts as a timeout.
    #[arg(long, env = "GENQ_PROVIDER_TIMEOUT_SECS", default_value_t = 120.0)]
    pub provider_timeout_secs: f64,
    /// Most image memory the worker's jobs may hold at once, in MiB: each job
    /// counts the most its answer can weigh (size x n); past the limit,
    /// jobs wait before calling and nothing more is claimed.
    #[arg(long, env = "GENQ_IMAGE_MIB_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub image_mib_in_flight: u64,
    /// Try a job's fallback models when its model has no key free within this many seconds.
    #[arg(long, env = "GENQ_FALLBACK_AFTER_SECS", default_value_t = 30.0)]
    pub fallback_after_secs: f64,
    /// How often a key disabled for quota or an auth error is re-tested with
    /// one real request (it comes back when that succeeds): 30s, 15m, 1h.
    #[arg(long, env = "GENQ_KEY_RETEST", default_value = "15m", value_parser = parse_positive_duration)]
    pub key_retest: Duration,
    /// A price file (TOML, the format of the shipped prices/openai-images.toml)
    /// whose models replace or add to the shipped prices.
    #[arg(long, env = "GENQ_PRICES")]
    pub prices: Option<std::path::PathBuf>,
}

impl OpenAiArgs {
    /// The shipped price table, with `--prices` on top.
    pub fn price_table(&self) -> Result<PriceTable> {
        let Some(path) = &self.prices else {
            return Ok(PriceTable::shipped());
        };
        let name = format!("GENQ_PRICES file {}", path.display());
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
        Ok(PriceTable::with_overrides(&text, &name)?)
    }
}

/// An `ImagesProvider` over `client` (the real one or `DryRun`), writing
/// images to `output`, with `settings`, its keys registered in the database.
pub async fn images_provider<C: ImagesApi>(
    pool: &PgPool,
    client: C,
    output: OutputStore,
    keyring: Keyring,
    settings: ImagesSettings,
) -> Result<ImagesProvider<C>> {
    let provider = ImagesProvider::new(pool.clone(), client, output, keyring, settings);
    provider
        .register_keys()
        .await
        .context("registering API keys")?;
    Ok(provider)
}

/// [`images_provider`] with the environment's keys and the worker's flags.
pub async fn from_env<C: ImagesApi>(
    pool: &PgPool,
    args: &OpenAiArgs,
    client: C,
) -> Result<ImagesProvider<C>> {
    let keys = genq::keys::from_env()?;
    if keys.is_empty() {
        bail!(
            "no API keys: set OPENAI_API_KEYS (name=secret,...), OPENAI_API_KEY or GENQ_KEYS_FILE"
        );
    }
    if !(args.default_rpm.is_finite() && args.default_rpm > 0.0) {
        bail!("--default-rpm must be a positive number");
    }
    let output = args.output.store()?;
    let prices = args.price_table()?;
    tracing::info!(keys = ?keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), base_url = %args.openai_base_url, output = %output.describe(), prices = %prices.describe(), "provider ready");
    let keyring = Keyring::new(keys, args.default_rpm).with_retest(args.key_retest);
    let settings = ImagesSettings {
        urls: args.urls.policy(),
        prices: std::sync::Arc::new(prices),
        ..ImagesSettings::default()
    };
    images_provider(pool, client, output, keyring, settings).await
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match genq::duration::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero, e.g. 15m".into()),
        Err(e) => Err(e.to_string()),
    }
}
