//! What every benchmark needs: a scratch database (on `DATABASE_URL`'s
//! server, else a private cluster), `genq worker` processes, and waiting for
//! jobs to finish.
#![allow(dead_code)]

use sqlx::PgPool;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use genq::embedded_pg::EmbeddedPg;

/// A migrated database of its own, dropped at the end.
pub struct Scratch {
    pub pool: PgPool,
    pub url: String,
    admin: PgPool,
    name: String,
    _cluster: Option<EmbeddedPg>,
}

impl Scratch {
    pub async fn new(tag: &str) -> Scratch {
        let (cluster, server) = match std::env::var("DATABASE_URL") {
            Ok(url) => (None, url),
            Err(_) => {
                let pg = EmbeddedPg::start().expect("starting a private PostgreSQL");
                let url = pg.url();
                (Some(pg), url)
            }
        };
        let admin = genq::db::connect(&server, 1).await.unwrap();
        let name = format!("genq_{tag}_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let url = server
            .rsplit_once('/')
            .map(|(base, _)| format!("{base}/{name}"))
            .unwrap();
        let pool = genq::db::connect(&url, 4).await.unwrap();
        genq::store::migrate::run(&pool).await.unwrap();
        Scratch {
            pool,
            url,
            admin,
            name,
            _cluster: cluster,
        }
    }

    /// Drops the database.
    pub async fn finish(self) {
        self.pool.close().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }

    /// Jobs in `state`.
    pub async fn count(&self, state: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = $1")
            .bind(state)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// True once no job is queued or running. Cheap however many jobs have
    /// finished: both states have a partial index.
    pub async fn drained(&self) -> bool {
        sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM genq.jobs WHERE state = 'queued')
                AND NOT EXISTS (SELECT 1 FROM genq.jobs WHERE state = 'running')",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Transactions committed or rolled back in this database so far (every
    /// statement outside an explicit transaction is one). Statistics are
    /// flushed when a backend exits, so this closes the pool first, waits for
    /// the flush, counts, and hands back the database with a fresh pool.
    /// Read it with the workers stopped.
    pub async fn transactions(self) -> (Scratch, i64) {
        self.pool.close().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n = sqlx::query_scalar(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&self.name)
        .fetch_one(&self.admin)
        .await
        .unwrap();
        let pool = genq::db::connect(&self.url, 4).await.unwrap();
        (Scratch { pool, ..self }, n)
    }

    /// Waits until `n` jobs have succeeded, polling every `every`.
    pub async fn wait_succeeded(&self, n: i64, every: Duration) {
        while self.count("succeeded").await < n {
            tokio::time::sleep(every).await;
        }
    }
}

/// A `genq worker` process; SIGTERM and wait on drop.
pub struct WorkerProcess(pub Child, std::path::PathBuf);

impl WorkerProcess {
    /// Starts `genq worker` with `args` and extra environment against `url`, in an empty
    /// directory of its own so `dotenvy` (which looks in the current directory and its
    /// ancestors) reads no developer's `.env` into what is measured.
    pub fn start(url: &str, args: &[&str], env: &[(&str, String)]) -> WorkerProcess {
        let dir = std::env::temp_dir().join(format!(
            "genq-bench-worker-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("creating the worker's directory");
        if let Some(found) = dir.ancestors().map(|d| d.join(".env")).find(|f| f.exists()) {
            panic!(
                "{} would be read by the benchmark's workers",
                found.display()
            );
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_genq"));
        cmd.current_dir(&dir)
            .arg("worker")
            .args(args)
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .env_remove("OPENAI_API_KEYS")
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        WorkerProcess(cmd.spawn().expect("starting genq worker"), dir)
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Serves `sim` on a free loopback port: its base URL (with `/v1`), and the
/// token that stops it.
pub async fn serve_sim(sim: &genq::sim::Sim) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, stop.clone()));
    (base_url, stop)
}

/// `name=value` from the benchmark's arguments, else `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
