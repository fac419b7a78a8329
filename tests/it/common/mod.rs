//! Shared test set-up: a fresh, migrated database per test on a real
//! PostgreSQL: `DATABASE_URL` if set, else one private cluster for the test binary.
#![allow(dead_code)]

use sqlx::PgPool;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use genq::embedded_pg::EmbeddedPg;

static CLUSTER: OnceLock<EmbeddedPg> = OnceLock::new();

/// The server tests run against: `DATABASE_URL`, or the private cluster.
fn server_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    CLUSTER
        .get_or_init(|| EmbeddedPg::start().expect("starting a private PostgreSQL cluster"))
        .url()
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    name: String,
    server: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = server_url();
        let name = format!("genq_test_{}", uuid::Uuid::new_v4().simple());
        let admin = genq::db::connect(&server, 1)
            .await
            .expect("connecting to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("creating the test database");
        admin.close().await;
        let url = with_database(&server, &name);
        let pool = genq::db::connect(&url, 20)
            .await
            .expect("connecting to the test database");
        genq::store::migrate::run(&pool).await.expect("migrating");
        TestDb {
            pool,
            url,
            name,
            server,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let admin = genq::db::connect(&server, 1).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&admin)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// Polls `check` until it returns true; panics after `timeout` with `what`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Number of jobs in `state`.
pub async fn count_state(pool: &PgPool, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = $1")
        .bind(state)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Inserts `n` jobs with plain SQL, as a producer would.
pub async fn insert_jobs(pool: &PgPool, n: i32, params: serde_json::Value) {
    sqlx::query("INSERT INTO genq.jobs (prompt, params) SELECT 'job ' || i, $2 FROM generate_series(1, $1) i")
        .bind(n)
        .bind(params)
        .execute(pool)
        .await
        .unwrap();
}
pub mod rig;

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
