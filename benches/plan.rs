//! The claim's query plans at 1,000,000 retained finished jobs: the
//! statements a worker sends (genq's own store functions, not copies), with
//! PostgreSQL's `auto_explain` reporting each one's actual plan.
//!
//! 1,000,000 succeeded jobs plus 10,000 queued (in 4 models) and 100,000
//! edits waiting for their input jobs (queued, `awaiting_input`, older than
//! every due job, so first in line if a claim saw them), `VACUUM ANALYZE`d;
//! then one `due_models` look, one `claim_model` of 256 and one plain
//! `claim` of 256, each printed with its plan and time.
//!
//! `cargo bench --bench plan -- [finished=1000000] [queued=10000] [waiting=100000] [batch=256]`
//! Needs a superuser connection (`LOAD 'auto_explain'`): the private cluster,
//! or a `DATABASE_URL` whose user is one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use genq::store::jobs::{self, Serve};
use genq_testkit::bench::{Scratch, arg};
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Collects the PostgreSQL notices sqlx reports (where `auto_explain`
/// sends its plans when `auto_explain.log_level = notice`).
#[derive(Clone, Default)]
struct Notices(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Notices {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::postgres::notice" {
            return;
        }
        struct Message(Option<String>);
        impl Visit for Message {
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "message" {
                    self.0 = Some(value.to_string());
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut message = Message(None);
        event.record(&mut message);
        if let Some(text) = message.0 {
            self.0.lock().unwrap().push(text);
        }
    }
}

impl Notices {
    /// The plan reported since the last call, without its query text.
    fn take_plan(&self) -> String {
        let notices = std::mem::take(&mut *self.0.lock().unwrap());
        let text = notices
            .into_iter()
            .rfind(|n| n.contains("plan:"))
            .expect("auto_explain reported a plan");
        text.lines()
            .skip_while(|l| !l.contains("(cost="))
            .map(|l| format!("    {}", without_costs(l)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A plan line without the planner's estimates (`(cost=… rows=… width=…) `).
fn without_costs(line: &str) -> String {
    match line.find("(cost=") {
        Some(start) => {
            let end = line[start..]
                .find(')')
                .map_or(line.len(), |e| start + e + 1);
            format!("{}{}", &line[..start], line[end..].trim_start())
        }
        None => line.to_string(),
    }
}

fn main() {
    let finished: i64 = arg("finished", 1_000_000);
    let queued: i64 = arg("queued", 10_000);
    let waiting: i64 = arg("waiting", 100_000);
    let batch: usize = arg("batch", 256);
    let notices = Notices::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::filter::Targets::new()
                    .with_target("sqlx::postgres::notice", tracing::Level::TRACE),
            )
            .with(notices.clone()),
    )
    .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("plan").await;
        sqlx::query(
            "INSERT INTO genq.jobs (prompt, state, attempts, finished_at)
             SELECT 'done ' || i, 'succeeded', 1, now() - interval '1 hour'
               FROM generate_series(1, $1) i",
        )
        .bind(finished)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO genq.jobs (prompt, model)
             SELECT 'queued ' || i, (ARRAY['gpt-image-1','gpt-image-1-mini','dall-e-3','dall-e-2'])[1 + i % 4]
               FROM generate_series(1, $1) i",
        )
        .bind(queued)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO genq.jobs (prompt, model, operation, awaiting_input, run_at)
             SELECT 'waiting ' || i, 'gpt-image-1', 'edit', true, now() - interval '1 day'
               FROM generate_series(1, $1) i",
        )
        .bind(waiting)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query("VACUUM ANALYZE genq.jobs")
            .execute(&db.pool)
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "LOAD 'auto_explain';
                         SET auto_explain.log_min_duration = 0;
                         SET auto_explain.log_analyze = on;
                         SET auto_explain.log_timing = on;
                         SET auto_explain.log_level = notice;
                         SET client_min_messages = notice;",
                    )
                    .await
                    .map(|_| ())
                })
            })
            .connect(&db.url)
            .await
            .expect("connecting with auto_explain (needs a superuser)");
        let lease = Duration::from_secs(60);
        let queues = ["default".to_string()];
        println!(
            "plan: {finished} finished + {queued} queued jobs + {waiting} edits waiting for input, claim batch {batch}, PostgreSQL's actual plans (auto_explain):"
        );

        let started = std::time::Instant::now();
        let due = jobs::due_models(&pool, "default").await.unwrap();
        let took = started.elapsed();
        println!(
            "plan: due_models (which models have due jobs): {} models, {:.2} ms round trip\n{}",
            due.len(),
            took.as_secs_f64() * 1e3,
            notices.take_plan()
        );

        let started = std::time::Instant::now();
        let claimed = jobs::claim_model(
            &pool,
            "bench",
            "default",
            Serve::Model("gpt-image-1"),
            batch,
            lease,
        )
        .await
        .unwrap();
        let took = started.elapsed();
        println!(
            "plan: claim_model of {} (a rate-limited provider's claim): {:.2} ms round trip ({:.3} ms per job)\n{}",
            claimed.len(),
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3 / claimed.len().max(1) as f64,
            notices.take_plan()
        );

        let started = std::time::Instant::now();
        let claimed = jobs::claim(&pool, "bench", &queues, batch, lease)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(
            claimed.iter().all(|j| !j.awaiting_input),
            "a claim took an edit that waits for its input"
        );
        println!(
            "plan: claim of {} (a provider without limits): {:.2} ms round trip ({:.3} ms per job)\n{}",
            claimed.len(),
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3 / claimed.len().max(1) as f64,
            notices.take_plan()
        );
        pool.close().await;
        db.finish().await;
    });
}
