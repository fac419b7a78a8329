//! `genq run`: the HTTP API and a worker in one process, one shutdown.

use anyhow::Result;
use clap::Args;

use super::serve::Api;
use super::shutdown::on_signal;
use super::worker::{WorkerArgs, run_worker, worker_pool};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// HTTP address. Beyond loopback a token (GENQ_API_TOKEN) is required.
    #[arg(long, env = "GENQ_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
}

/// Serves the API and runs a worker until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<()> {
    let worker = &args.worker;
    let api = Api::check(
        args.listen,
        worker.api_token.clone(),
        worker.metrics_require_token,
    )?
    .with_images(worker.openai.output.store()?)
    .with_urls(worker.openai.urls.policy());
    let pool = worker_pool(worker).await?;
    let shutdown = on_signal();
    let served = api.start(pool.clone(), shutdown.clone()).await?;
    let worked = run_worker(pool, args.worker, shutdown.clone()).await;
    shutdown.cancel();
    served.await??;
    worked
}
