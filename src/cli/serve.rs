//! `genq serve`: the HTTP API until SIGTERM/SIGINT.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use genq::UrlPolicy;
use genq::api::{ApiState, check_listen, check_metrics_listen};
use genq::output::OutputStore;

use super::db::{DbArgs, connect_migrated};
use super::shutdown::on_signal;

/// Flags of `genq serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on. Beyond loopback a token is required.
    #[arg(long, env = "GENQ_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// If set, requests need `Authorization: Bearer <token>` (`/healthz` stays open).
    #[arg(long, env = "GENQ_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// `/metrics` needs the token too when listening beyond loopback.
    #[arg(long, env = "GENQ_METRICS_REQUIRE_TOKEN", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub metrics_require_token: bool,
    /// Where the workers write images, served at `/v1/jobs/{id}/images/{n}`.
    #[command(flatten)]
    pub output: super::output::OutputArgs,
    #[command(flatten)]
    pub urls: super::urls::UrlArgs,
}

/// Applies migrations, then serves until SIGTERM/SIGINT.
pub async fn run(args: ServeArgs) -> Result<()> {
    let api = Api::check(args.listen, args.api_token, args.metrics_require_token)?
        .with_images(args.output.store()?)
        .with_urls(args.urls.policy());
    genq::metrics::install();
    let pool = connect_migrated(&args.db.database_url, 16).await?;
    let served = api.start(pool, on_signal()).await?;
    served.await??;
    tracing::info!("HTTP API stopped");
    Ok(())
}

/// The HTTP API's settings, checked before anything connects: the one way
/// `genq serve` and `genq run` start the API.
pub struct Api {
    listen: SocketAddr,
    token: Option<String>,
    metrics_need_token: bool,
    images: Option<OutputStore>,
    urls: UrlPolicy,
}

impl Api {
    /// Refuses a listener beyond loopback without a token (and `/metrics`
    /// beyond loopback without one when `metrics_require_token`). A blank
    /// token counts as none.
    pub fn check(
        listen: SocketAddr,
        token: Option<String>,
        metrics_require_token: bool,
    ) -> Result<Api> {
        let token = token.filter(|t| !t.trim().is_empty());
        check_listen(listen, token.as_deref()).map_err(anyhow::Error::msg)?;
        let metrics_need_token =
            check_metrics_listen(listen, token.as_deref(), metrics_require_token)
                .map_err(anyhow::Error::msg)?;
        Ok(Api {
            listen,
            token,
            metrics_need_token,
            images: None,
            urls: UrlPolicy::default(),
        })
    }

    /// Serves the images in `store` (where the workers write them).
    pub fn with_images(mut self, store: OutputStore) -> Api {
        self.images = Some(store);
        self
    }

    /// Which input URLs `POST /v1/jobs` accepts (`--allow-private-urls`).
    pub fn with_urls(mut self, urls: UrlPolicy) -> Api {
        self.urls = urls;
        self
    }

    /// Binds the listener and serves on `pool` until `shutdown` is
    /// cancelled; the task ends with the server's result.
    pub async fn start(
        self,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<Result<()>>> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("listening on {} (GENQ_LISTEN)", self.listen))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            auth = self.token.is_some(),
            metrics_auth = self.metrics_need_token,
            "HTTP API listening"
        );
        let mut state = ApiState::new(pool, self.token)
            .with_metrics_token(self.metrics_need_token)
            .with_urls(self.urls);
        if let Some(images) = self.images {
            state = state.with_images(images);
        }
        Ok(tokio::spawn(async move {
            genq::api::serve(listener, state, shutdown)
                .await
                .context("serving HTTP")
        }))
    }
}
