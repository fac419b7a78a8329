//! What jobs cost, judged from the provider's side: the sim logs the usage
//! it billed for every answer, and the totals genq keeps (per attempt, per
//! job, `genq.costs`, `/metrics`) must be that usage priced by the table's
//! per-token rates, written out here by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use genq::InputRef;
use genq::job::NewJob;
use genq_sim::{SimConfig, SimKey};
use genq_testkit::rig::{Rig, keys, sim_id};
use genq_testkit::{count_state, wait_until};
use serde_json::json;
use uuid::Uuid;

/// Nano-dollars per token (text input, image input, output): the shipped
/// table's dollars per million tokens, times 1,000.
fn rates(model: &str) -> (i64, i64, i64) {
    match model {
        "gpt-image-2" => (5_000, 8_000, 30_000),
        "gpt-image-1-mini" => (2_000, 2_500, 8_000),
        other => panic!("no rates written down for {other}"),
    }
}

/// What the sim billed, priced by hand: nano-dollars per (model, sim key id).
fn billed_by_sim(rig: &Rig) -> BTreeMap<(String, String), i64> {
    let mut billed = BTreeMap::new();
    for r in rig.sim.log().iter().filter(|r| r.status == 200) {
        let usage = r.usage.expect("a 200 carries its usage");
        let (text, image, output) = rates(&r.model);
        let nanos = i64::from(usage.input_tokens_details.text_tokens) * text
            + i64::from(usage.input_tokens_details.image_tokens) * image
            + i64::from(usage.output_tokens) * output;
        *billed
            .entry((r.model.clone(), r.key_id.clone()))
            .or_default() += nanos;
    }
    billed
}

async fn submit(rig: &Rig, job: NewJob) -> Uuid {
    genq::submit(&rig.db.pool, &job).await.unwrap().id
}

#[tokio::test]
async fn costs_in_the_view_are_the_sims_usage_priced_by_the_table() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600), SimKey::new("sk-b", 600)]).await;
    let pool = &rig.db.pool;

    // First, one job whose images cannot be stored (the output directory
    // is a file): the provider billed that attempt, so it counts, though
    // the job only succeeds on its next attempt.
    std::fs::write(&rig.output, b"not a directory").unwrap();
    let unlucky = submit(
        &rig,
        NewJob {
            queue: Some("sprites".into()),
            params: Some(json!({"quality": "high", "size": "1024x1024"})),
            ..NewJob::new("a knight whose first image was lost")
        },
    )
    .await;
    let (worker, stop) = rig
        .worker_on(
            &["sprites", "thumbs"],
            keys(&[("a", "sk-a"), ("b", "sk-b")]),
            4,
        )
        .await;
    wait_until(
        Duration::from_secs(30),
        "a billed attempt that failed",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM genq.attempts WHERE job_id = $1 AND outcome = 'retry'",
            )
            .bind(unlucky)
            .fetch_one(pool)
            .await
            .unwrap()
                >= 1
        },
    )
    .await;
    std::fs::remove_file(&rig.output).unwrap();

    // Then generations of every quality and a few sizes in two queues and
    // two models, and an edit (its input image bills image tokens).
    let mut ids = vec![unlucky];
    for (i, (quality, size, n)) in [
        ("low", "1024x1024", 1),
        ("medium", "1536x1024", 2),
        ("high", "1024x1536", 1),
        ("auto", "auto", 3),
    ]
    .into_iter()
    .enumerate()
    {
        for (queue, model) in [("sprites", "gpt-image-2"), ("thumbs", "gpt-image-1-mini")] {
            let job = NewJob {
                queue: Some(queue.into()),
                model: Some(model.into()),
                params: Some(json!({"quality": quality, "size": size, "n": n})),
                ..NewJob::new(format!("sprite {i} of a {quality} fox in {queue}"))
            };
            ids.push(submit(&rig, job).await);
        }
    }
    let edit = NewJob {
        queue: Some("sprites".into()),
        inputs: vec![InputRef::from_job(ids[1], 0)],
        ..NewJob::new("the same fox, in winter")
    };
    ids.push(submit(&rig, edit).await);
    wait_until(Duration::from_secs(60), "every job", || async {
        count_state(pool, "succeeded").await == ids.len() as i64
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    let billed = billed_by_sim(&rig);
    assert!(billed.values().all(|&n| n > 0), "{billed:?}");
    let sim_key = |genq_key: &str| sim_id(&format!("sk-{genq_key}"));

    // genq.costs, per (model, key), is the sim's usage priced by hand.
    let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT queue, model, key_id, requests, (cost_usd * 1000000000)::int8 FROM genq.costs",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut ours: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (_, model, key, _, nanos) in &rows {
        *ours.entry((model.clone(), sim_key(key))).or_default() += nanos;
    }
    assert_eq!(ours, billed, "genq.costs against the sim's usage");
    let requests: i64 = rows.iter().map(|r| r.3).sum();
    let answered = rig.sim.log().iter().filter(|r| r.status == 200).count() as i64;
    assert_eq!(requests, answered, "every answered request is counted once");

    // Each job's cost is the sum of its attempts' costs; the unlucky job
    // paid for two images.
    for id in &ids {
        let detail = genq::store::inspect::detail(pool, *id)
            .await
            .unwrap()
            .unwrap();
        let attempts: i64 = detail
            .attempts
            .iter()
            .filter_map(|a| a.cost_usd)
            .map(|c| c.nanos())
            .sum();
        assert_eq!(detail.cost_usd.nanos(), attempts, "job {id}");
        assert!(detail.cost_usd.nanos() > 0, "job {id}");
        for a in detail
            .attempts
            .iter()
            .filter(|a| a.http_status == Some(200))
        {
            assert_eq!(a.cost_source, Some(genq::cost::CostSource::Usage), "{a:?}");
            assert!(a.output_tokens.unwrap() > 0, "{a:?}");
        }
    }
    let unlucky = genq::store::inspect::detail(pool, unlucky)
        .await
        .unwrap()
        .unwrap();
    let billed_attempts: Vec<_> = unlucky
        .attempts
        .iter()
        .filter(|a| a.cost_usd.is_some())
        .map(|a| a.outcome)
        .collect();
    assert!(billed_attempts.len() >= 2, "{:?}", unlucky.attempts);
    assert_eq!(
        billed_attempts.last(),
        Some(&genq::job::AttemptOutcome::Succeeded)
    );
    // 4,160 output tokens of gpt-image-2 at $30 per million, twice at least.
    assert!(
        unlucky.cost_usd.nanos() >= 2 * 4_160 * 30_000,
        "{}",
        unlucky.cost_usd
    );

    // /metrics counts the same dollars per queue and model.
    let text = genq::metrics::render(&genq::metrics::DbGauges::new(pool.clone()))
        .await
        .unwrap();
    for (queue, model) in [("sprites", "gpt-image-2"), ("thumbs", "gpt-image-1-mini")] {
        let nanos: i64 = rows
            .iter()
            .filter(|r| r.0 == queue && r.1 == model)
            .map(|r| r.4)
            .sum();
        let series = format!("genq_cost_usd_total{{queue=\"{queue}\",model=\"{model}\"}} ");
        let shown: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap();
        assert!(
            (shown - nanos as f64 / 1e9).abs() < 1e-9,
            "{series}{shown} vs {nanos}"
        );
    }

    // And `genq keys list` shows each key's total.
    for key in genq::store::keys::list(pool).await.unwrap() {
        let expected: i64 = billed
            .iter()
            .filter(|((_, sim), _)| *sim == sim_key(&key.id))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(key.cost_usd.nanos(), expected, "key {}", key.id);
    }
}

/// What one job of the budget tests costs: a two-token prompt ("job N")
/// and 272 output tokens of gpt-image-2 at low quality, 1024x1024.
const JOB_NANOS: i64 = 2 * 5_000 + 272 * 30_000;

async fn jobs_in(pool: &sqlx::PgPool, queue: &str, n: i32) {
    sqlx::query(
        "INSERT INTO genq.jobs (queue, prompt, params)
         SELECT $1, 'job ' || i, '{\"quality\": \"low\", \"size\": \"1024x1024\"}'
           FROM generate_series(1, $2) i",
    )
    .bind(queue)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

fn cap(scope: genq::budget::Scope, name: &str, jobs: i64) -> genq::budget::Budget {
    genq::budget::Budget {
        scope,
        name: name.into(),
        period: genq::budget::Period::Day,
        cap: genq::cost::Usd::from_nanos(jobs * JOB_NANOS),
    }
}

#[tokio::test]
async fn a_queue_at_its_budget_waits_untouched_and_resumes_when_the_cap_is_raised() {
    let rig = Rig::with_config(SimConfig {
        keys: vec![SimKey::new("sk-a", 600)],
        ..SimConfig::default()
    })
    .await;
    let pool = &rig.db.pool;
    genq::store::budgets::set(pool, &[cap(genq::budget::Scope::Queue, "default", 10)])
        .await
        .unwrap();
    jobs_in(pool, "default", 30).await;
    let (worker, stop) = rig.worker(keys(&[("a", "sk-a")]), 4).await;
    wait_until(
        Duration::from_secs(30),
        "the budget to stop the queue",
        || async {
            let stopped = !genq::store::budgets::exhausted(pool)
                .await
                .unwrap()
                .is_empty();
            stopped && count_state(pool, "running").await == 0
        },
    )
    .await;

    // About ten jobs ran; the rest wait, queued, and are never touched.
    let done = count_state(pool, "succeeded").await;
    assert!(
        (10..=12).contains(&done),
        "{done} jobs ran on a budget of 10"
    );
    let before: Vec<(Uuid, chrono::DateTime<chrono::Utc>, i32)> = sqlx::query_as(
        "SELECT id, updated_at, attempts FROM genq.jobs WHERE state = 'queued' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(before.len() as i64, 30 - done);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after: Vec<(Uuid, chrono::DateTime<chrono::Utc>, i32)> = sqlx::query_as(
        "SELECT id, updated_at, attempts FROM genq.jobs WHERE state = 'queued' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(after, before, "a job waiting for its budget was written");
    assert_eq!(count_state(pool, "failed").await, 0);
    let sent = rig.sim.log().len() as i64;
    assert_eq!(sent, done, "the sim saw only the jobs that ran");

    // The reason shows in the job's view, queue_stats and /metrics.
    let waiting = genq::store::inspect::detail(pool, before[0].0)
        .await
        .unwrap()
        .unwrap()
        .waiting
        .unwrap_or_default();
    assert!(
        waiting.contains("queue default reached its daily budget"),
        "{waiting}"
    );
    let stats: String = sqlx::query_scalar(
        "SELECT waiting FROM genq.queue_stats WHERE queue = 'default' AND state = 'queued'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(stats.contains("daily budget"), "{stats}");
    let text = genq::metrics::render(&genq::metrics::DbGauges::new(pool.clone()))
        .await
        .unwrap();
    for line in [
        "genq_budget_exhausted{scope=\"queue\",name=\"default\",period=\"day\"} 1".to_string(),
        format!(
            "genq_queue_waiting_jobs{{queue=\"default\",model=\"gpt-image-2\",reason=\"budget\"}} {}",
            30 - done
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }

    // Raising the cap wakes the worker, and the rest run.
    genq::store::budgets::set(pool, &[cap(genq::budget::Scope::Queue, "default", 100)])
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the rest to run", || async {
        count_state(pool, "succeeded").await == 30
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn an_account_at_its_budget_rests_its_keys_while_others_work() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600), SimKey::new("sk-b", 600)]).await;
    let pool = &rig.db.pool;
    genq::store::budgets::set(pool, &[cap(genq::budget::Scope::Account, "acct-a", 3)])
        .await
        .unwrap();
    jobs_in(pool, "default", 16).await;
    let (worker, stop) = rig
        .worker(keys(&[("a@acct-a", "sk-a"), ("b@acct-b", "sk-b")]), 4)
        .await;
    wait_until(Duration::from_secs(30), "every job", || async {
        count_state(pool, "succeeded").await == 16
    })
    .await;
    stop.cancel();
    worker.await.unwrap();
    let on = |secret: &str| rig.log_for(&sim_id(secret)).len();
    assert!(
        (3..=4).contains(&on("sk-a")),
        "key a (account budget of 3 jobs) sent {}",
        on("sk-a")
    );
    assert_eq!(on("sk-a") + on("sk-b"), 16);
    let status = genq::store::budgets::status(pool).await.unwrap();
    assert!(status[0].exhausted, "{status:?}");
}

#[tokio::test]
async fn spend_outside_the_window_does_not_count() {
    let db = genq_testkit::TestDb::new().await;
    let pool = &db.pool;
    genq::store::budgets::set(
        pool,
        &[genq::budget::Budget {
            period: genq::budget::Period::Month,
            ..cap(genq::budget::Scope::Queue, "q", 1)
        }],
    )
    .await
    .unwrap();
    genq::store::budgets::set(pool, &[cap(genq::budget::Scope::Queue, "q", 1)])
        .await
        .unwrap();
    // Spent yesterday: counts this month (unless today is the 1st) but not today.
    sqlx::query(
        "INSERT INTO genq.spend (day, queue, model, key_id, requests, cost_usd)
         VALUES ((now() AT TIME ZONE 'UTC')::date - 1, 'q', 'gpt-image-2', 'k', 5, 9)",
    )
    .execute(pool)
    .await
    .unwrap();
    let status = genq::store::budgets::status(pool).await.unwrap();
    let by_period: BTreeMap<_, _> = status
        .iter()
        .map(|s| (s.period.as_str(), (s.exhausted, s.spent_usd.nanos())))
        .collect();
    assert_eq!(by_period["day"], (false, 0));
    let first_of_month: bool =
        sqlx::query_scalar("SELECT extract(day FROM now() AT TIME ZONE 'UTC') = 1")
            .fetch_one(pool)
            .await
            .unwrap();
    if !first_of_month {
        assert_eq!(by_period["month"], (true, 9_000_000_000));
    }
    let day = status.iter().find(|s| s.period.as_str() == "day").unwrap();
    assert!(day.resets_in_secs > 0.0 && day.resets_in_secs <= 86_400.0);
}

#[tokio::test]
async fn budgets_come_from_the_workers_file_and_the_budgets_verb() {
    let db = genq_testkit::TestDb::new().await;
    let dir = genq_testkit::process::scratch_dir("budgets");
    let genq = |args: &[&str]| {
        let mut cmd = genq_testkit::process::genq(&dir);
        cmd.args(args)
            .env("DATABASE_URL", &db.url)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null());
        cmd
    };
    let file = dir.join("budgets.toml");

    // A misspelt file stops the worker with the reason.
    std::fs::write(&file, "[[budgets]]\nqueue = \"sprites\"\ndaily_usd = 5\n").unwrap();
    let out = genq(&[
        "worker",
        "--provider",
        "noop",
        "--budgets",
        file.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("budgets.toml: unknown table \"budgets\"; budgets are [[budget]] entries"),
        "{stderr}"
    );

    // A good one is written to genq.budgets when the worker starts.
    std::fs::write(
        &file,
        "[[budget]]\nqueue = \"sprites\"\ndaily_usd = 5\n[[budget]]\naccount = \"org-1\"\nmonthly_usd = 200\n",
    )
    .unwrap();
    let _worker = genq_testkit::ChildGuard(
        genq(&[
            "worker",
            "--provider",
            "noop",
            "--budgets",
            file.to_str().unwrap(),
        ])
        .spawn()
        .unwrap(),
    );
    wait_until(Duration::from_secs(20), "the worker's budgets", || async {
        genq::store::budgets::status(&db.pool).await.unwrap().len() == 2
    })
    .await;

    // genq budgets set raises a cap; list shows it; remove takes one away.
    let ok = |args: &[&str]| {
        let out = genq(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["budgets", "set", "--queue", "sprites", "--daily", "7.5"]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["budgets", "list", "--json"])).unwrap();
    let caps: Vec<(String, String, String, f64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["scope"].as_str().unwrap().into(),
                b["name"].as_str().unwrap().into(),
                b["period"].as_str().unwrap().into(),
                b["cap_usd"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        caps,
        [
            ("account".into(), "org-1".into(), "month".into(), 200.0),
            ("queue".into(), "sprites".into(), "day".into(), 7.5),
        ]
    );
    let table = ok(&["budgets", "list"]);
    assert!(
        table.contains("sprites") && table.contains("$7.50"),
        "{table}"
    );
    ok(&[
        "budgets",
        "remove",
        "--account",
        "org-1",
        "--period",
        "month",
    ]);
    assert_eq!(
        genq::store::budgets::status(&db.pool).await.unwrap().len(),
        1
    );

    // Mistakes are refused with what to fix.
    for (args, expected) in [
        (
            &["budgets", "set", "--queue", "sprites"][..],
            "give --daily, --monthly or both",
        ),
        (
            &["budgets", "set", "--queue", "q", "--daily=-3"][..],
            "--daily must be a number of dollars",
        ),
        (
            &["budgets", "remove", "--queue", "nope", "--period", "day"][..],
            "no day budget for queue \"nope\"",
        ),
    ] {
        let out = genq(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}
