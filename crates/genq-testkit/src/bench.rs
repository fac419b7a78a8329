//! What every benchmark needs besides [`crate::TestDb`]: a scratch database
//! with counters for figures, `genq worker` processes whose memory can be
//! read, and the benchmark's `name=value` arguments.

use sqlx::PgPool;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::TestDb;

/// A migrated database of its own for one benchmark, dropped at the end.
pub struct Scratch {
    pub pool: PgPool,
    pub url: String,
    db: TestDb,
}

impl Scratch {
    pub async fn new(tag: &str) -> Scratch {
        let db = TestDb::named(tag, 4).await;
        Scratch {
            pool: db.pool.clone(),
            url: db.url.clone(),
            db,
        }
    }

    /// Drops the database.
    pub async fn finish(self) {
        self.pool.close().await;
        drop(self.db);
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
        .bind(self.db.name())
        .fetch_one(&self.db.admin().await)
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
        let mut cmd = Command::new(crate::process::genq_binary());
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

/// `name=value` from the benchmark's arguments, else `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
