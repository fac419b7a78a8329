//! The demo's world: database, simulated provider, keys, workers, jobs.

use anyhow::{Context, Result};
use sqlx::PgPool;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::DemoOptions;
use genq::job::NewJob;
use genq::keys::Keyring;
use genq::keys::{self, ApiKey};
use genq::provider::images::ImagesProvider;
use genq::provider::openai::ImagesClient;
use genq::retry::Backoff;
use genq::worker::{Worker, WorkerConfig};
use genq_pg::EmbeddedPg;
use genq_sim::{KeyBehavior, RetryHeader, Sim, SimConfig, SimKey};

/// Rate genq assumes for keys with no configured limit: deliberately too
/// high, so the demo shows limits being learned from headers and 429s.
const DEMO_DEFAULT_RPM: f64 = 150.0;

pub(super) struct Environment {
    pub pool: PgPool,
    pub database_label: String,
    pub base_url: String,
    pub keys: Vec<ApiKey>,
    pub output_dir: PathBuf,
    pub sim: Sim,
    /// The HTTP API, e.g. `http://127.0.0.1:PORT`.
    pub api_url: String,
    /// Stops the simulated provider and the API.
    stop: CancellationToken,
    _cluster: Option<EmbeddedPg>,
}

/// The provider's side: three working keys with different limits and
/// manners, and one out of quota.
fn sim_config() -> SimConfig {
    SimConfig {
        keys: vec![
            SimKey {
                burst: Some(2),
                ..SimKey::new("sk-demo-alpha", 120)
            },
            SimKey {
                retry_header: RetryHeader::RetryAfterMs,
                send_ratelimit_headers: false,
                burst: Some(2),
                ..SimKey::new("sk-demo-bravo", 90)
            },
            SimKey {
                retry_header: RetryHeader::ResetRequests,
                burst: Some(2),
                ..SimKey::new("sk-demo-charlie", 60)
            },
            SimKey {
                behavior: KeyBehavior::InsufficientQuota,
                ..SimKey::new("sk-demo-broke", 60)
            },
        ],
        fail_rate_5xx: 0.03,
        latency: Duration::from_millis(250),
        seed: Some(7),
        ..SimConfig::default()
    }
}

/// genq's side: alpha's limit is configured; bravo's and charlie's are
/// not; broke is out of quota and stranger is unknown to the provider.
const KEYS_FILE: &str = r#"
[[keys]]
name = "alpha"
secret = "sk-demo-alpha"
[keys.limits."*"]
requests_per_minute = 120

[[keys]]
name = "bravo"
secret = "sk-demo-bravo"

[[keys]]
name = "charlie"
secret = "sk-demo-charlie"

[[keys]]
name = "broke"
secret = "sk-demo-broke"

[[keys]]
name = "stranger"
secret = "sk-demo-unknown-to-the-provider"
"#;

impl Environment {
    pub async fn start(options: &DemoOptions) -> Result<Environment> {
        let (cluster, url, database_label) = match &options.database_url {
            Some(url) => (None, url.clone(), "from DATABASE_URL".to_string()),
            None => {
                let pg = tokio::task::spawn_blocking(EmbeddedPg::start).await??;
                let url = pg.url();
                let label = format!("private cluster on 127.0.0.1:{}", pg.port());
                (Some(pg), url, label)
            }
        };
        let pool = genq::db::connect(&url, 24)
            .await
            .context("connecting to Postgres")?;
        genq::store::migrate::run(&pool).await?;
        let sim = Sim::new(sim_config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let stop = CancellationToken::new();
        tokio::spawn(sim.clone().serve(listener, stop.clone()));
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_url = format!("http://{}", api.local_addr()?);
        tokio::spawn(genq::api::serve(
            api,
            genq::api::ApiState::new(pool.clone(), None)
                .with_images(genq::output::OutputStore::new(&options.output_dir)),
            stop.clone(),
        ));
        let keys = keys::parse_keys_file(KEYS_FILE, |_| None)?;
        Ok(Environment {
            pool,
            database_label,
            base_url,
            keys,
            output_dir: options.output_dir.clone(),
            sim,
            api_url,
            stop,
            _cluster: cluster,
        })
    }

    /// A worker over all demo keys, tuned to show retries within the demo.
    pub async fn worker(&self) -> Result<Worker<ImagesProvider>> {
        let provider = crate::cli::provider::images_provider(
            &self.pool,
            ImagesClient::new(&self.base_url, Duration::from_secs(30)),
            genq::output::OutputStore::new(&self.output_dir),
            Keyring::new(self.keys.clone(), DEMO_DEFAULT_RPM),
            genq::provider::images::ImagesSettings::default(),
        )
        .await?;
        let config = WorkerConfig {
            concurrency: 8,
            poll_interval: Duration::from_millis(200),
            backoff: Backoff {
                base: Duration::from_millis(500),
                max: Duration::from_secs(5),
            },
            ..WorkerConfig::default()
        };
        Ok(Worker::new(self.pool.clone(), config, provider))
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.pool.close().await;
        // The private cluster (if any) is stopped and deleted on drop.
    }
}

/// How the demo's jobs got in.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Enqueued {
    pub http: usize,
    pub library: usize,
    pub sql: usize,
    /// The generate → edit pipeline's two jobs, sent over HTTP.
    pub pipeline: Option<Pipeline>,
}

/// A generation and an edit of its image (with an uploaded palette).
#[derive(Debug, Clone, Copy)]
pub(super) struct Pipeline {
    pub generate: Uuid,
    pub edit: Uuid,
}

impl Enqueued {
    pub fn total(&self) -> usize {
        self.http + self.library + self.sql + if self.pipeline.is_some() { 2 } else { 0 }
    }
}

const SUBJECTS: &[&str] = &[
    "a red fox",
    "a ceramic teapot",
    "a knight",
    "a lighthouse",
    "a koi fish",
    "a robot",
    "a cactus",
    "a treasure chest",
];
const STYLES: &[&str] = &[
    "pixel-art sprite",
    "studio product shot",
    "watercolour thumbnail",
    "isometric game tile",
];

fn prompt(i: usize) -> String {
    format!(
        "{}, {}, #{i}",
        SUBJECTS[i % SUBJECTS.len()],
        STYLES[(i / SUBJECTS.len()) % STYLES.len()]
    )
}

/// Enqueues `n` jobs: a third over HTTP (`POST /v1/jobs`), a third through
/// the library, a third with plain SQL; a few are meant to fail.
pub(super) async fn enqueue(env: &Environment, n: usize) -> Result<Enqueued> {
    let mut done = Enqueued::default();
    let client = reqwest::Client::new();
    // Two of the jobs (when there are enough) are a small pipeline.
    let n = if n >= 10 {
        done.pipeline = Some(pipeline(env, &client).await?);
        n - 2
    } else {
        n
    };
    let bad = (n / 50).max(1);
    let sql_count = n / 3;
    let http_count = (n - sql_count) / 2;
    for i in 0..n - sql_count {
        let prompt = if i < bad {
            format!("{} FORBIDDEN", prompt(i))
        } else {
            prompt(i)
        };
        let job = NewJob {
            params: Some(serde_json::json!({"size": "1024x1024", "quality": "low"})),
            ..NewJob::new(prompt)
        };
        if i < http_count {
            let resp = client
                .post(format!("{}/v1/jobs", env.api_url))
                .json(&job)
                .send()
                .await?;
            anyhow::ensure!(
                resp.status().is_success(),
                "POST /v1/jobs answered {}: {}",
                resp.status(),
                resp.text().await?
            );
            done.http += 1;
        } else {
            genq::submit::submit(&env.pool, &job).await?;
            done.library += 1;
        }
    }
    // Plain SQL: defaults fill the rest. The first few carry a size the
    // model does not take: they fail at claim time with a clear message.
    let prompts: Vec<String> = (n - sql_count..n).map(prompt).collect();
    let params: Vec<serde_json::Value> = (0..sql_count)
        .map(|i| {
            if i < bad {
                serde_json::json!({"size": "512x512"})
            } else {
                serde_json::json!({})
            }
        })
        .collect();
    let inserted = genq::store::jobs::insert_plain(&env.pool, &prompts, &params).await?;
    done.sql += inserted as usize;
    Ok(done)
}

/// Submits a generate → edit pipeline at once over HTTP: a knight, then the
/// same knight recoloured with an uploaded palette. The edit waits until
/// the generation has succeeded, then sends its image and the palette.
async fn pipeline(env: &Environment, client: &reqwest::Client) -> Result<Pipeline> {
    let palette = genq_sim::png::solid(64, 64, [40, 90, 200, 255]);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(palette).file_name("palette.png"),
    );
    let upload: serde_json::Value = accepted(
        client
            .post(format!("{}/v1/uploads", env.api_url))
            .multipart(form)
            .send()
            .await?,
        "POST /v1/uploads",
    )
    .await?;
    let post = |body: serde_json::Value| {
        client
            .post(format!("{}/v1/jobs", env.api_url))
            .json(&body)
            .send()
    };
    let generate = accepted(
        post(serde_json::json!({
            "prompt": "a knight, pixel-art sprite, front view",
            "params": {"size": "1024x1024", "quality": "low"},
        }))
        .await?,
        "POST /v1/jobs",
    )
    .await?;
    let generate: Uuid = serde_json::from_value(generate["id"].clone())?;
    let edit = accepted(
        post(serde_json::json!({
            "operation": "edit",
            "prompt": "the same knight in the colours of the second image",
            "inputs": [{"from_job": generate, "index": 0}, {"upload": upload["id"]}],
            "params": {"size": "1024x1024", "quality": "low", "input_fidelity": "high"},
        }))
        .await?,
        "POST /v1/jobs",
    )
    .await?;
    Ok(Pipeline {
        generate,
        edit: serde_json::from_value(edit["id"].clone())?,
    })
}

/// The JSON of a successful answer, or an error with its text.
async fn accepted(resp: reqwest::Response, what: &str) -> Result<serde_json::Value> {
    anyhow::ensure!(
        resp.status().is_success(),
        "{what} answered {}: {}",
        resp.status(),
        resp.text().await?
    );
    Ok(resp.json().await?)
}
