//! A real S3-compatible server for tests: the server mode of moto (PyPI
//! `moto[server]`), started on a free loopback port, one per test, and
//! killed when dropped. Never an in-process imitation of the S3 API.
//!
//! The binary is `MOTO_SERVER` if set, else `target/moto/bin/moto_server`,
//! installed there (a Python virtual environment, from PyPI) the first time
//! a test needs it; `.ci/run` installs it up front.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use genq::output::OutputStore;
use object_store::aws::AmazonS3Builder;

use crate::ChildGuard;

/// The moto versions the tests are written against.
pub const MOTO_REQUIREMENT: &str = "moto[server]>=5,<6";

/// A running moto server.
pub struct MotoServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _child: ChildGuard,
}

impl MotoServer {
    /// Starts a server and waits until it answers.
    pub async fn start() -> MotoServer {
        let binary = moto_binary();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let server = MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: ChildGuard(child),
        };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if http.get(&server.endpoint).send().await.is_ok() {
                return server;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not answer on {} within 30 s",
                server.endpoint
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates bucket `name`.
    pub async fn create_bucket(&self, name: &str) {
        let resp = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("creating a bucket");
        assert!(
            resp.status().is_success(),
            "creating bucket {name}: {}",
            resp.status()
        );
    }

    /// A client configuration for this server (moto takes any credentials).
    pub fn builder(&self) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("genq-test-key")
            .with_secret_access_key("genq-test-secret")
    }

    /// The `AWS_*` settings a genq process would be given for this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "genq-test-key"),
            ("AWS_SECRET_ACCESS_KEY", "genq-test-secret"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    }

    /// An output store writing to `url` (`s3://<bucket>/<prefix>`) on this server.
    pub fn output(&self, url: &str) -> OutputStore {
        OutputStore::s3(url, self.env()).expect("an S3 output store")
    }
}

/// The moto server binary, installed on first use.
fn moto_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("MOTO_SERVER") {
                return bin.into();
            }
            let venv = target_dir().join("moto");
            let bin = venv.join("bin/moto_server");
            let marker = venv.join(".installed");
            if !marker.exists() {
                install(&venv);
                std::fs::write(&marker, MOTO_REQUIREMENT).expect("marking moto installed");
            }
            bin
        })
        .clone()
}

/// `target/` of the running test (`target/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .nth(3)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf()
}

fn install(venv: &std::path::Path) {
    let run = |cmd: &mut Command| {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed; install moto by hand (pip install '{MOTO_REQUIREMENT}') \
             and set MOTO_SERVER to its moto_server: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let _ = std::fs::remove_dir_all(venv);
    run(Command::new("python3").arg("-m").arg("venv").arg(venv));
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        MOTO_REQUIREMENT,
    ]));
}
