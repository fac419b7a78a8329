//! The ceiling on this machine: a raw `pgbench` loop that claims a batch
//! with `FOR UPDATE SKIP LOCKED`, marks it succeeded and records an attempt
//! row per job (`benches/sql/claim_complete.sql`), on the same schema and
//! server the throughput benchmark uses. No worker, no Rust in between.
//!
//! `cargo bench --bench baseline -- [batches=1,10,64,256] [clients=2] [secs=10]`

use genq_testkit::bench::{Scratch, arg};
use std::process::Command;

fn main() {
    let batches: String = arg("batches", "1,10,64,256".to_string());
    let clients: u32 = arg("clients", 2);
    let secs: u32 = arg("secs", 10);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/sql/claim_complete.sql"
    );
    let pgbench = genq_pg::find_bin_dir()
        .map(|d| d.join("pgbench"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "pgbench".into());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = Scratch::new("baseline").await;
        for batch in batches.split(',').map(|b| b.trim().parse::<u32>().expect("batches=1,10,…")) {
            sqlx::query("TRUNCATE genq.jobs CASCADE").execute(&db.pool).await.unwrap();
            // More than the loop can drain in `secs`, so it never runs dry.
            sqlx::query("INSERT INTO genq.jobs (prompt) SELECT 'raw ' || i FROM generate_series(1, $1) i")
                .bind(i64::from(secs) * 40_000)
                .execute(&db.pool)
                .await
                .unwrap();
            sqlx::query("VACUUM ANALYZE genq.jobs").execute(&db.pool).await.unwrap();
            let out = Command::new(&pgbench)
                .args(["-n", "-M", "prepared", "-T", &secs.to_string()])
                .args(["-c", &clients.to_string(), "-j", &clients.to_string()])
                .args(["-D", &format!("batch={batch}"), "-f", script, &db.url])
                .output()
                .expect("running pgbench");
            assert!(out.status.success(), "pgbench: {}", String::from_utf8_lossy(&out.stderr));
            let done: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.attempts")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            println!(
                "baseline: raw pgbench SKIP LOCKED claim-and-complete loop, batch {batch}, {clients} clients, {secs} s: {:.0} jobs/s",
                done as f64 / f64::from(secs)
            );
        }
        db.finish().await;
    });
}
