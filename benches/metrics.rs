//! What one `/metrics` scrape costs with 1,000,000 retained finished jobs:
//! the promise is under 50 ms, however long genq has kept finished jobs.
//!
//! Fills 1,000,000 finished jobs (succeeded, failed, cancelled across a few
//! queues and models) plus 10,000 queued and 100 running, `VACUUM ANALYZE`s,
//! then scrapes `genq::metrics::render` (what `GET /metrics` answers)
//! `scrapes` times back to back through one `DbGauges` (as one server
//! does), the first one second after the gauges were made (a server counts
//! the finished jobs once in the background as it starts; `warmup_ms=0`
//! scrapes at once, racing that count). Prints the first scrape, then the
//! median and p95 of the rest (which count queued and running jobs exactly
//! and answer with the kept finished counts).
//!
//! `cargo bench --bench metrics -- [finished=1000000] [queued=10000] [scrapes=20] [warmup_ms=1000]`

use std::time::{Duration, Instant};

use genq_testkit::bench::{Scratch, arg};

fn main() {
    let finished: i64 = arg("finished", 1_000_000);
    let queued: i64 = arg("queued", 10_000);
    let scrapes: usize = arg("scrapes", 20);
    let warmup_ms: u64 = arg("warmup_ms", 1000);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("metrics").await;
        sqlx::query(
            "INSERT INTO genq.jobs (queue, model, prompt, state, attempts, finished_at)
             SELECT (ARRAY['default','bulk','urgent'])[1 + i % 3],
                    (ARRAY['gpt-image-1','gpt-image-1-mini','gpt-image-2'])[1 + (i / 3) % 3],
                    'done ' || i,
                    (ARRAY['succeeded','succeeded','succeeded','failed','cancelled'])[1 + i % 5],
                    1, now() - interval '1 hour'
               FROM generate_series(1, $1) i",
        )
        .bind(finished)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO genq.jobs (queue, model, prompt)
             SELECT (ARRAY['default','bulk'])[1 + i % 2],
                    (ARRAY['gpt-image-1','gpt-image-1-mini','gpt-image-2'])[1 + i % 3],
                    'queued ' || i
               FROM generate_series(1, $1) i",
        )
        .bind(queued)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE genq.jobs SET state = 'running', attempts = 1, locked_by = 'bench',
                    lease_expires_at = now() + interval '1 hour', started_at = now()
              WHERE id IN (SELECT id FROM genq.jobs WHERE state = 'queued' LIMIT 100)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query("VACUUM ANALYZE genq.jobs")
            .execute(&db.pool)
            .await
            .unwrap();
        genq::metrics::install();
        let gauges = genq::metrics::DbGauges::new(db.pool.clone());
        tokio::time::sleep(Duration::from_millis(warmup_ms)).await;
        let mut times: Vec<Duration> = Vec::with_capacity(scrapes);
        let mut size = 0;
        for _ in 0..scrapes {
            let started = Instant::now();
            let text = genq::metrics::render(&gauges).await.unwrap();
            times.push(started.elapsed());
            size = text.len();
        }
        let first = times[0];
        let mut sorted = times[1..].to_vec();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = sorted[sorted.len() / 2];
        let p95 = sorted[((sorted.len() * 95).div_ceil(100)).min(sorted.len()) - 1];
        println!(
            "metrics: scrape with {finished} finished + {queued} queued jobs: first ({warmup_ms} ms after start) {:.1} ms, then median {:.1} ms, p95 {:.1} ms over {} scrapes ({size} bytes)",
            ms(first),
            ms(median),
            ms(p95),
            sorted.len()
        );
        db.finish().await;
    });
}
