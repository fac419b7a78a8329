//! Databases for tests and benchmarks, made one way: a fresh, migrated
//! database of its own on a real PostgreSQL server, `DATABASE_URL`'s if
//! set, else one private cluster per process ([`genq_pg::EmbeddedPg`]).

use sqlx::PgPool;
use std::sync::OnceLock;

use genq_pg::EmbeddedPg;

static CLUSTER: OnceLock<EmbeddedPg> = OnceLock::new();

/// The server tests run against: `DATABASE_URL`, or the private cluster.
pub fn server_url() -> String {
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
    /// A database for one test, with a pool of 20 connections.
    pub async fn new() -> TestDb {
        TestDb::named("test", 20).await
    }

    /// A database named `genq_<tag>_<random>`, migrated, with a pool of
    /// at most `connections`.
    pub async fn named(tag: &str, connections: u32) -> TestDb {
        let server = server_url();
        let name = format!("genq_{tag}_{}", uuid::Uuid::new_v4().simple());
        let admin = genq::db::connect(&server, 1)
            .await
            .expect("connecting to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("creating the test database");
        admin.close().await;
        let url = with_database(&server, &name);
        let pool = genq::db::connect(&url, connections)
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

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool on the server's maintenance database, for statistics.
    pub async fn admin(&self) -> PgPool {
        genq::db::connect(&self.server, 1)
            .await
            .expect("connecting to the test server")
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
