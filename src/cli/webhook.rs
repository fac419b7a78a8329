//! The worker's webhook flags: the default receivers (`GENQ_WEBHOOK_URL`),
//! the signing secret (`GENQ_WEBHOOK_SECRET`) and when to give up
//! (`GENQ_WEBHOOK_GIVE_UP`).

use anyhow::{Context, Result, bail};
use clap::Args;
use sqlx::PgPool;
use std::time::Duration;

use genq::UrlPolicy;
use genq::webhook::{WebhookConfig, WebhookSecret};

#[derive(Args, Clone)]
pub struct WebhookArgs {
    /// Where completion webhooks go for jobs without a callback_url: a URL for
    /// every queue, or `queue=url` pairs separated by commas (`*=url` for the rest).
    #[arg(long, env = "GENQ_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The secret webhooks are signed with (`whsec_<base64>`, or 16+ bytes of text).
    #[arg(long, env = "GENQ_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// A webhook without a 2xx answer this long after its job ended is given up.
    #[arg(long, env = "GENQ_WEBHOOK_GIVE_UP", default_value = "24h", value_parser = parse_duration)]
    pub webhook_give_up: Duration,
}

impl WebhookArgs {
    /// Writes the default URLs (when given) and returns how this worker
    /// delivers (when it has the secret).
    pub async fn apply(&self, pool: &PgPool, urls: UrlPolicy) -> Result<Option<WebhookConfig>> {
        if let Some(spec) = self.webhook_url.as_deref().filter(|s| !s.trim().is_empty()) {
            let defaults = parse_defaults(spec)?;
            for (queue, url) in &defaults {
                genq::input::address::parse(url)
                    .map_err(|e| anyhow::anyhow!("GENQ_WEBHOOK_URL for {queue}: the URL {e}"))?;
            }
            if self.webhook_secret.is_none() {
                bail!(
                    "GENQ_WEBHOOK_URL is set but GENQ_WEBHOOK_SECRET is not: webhooks are always signed"
                );
            }
            genq::store::webhooks::set_defaults(pool, &defaults)
                .await
                .context("writing the default webhook URLs")?;
        }
        let Some(secret) = self.webhook_secret.as_deref() else {
            return Ok(None);
        };
        let mut config = WebhookConfig::new(WebhookSecret::parse(secret)?);
        config.give_up_after = self.webhook_give_up;
        config.urls = urls;
        Ok(Some(config))
    }
}

/// `url` (for `*`), or `queue=url,…`.
fn parse_defaults(spec: &str) -> Result<Vec<(String, String)>> {
    if !spec.contains('=') || spec.trim_start().starts_with("http") {
        return Ok(vec![("*".into(), spec.trim().to_string())]);
    }
    spec.split(',')
        .map(|pair| match pair.split_once('=') {
            Some((queue, url)) if !queue.trim().is_empty() => {
                Ok((queue.trim().to_string(), url.trim().to_string()))
            }
            _ => bail!("GENQ_WEBHOOK_URL {pair:?} is not queue=url; e.g. sprites=https://hooks.example.com/genq"),
        })
        .collect()
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    genq::duration::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_urls_are_one_url_or_queue_pairs() {
        let cases = [
            ("https://h.test/a", vec![("*", "https://h.test/a")]),
            ("https://h.test/a?x=1", vec![("*", "https://h.test/a?x=1")]),
            (
                "sprites=https://h.test/s, *=https://h.test/all",
                vec![("sprites", "https://h.test/s"), ("*", "https://h.test/all")],
            ),
        ];
        for (spec, want) in cases {
            let got = super::parse_defaults(spec).unwrap();
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(q, u)| (q.to_string(), u.to_string()))
                .collect();
            assert_eq!(got, want, "{spec}");
        }
        assert!(super::parse_defaults("a=https://x, nourl").is_err());
    }
}
