//! A test rig for the real provider path: `genq sim` on loopback, a fresh
//! database, and workers running `ImagesProvider` through async-openai.

use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use genq::UrlPolicy;
use genq::keys::ApiKey;
use genq::keys::Keyring;
use genq::output::OutputStore;
use genq::provider::images::{ImagesProvider, ImagesSettings};
use genq::provider::images_api::ImagesApi;
use genq::provider::openai::ImagesClient;
use genq::worker::{Worker, WorkerConfig, WorkerReport};
use genq_sim::{RequestRecord, Sim, SimConfig, SimKey};

use crate::TestDb;

pub struct Rig {
    pub db: TestDb,
    pub sim: Sim,
    pub base_url: String,
    pub output: std::path::PathBuf,
    /// Where the rig's workers write images: `output` unless a test points
    /// it elsewhere (an S3 server).
    pub images: OutputStore,
    /// Which input URLs the rig's workers fetch: private addresses too by
    /// default, since tests serve their images on loopback.
    pub urls: UrlPolicy,
    stop_sim: CancellationToken,
}

impl Rig {
    pub async fn new(keys: Vec<SimKey>) -> Rig {
        Rig::with_config(SimConfig {
            keys,
            ..SimConfig::default()
        })
        .await
    }

    pub async fn with_config(config: SimConfig) -> Rig {
        let db = TestDb::new().await;
        let sim = Sim::new(config);
        let (base_url, stop_sim) = serve_sim(&sim).await;
        let output =
            std::env::temp_dir().join(format!("genq-test-out-{}", uuid::Uuid::new_v4().simple()));
        Rig {
            db,
            sim,
            base_url,
            images: OutputStore::new(&output),
            output,
            urls: UrlPolicy::ALLOW_PRIVATE,
            stop_sim,
        }
    }

    pub fn provider(&self, keys: Vec<ApiKey>) -> ImagesProvider {
        self.provider_with_timeout(keys, Duration::from_secs(10))
    }

    /// A provider whose calls time out after `timeout`.
    pub fn provider_with_timeout(&self, keys: Vec<ApiKey>, timeout: Duration) -> ImagesProvider {
        self.provider_from(Keyring::new(keys, 60.0), timeout)
    }

    /// A provider over `keyring`, whose calls time out after `timeout`.
    pub fn provider_from(&self, keyring: Keyring, timeout: Duration) -> ImagesProvider {
        self.provider_over(ImagesClient::new(&self.base_url, timeout), keyring)
    }

    /// The one place tests wire an `ImagesProvider`: over `client` (the
    /// real one at the sim, or `DryRun`), with `keyring`, the rig's output
    /// store and a short backoff after a bare 429.
    pub fn provider_over<C: ImagesApi>(&self, client: C, keyring: Keyring) -> ImagesProvider<C> {
        let settings = ImagesSettings {
            health: genq::keys::health::HealthSettings {
                rate_limit_backoff: genq::retry::Backoff {
                    base: Duration::from_millis(200),
                    max: Duration::from_secs(5),
                },
                ..Default::default()
            },
            urls: self.urls,
            ..Default::default()
        };
        ImagesProvider::new(
            self.db.pool.clone(),
            client,
            self.images.clone(),
            keyring,
            settings,
        )
    }

    /// Starts a worker over `keys`; cancel the token to stop it.
    pub async fn worker(
        &self,
        keys: Vec<ApiKey>,
        concurrency: usize,
    ) -> (JoinHandle<WorkerReport>, CancellationToken) {
        self.worker_with(self.provider(keys), concurrency).await
    }

    /// Starts a worker over `keys` taking jobs of `queues`; cancel the token to stop it.
    pub async fn worker_on(
        &self,
        queues: &[&str],
        keys: Vec<ApiKey>,
        concurrency: usize,
    ) -> (JoinHandle<WorkerReport>, CancellationToken) {
        let queues = queues.iter().map(|q| q.to_string()).collect();
        self.spawn(self.provider(keys), concurrency, queues).await
    }

    /// Starts a worker over `provider`; cancel the token to stop it.
    pub async fn worker_with<C: ImagesApi>(
        &self,
        provider: ImagesProvider<C>,
        concurrency: usize,
    ) -> (JoinHandle<WorkerReport>, CancellationToken) {
        self.spawn(provider, concurrency, WorkerConfig::default().queues)
            .await
    }

    async fn spawn<C: ImagesApi>(
        &self,
        provider: ImagesProvider<C>,
        concurrency: usize,
        queues: Vec<String>,
    ) -> (JoinHandle<WorkerReport>, CancellationToken) {
        provider.register_keys().await.unwrap();
        let config = WorkerConfig {
            queues,
            concurrency,
            poll_interval: Duration::from_millis(50),
            reap_interval: Duration::from_millis(500),
            grace: Duration::from_secs(2),
            backoff: genq::retry::Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            ..WorkerConfig::default()
        };
        let stop = CancellationToken::new();
        let handle =
            tokio::spawn(Worker::new(self.db.pool.clone(), config, provider).run(stop.clone()));
        (handle, stop)
    }

    /// Backdates job `id`'s end by two days, then runs a worker that prunes
    /// what is older than a day every 100 ms (deleting images from
    /// [`Rig::images`]); cancel the token to stop it.
    pub async fn prune_old(&self, id: uuid::Uuid) -> (JoinHandle<WorkerReport>, CancellationToken) {
        sqlx::query("UPDATE genq.jobs SET finished_at = now() - interval '2 days' WHERE id = $1")
            .bind(id)
            .execute(&self.db.pool)
            .await
            .expect("backdating a job");
        let day = Duration::from_secs(24 * 3600);
        let config = WorkerConfig {
            retention: Some(genq::worker::Retention {
                succeeded: day,
                failed: day,
                every: Duration::from_millis(100),
            }),
            images: Some(self.images.clone()),
            ..WorkerConfig::default()
        };
        let stop = CancellationToken::new();
        let provider = self.provider(keys(&[("a", "sk-a")]));
        let handle =
            tokio::spawn(Worker::new(self.db.pool.clone(), config, provider).run(stop.clone()));
        (handle, stop)
    }

    /// Runs `job` with one attempt through key `a` (`sk-a`) against the
    /// provider at `base_url` until it fails: the job and its attempts.
    pub async fn fail_one_job(
        mut self,
        base_url: String,
        job: genq::job::NewJob,
    ) -> (genq::job::Job, Vec<genq::job::Attempt>) {
        self.base_url = base_url;
        let job = genq::job::NewJob {
            max_attempts: Some(1),
            ..job
        };
        let id = genq::store::jobs::enqueue(&self.db.pool, &job)
            .await
            .unwrap()
            .id();
        let (worker, stop) = self.worker(keys(&[("a", "sk-a")]), 2).await;
        crate::wait_until(Duration::from_secs(30), "the job to fail", || async {
            crate::count_state(&self.db.pool, "failed").await == 1
        })
        .await;
        stop.cancel();
        worker.await.unwrap();
        let job = genq::store::jobs::get(&self.db.pool, id)
            .await
            .unwrap()
            .unwrap();
        let attempts = genq::store::jobs::attempts(&self.db.pool, id)
            .await
            .unwrap();
        (job, attempts)
    }

    /// Requests the sim received for `key_id`, in order.
    pub fn log_for(&self, key_id: &str) -> Vec<RequestRecord> {
        self.sim
            .log()
            .into_iter()
            .filter(|r| r.key_id == key_id)
            .collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_sim.cancel();
        let _ = std::fs::remove_dir_all(&self.output);
    }
}

/// Keys for genq, by name, with the given secrets and no configured limits.
/// Serves `sim` on a free loopback port: its base URL, and the token that stops it.
pub async fn serve_sim(sim: &Sim) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, stop.clone()));
    (base_url, stop)
}

/// Keys for genq, by name (`name=secret`), with no configured limits.
pub fn keys(named: &[(&str, &str)]) -> Vec<ApiKey> {
    let list: Vec<String> = named.iter().map(|(n, s)| format!("{n}={s}")).collect();
    genq::keys::parse_env_keys(&list.join(",")).unwrap()
}

/// The sim's id for a secret.
pub fn sim_id(secret: &str) -> String {
    genq_sim::key_id(secret)
}

/// Pairs of 429s in a row on one key (the second means a wait was misjudged).
pub fn consecutive_429s(log: &[RequestRecord]) -> usize {
    let mut last: std::collections::HashMap<&str, u16> = std::collections::HashMap::new();
    let mut pairs = 0;
    for r in log {
        if r.status == 429 && last.get(r.key_id.as_str()) == Some(&429) {
            pairs += 1;
        }
        last.insert(&r.key_id, r.status);
    }
    pairs
}

/// The wall-clock time of instant `ns` on the sim's clock, read through `r` (which arrived
/// at `r.at`, i.e. `r.arrived_ns`): to compare the sim's deadlines with database times.
pub fn sim_instant_at(r: &RequestRecord, ns: u64) -> chrono::DateTime<chrono::Utc> {
    let offset = i64::try_from(ns).unwrap() - i64::try_from(r.arrived_ns).unwrap();
    r.at + chrono::Duration::nanoseconds(offset)
}
