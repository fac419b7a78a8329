//! Errors carry their root cause: what failed and where, not the wrapper's
//! "error sending request" or "pool timed out".
//!
//! - A provider that refuses connections, shows a certificate nobody
//!   trusts, or does not speak TLS on an `https` URL, shows the cause and
//!   the endpoint in the job's `last_error` and in its attempt.
//! - A command whose database cannot be reached says within 3 s which
//!   host and port it tried and why, never the password.

use genq::job::NewJob;
use genq_sim::SimKey;
use genq_testkit::rig::Rig;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Runs one job against `base_url` until it fails: its `last_error` and
/// its attempt's error.
async fn fail_one_job(rig: Rig, base_url: String) -> (String, String) {
    let (job, attempts) = rig.fail_one_job(base_url, NewJob::new("a fox")).await;
    let attempt = attempts
        .iter()
        .find_map(|a| a.error.clone())
        .expect("the attempt records its error");
    (job.last_error.unwrap(), attempt)
}

#[tokio::test]
async fn a_refused_connection_names_the_cause_and_the_endpoint() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let port = closed_port();
    let (last_error, attempt) = fail_one_job(rig, format!("http://127.0.0.1:{port}/v1")).await;
    for error in [&last_error, &attempt] {
        assert!(
            error.contains("Connection refused") && error.contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_named() {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    // A self-signed certificate for 127.0.0.1 (tests/data, valid until 2126):
    // TLS works, but no root the client trusts signed it.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let certs =
        rustls::pki_types::CertificateDer::pem_file_iter(format!("{data}/untrusted-cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(format!("{data}/untrusted-key.pem"))
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = acceptor.accept(socket).await;
        }
    });
    let (last_error, attempt) = fail_one_job(rig, format!("https://127.0.0.1:{port}/v1")).await;
    for error in [&last_error, &attempt] {
        assert!(
            error.contains("invalid peer certificate: UnknownIssuer")
                && error.contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_tls_failure_names_tls() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    // Plain HTTP where the URL says https: the TLS handshake fails.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let (last_error, _) = fail_one_job(rig, format!("https://127.0.0.1:{port}/v1")).await;
    assert!(
        last_error.contains("InvalidContentType")
            && last_error.contains(&format!("127.0.0.1:{port}")),
        "the TLS cause is missing: {last_error}"
    );
}

fn genq_jobs_list(database_url: &str) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = genq_testkit::process::genq(&genq_testkit::process::scratch_dir("root-cause"))
        .args(["jobs", "list"])
        .env("DATABASE_URL", database_url)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[tokio::test]
async fn a_command_says_where_the_database_is_not_and_why() {
    let port = closed_port();
    let (out, _) = genq_jobs_list(&format!("postgres://genq:hunter2@127.0.0.1:{port}/genq"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}/genq"))
            && stderr.contains("Connection refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");

    // A server that accepts and never answers: the command gives up and says so.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let url = format!("postgres://genq@127.0.0.1:{port}/genq");
    let (out, took) = tokio::task::spawn_blocking(move || genq_jobs_list(&url))
        .await
        .unwrap();
    held.abort();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach PostgreSQL at 127.0.0.1:{port}/genq: no answer within 3 s"
        )),
        "{stderr}"
    );
    // The pool's own timeout is 10 s; the first connection's is 3 s.
    assert!(took < Duration::from_secs(9), "took {took:?}");
}
