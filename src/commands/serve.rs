//! `genq serve`: the HTTP API until SIGTERM/SIGINT.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use genq::api::{ApiState, check_listen, check_metrics_listen};

use crate::DbArgs;

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
}

/// Applies migrations, then serves until `shutdown` is cancelled.
pub async fn run(args: ServeArgs, shutdown: CancellationToken) -> Result<()> {
    let token = args.api_token.filter(|t| !t.trim().is_empty());
    check_listen(args.listen, token.as_deref()).map_err(anyhow::Error::msg)?;
    let metrics_need_token =
        check_metrics_listen(args.listen, token.as_deref(), args.metrics_require_token)
            .map_err(anyhow::Error::msg)?;
    genq::metrics::install();
    let pool = super::connect_migrated(&args.db.database_url, 16).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} (GENQ_LISTEN)", args.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        auth = token.is_some(),
        metrics_auth = metrics_need_token,
        "HTTP API listening"
    );
    genq::api::serve(
        listener,
        ApiState::new(pool, token).with_metrics_token(metrics_need_token),
        shutdown,
    )
    .await
    .context("serving HTTP")?;
    tracing::info!("HTTP API stopped");
    Ok(())
}
