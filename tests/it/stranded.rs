//! Nothing stranded: a job whose claim reply was lost, or whose completion
//! the database refuses, neither stays `running` for as long as the worker
//! lives nor holds other jobs back.
//!
//! - The heartbeat renews only the jobs the worker tracks, so a row it
//!   holds without knowing it (the claim's reply never arrived) lapses and
//!   is reaped within one lease, then runs once more.
//! - Outside text is made storable (a provider message with `\u0000`), and
//!   a completion batch the database refuses is split until the one bad row
//!   stands alone; that job is failed with a message saying why.

use genq::job::NewJob;
use genq::provider::noop::NoopProvider;
use genq::worker::{Worker, WorkerConfig};
use genq_sim::SimKey;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{TestDb, count_state, insert_jobs, wait_until};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_provider_error_holding_nul_fails_its_job_cleanly_and_holds_nothing_back() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 6000)]).await;
    let poisoned = genq::store::jobs::enqueue(
        &rig.db.pool,
        &NewJob {
            max_attempts: Some(2),
            ..NewJob::new("a fox [sim:500nul]")
        },
    )
    .await
    .unwrap()
    .id();
    insert_jobs(&rig.db.pool, 20, json!({})).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 8).await;

    wait_until(
        Duration::from_secs(30),
        "the poisoned job to fail and the others to succeed",
        || async {
            count_state(&rig.db.pool, "failed").await == 1
                && count_state(&rig.db.pool, "succeeded").await == 20
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();

    let job = genq::store::jobs::get(&rig.db.pool, poisoned)
        .await
        .unwrap()
        .unwrap();
    let error = job.last_error.unwrap();
    assert!(
        error.contains("The server had an error while processing[2J your request."),
        "{error}"
    );
    assert!(!error.chars().any(char::is_control), "{error:?}");
    let attempts = genq::store::jobs::attempts(&rig.db.pool, poisoned)
        .await
        .unwrap();
    let errors: Vec<&str> = attempts
        .iter()
        .filter(|a| a.http_status == Some(500))
        .filter_map(|a| a.error.as_deref())
        .collect();
    assert_eq!(errors.len(), 2, "{attempts:?}");
    assert!(
        errors.iter().all(|e| !e.chars().any(char::is_control)),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_and_its_batch_completes() {
    let db = TestDb::new().await;
    // A row no completion can be written for, whatever genq sanitises: the
    // database refuses its leaving `running` unless it leaves as failed.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           RAISE EXCEPTION 'this row refuses to be stored' USING ERRCODE = '22000';
         END $$;
         CREATE TRIGGER refuse_poison BEFORE UPDATE ON genq.jobs FOR EACH ROW
           WHEN (OLD.state = 'running' AND NEW.state <> 'failed' AND NEW.prompt = 'poison')
           EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    insert_jobs(&db.pool, 300, json!({ "noop_delay_ms": 20 })).await;
    sqlx::query(
        "INSERT INTO genq.jobs (prompt, params) VALUES ('poison', '{\"noop_delay_ms\": 20}')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let config = WorkerConfig {
        concurrency: 128,
        poll_interval: Duration::from_millis(50),
        // Long enough that only splitting the batch, not the reaper, can
        // finish within the wait below.
        lease: Duration::from_secs(120),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(db.pool.clone(), config, NoopProvider).run(stop.clone()));
    wait_until(Duration::from_secs(30), "every job to finish", || async {
        count_state(&db.pool, "succeeded").await == 300
            && count_state(&db.pool, "failed").await == 1
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.released, 0);
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM genq.jobs WHERE prompt = 'poison'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        error.starts_with("genq could not store this attempt's outcome")
            && error.contains("this row refuses to be stored"),
        "{error}"
    );
}

#[tokio::test]
async fn a_claim_whose_reply_was_lost_runs_again_once_within_the_lease() {
    let db = TestDb::new().await;
    let proxy = proxy::Proxy::start(&db.url).await;
    let options = PgConnectOptions::from_str(&db.url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.port)
        .ssl_mode(PgSslMode::Disable);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    // The next claim commits, and then its connection dies before the rows reach the worker.
    proxy.lose_next_claim_reply();
    insert_jobs(&db.pool, 10, json!({ "noop_delay_ms": 10 })).await;
    let lease = Duration::from_secs(2);
    let config = WorkerConfig {
        id: "lost-reply".into(),
        lease,
        poll_interval: Duration::from_millis(50),
        reap_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(Worker::new(pool, config, NoopProvider).run(stop.clone()));
    wait_until(
        Duration::from_secs(10),
        "the claim reply to be lost",
        || async { proxy.lost() },
    )
    .await;
    // Heartbeats renew every third of a lease: a row they renewed would stay
    // `running` for as long as the worker lives.
    wait_until(
        lease * 3,
        "the lost claim's jobs to run again within the lease",
        || async { count_state(&db.pool, "succeeded").await == 10 },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();

    let (succeeded_once, lost): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT job_id FROM genq.attempts WHERE outcome = 'succeeded'
                                        GROUP BY job_id HAVING count(*) = 1) t),
                (SELECT count(DISTINCT job_id) FROM genq.attempts WHERE outcome = 'lost')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(succeeded_once, 10, "every job succeeded exactly once");
    assert!(
        lost > 0,
        "the lost claim's jobs are recorded as lost attempts"
    );
}

/// A TCP proxy in front of PostgreSQL that can drop one claim's reply:
/// the server has committed the claim, the worker never hears of it.
mod proxy {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    pub struct Proxy {
        pub port: u16,
        armed: Arc<AtomicBool>,
        lost: Arc<AtomicBool>,
    }

    impl Proxy {
        pub async fn start(database_url: &str) -> Proxy {
            let options: sqlx::postgres::PgConnectOptions = database_url.parse().unwrap();
            let upstream = format!("{}:{}", options.get_host(), options.get_port());
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let armed = Arc::new(AtomicBool::new(false));
            let lost = Arc::new(AtomicBool::new(false));
            let (a, l) = (armed.clone(), lost.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = TcpStream::connect(&upstream).await.unwrap();
                    tokio::spawn(relay(client, server, a.clone(), l.clone()));
                }
            });
            Proxy { port, armed, lost }
        }

        pub fn lose_next_claim_reply(&self) {
            self.armed.store(true, Ordering::SeqCst);
        }

        pub fn lost(&self) -> bool {
            self.lost.load(Ordering::SeqCst)
        }
    }

    async fn relay(
        client: TcpStream,
        server: TcpStream,
        armed: Arc<AtomicBool>,
        lost: Arc<AtomicBool>,
    ) {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let upstream = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        });
        // Server → client, one reply (up to ReadyForQuery) at a time.
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        'read: loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = reply_end(&pending) {
                let reply: Vec<u8> = pending.drain(..end).collect();
                if is_claim(&reply) && armed.swap(false, Ordering::SeqCst) {
                    // Committed (ReadyForQuery follows the commit); the reply is dropped with the connection.
                    lost.store(true, Ordering::SeqCst);
                    break 'read;
                }
                if client_write.write_all(&reply).await.is_err() {
                    break 'read;
                }
            }
        }
        upstream.abort();
    }

    /// Messages of the server's protocol: a type byte and a length that counts itself.
    fn messages(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let header = bytes.get(at..at + 5)?;
            let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
            let body = bytes.get(at + 5..at + 1 + len)?;
            at += 1 + len;
            Some((header[0], body))
        })
    }

    /// Where the first complete reply (through ReadyForQuery, 'Z') ends.
    fn reply_end(bytes: &[u8]) -> Option<usize> {
        let mut at = 0;
        for (kind, body) in messages(bytes) {
            at += 5 + body.len();
            if kind == b'Z' {
                return Some(at);
            }
        }
        None
    }

    /// A reply with rows and an UPDATE's completion: a claim (a heartbeat
    /// returns no rows, a completion's tag is SELECT).
    fn is_claim(reply: &[u8]) -> bool {
        let mut rows = false;
        for (kind, body) in messages(reply) {
            match kind {
                b'D' => rows = true,
                b'C' if rows && body.starts_with(b"UPDATE ") => return true,
                _ => {}
            }
        }
        false
    }
}
