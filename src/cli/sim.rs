//! `genq sim`: the OpenAI-compatible simulated Images API on loopback.

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, env = "GENQ_SIM_LISTEN", default_value = "127.0.0.1:8089")]
    pub listen: std::net::SocketAddr,
    /// TOML file with the keys, limits and faults (see the `genq-sim` crate docs); default: the demo set.
    #[arg(long, env = "GENQ_SIM_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

/// Serves the sim until SIGTERM/SIGINT.
pub async fn run(args: SimArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => genq_sim::load_config(path)?,
        None => genq_sim::SimConfig::demo(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "genq sim: OpenAI-compatible Images API at http://{addr}/v1 ({} keys); set OPENAI_BASE_URL=http://{addr}/v1",
        config.keys.len()
    );
    genq_sim::Sim::new(config)
        .serve(listener, super::shutdown::on_signal())
        .await?;
    Ok(())
}
