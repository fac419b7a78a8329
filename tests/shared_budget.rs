//! Two `genq worker` processes share three keys through the buckets in
//! Postgres: with limits configured right, the provider never answers 429
//! and no key ever goes over its limit in any window (the sim's own count).

mod common;

use common::{TestDb, count_state, insert_jobs, wait_until};
use genq::sim::{Sim, SimConfig, SimKey};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use common::ChildGuard as Proc;

#[tokio::test]
async fn two_processes_sharing_three_keys_stay_within_every_limit() {
    let db = TestDb::new().await;
    let secrets = ["sk-one", "sk-two", "sk-three"];
    let sim = Sim::new(SimConfig {
        keys: secrets
            .iter()
            .map(|s| SimKey {
                burst: Some(2),
                ..SimKey::new(*s, 120)
            })
            .collect(),
        ..SimConfig::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(sim.clone().serve(listener, stop.clone()));

    let dir = std::env::temp_dir().join(format!("genq-shared-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys_file = dir.join("keys.toml");
    let mut toml = String::new();
    for (i, s) in secrets.iter().enumerate() {
        toml.push_str(&format!(
            "[[keys]]\nname = \"k{i}\"\nsecret = \"{s}\"\n[keys.limits.\"*\"]\nrequests_per_minute = 120\nburst = 2\n"
        ));
    }
    std::fs::write(&keys_file, toml).unwrap();

    insert_jobs(&db.pool, 36, serde_json::json!({})).await;
    let workers: Vec<Proc> = (0..2)
        .map(|_| {
            Proc(
                Command::new(env!("CARGO_BIN_EXE_genq"))
                    .args(["worker", "--concurrency", "4", "--poll-ms", "100"])
                    .env("DATABASE_URL", &db.url)
                    .env("OPENAI_BASE_URL", &base_url)
                    .env("GENQ_KEYS_FILE", &keys_file)
                    .env("GENQ_OUTPUT_DIR", dir.join("out"))
                    .env_remove("OPENAI_API_KEYS")
                    .env_remove("OPENAI_API_KEY")
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_until(Duration::from_secs(90), "36 jobs to succeed", || async {
        count_state(&db.pool, "succeeded").await == 36
    })
    .await;
    drop(workers);
    stop.cancel();

    let stats = sim.stats();
    assert_eq!(stats.total.ok, 36);
    assert_eq!(stats.total.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.limit_exceeded, 0, "{stats:?}");
    // Both processes did work.
    let workers: i64 = sqlx::query_scalar("SELECT count(DISTINCT worker) FROM genq.attempts")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(workers, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
