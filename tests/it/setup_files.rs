//! The setup people copy works: `genq worker` started with exactly the
//! environment `.env.example` gives (`cp .env.example .env`), and with the
//! compose file's `worker` service resolved the way `docker compose` resolves
//! it from that `.env`, runs a job through `genq sim`.
//!
//! Only what names a place on the user's machine is replaced: the database
//! URL, the provider's base URL (the sim), and for compose the container's
//! output directory and metrics address. Secrets stay as the files give them;
//! the sim accepts exactly those.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use genq_sim::{Sim, SimConfig, SimKey};
use genq_testkit::{ChildGuard, TestDb, wait_until};
use yaml_rust2::YamlLoader;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// `.env.example` as `docker compose` and dotenv read it: `KEY=value` lines.
fn env_example() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Resolves compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` from `env`.
fn interpolate(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let expr = &rest[start + 2..end];
        let (name, fallback) = match expr.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expr.split(":?").next().unwrap(), None),
        };
        let set = env.get(name).filter(|v| !v.is_empty());
        match (set, fallback) {
            (Some(v), _) => out.push_str(v),
            (None, Some(default)) => out.push_str(default),
            (None, None) => panic!("compose would refuse: {name} is unset in .env"),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The compose `worker` service's environment, resolved from `.env.example`.
fn compose_worker_env() -> BTreeMap<String, String> {
    let dotenv = env_example();
    let doc = &YamlLoader::load_from_str(&read("docker-compose.yml")).unwrap()[0];
    doc["services"]["worker"]["environment"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let raw = match v.as_str() {
                Some(s) => s.to_string(),
                None => v.as_i64().map(|n| n.to_string()).unwrap_or_default(),
            };
            (k.as_str().unwrap().to_string(), interpolate(&raw, &dotenv))
        })
        .collect()
}

/// A sim that knows the placeholder secrets `.env.example` ships with.
async fn sim_for(env: &BTreeMap<String, String>) -> (Sim, String) {
    let keys = genq::keys::parse_env_keys(&env["OPENAI_API_KEYS"]).unwrap();
    assert!(!keys.is_empty(), "the example names keys");
    let sim = Sim::new(SimConfig {
        keys: keys
            .iter()
            .map(|k| SimKey::new(k.secret.expose(), 600))
            .collect(),
        ..SimConfig::default()
    });
    let (base_url, _stop) = genq_testkit::rig::serve_sim(&sim).await;
    (sim, base_url)
}

/// Starts `genq worker` with `env` and nothing else (a clean environment and
/// a directory of its own, so no `.env` of the developer's is read), puts a
/// job in, and waits for it to succeed through the sim.
async fn a_job_succeeds_with(env: BTreeMap<String, String>, dir: &Path, db: &TestDb) -> ChildGuard {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_genq"));
    cmd.arg("worker")
        .env_clear()
        .envs(&env)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    let mut worker = ChildGuard(cmd.spawn().unwrap());
    sqlx::query("INSERT INTO genq.jobs (prompt) VALUES ('a lighthouse at dusk')")
        .execute(&db.pool)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if genq_testkit::count_state(&db.pool, "succeeded").await == 1 {
            return worker;
        }
        if let Some(status) = worker.0.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            worker
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("genq worker exited ({status}) with the documented environment:\n{stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job did not succeed with the documented environment"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("genq-setup-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_worker_starts_with_the_env_example() {
    let db = TestDb::new().await;
    let mut env = env_example();
    let (_sim, base_url) = sim_for(&env).await;
    env.insert("DATABASE_URL".into(), db.url.clone());
    env.insert("OPENAI_BASE_URL".into(), base_url);
    let dir = scratch_dir();
    let _worker = a_job_succeeds_with(env, &dir, &db).await;
    // GENQ_OUTPUT_DIR=./genq-output: relative to where the worker runs.
    assert!(dir.join("genq-output").is_dir());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_worker_starts_with_the_compose_worker_service() {
    let db = TestDb::new().await;
    let mut env = compose_worker_env();
    assert_eq!(
        env.get("GENQ_KEYS_FILE").map(String::as_str),
        Some(""),
        "the compose file passes an empty keys file, as .env.example leaves it"
    );
    let (_sim, base_url) = sim_for(&env).await;
    let dir = scratch_dir();
    env.insert("DATABASE_URL".into(), db.url.clone());
    env.insert("OPENAI_BASE_URL".into(), base_url);
    env.insert(
        "GENQ_OUTPUT_DIR".into(),
        dir.join("output").display().to_string(),
    );
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = metrics.local_addr().unwrap().port();
    drop(metrics);
    env.insert("GENQ_METRICS_LISTEN".into(), format!("127.0.0.1:{port}"));
    let _worker = a_job_succeeds_with(env, &dir, &db).await;
    wait_until(Duration::from_secs(5), "the worker's /metrics", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
