//! `genq demo` end to end with a smaller job count: every job ends, the
//! deliberately bad ones fail with clear reasons, the bad keys are disabled,
//! real PNGs are on disk, no key went over its limit, and the generate →
//! edit pipeline ran with its images where the summary says.

use genq_testkit::TestDb;
use genq_testkit::process::{genq, scratch_dir};
use serde::Deserialize;

/// What `genq demo --json` prints.
#[derive(Debug, Deserialize)]
struct DemoSummary {
    succeeded: i64,
    failed: Vec<(String, i64)>,
    unfinished: i64,
    over_limit: Vec<(String, u64)>,
    disabled_keys: Vec<(String, String)>,
    png_files: usize,
    cost_usd: f64,
    billed_requests: i64,
    pipeline: Option<Pipeline>,
}

#[derive(Debug, Deserialize)]
struct Pipeline {
    generate: Step,
    edit: Step,
}

#[derive(Debug, Deserialize)]
struct Step {
    state: String,
    images: Vec<String>,
}

#[tokio::test]
async fn the_demo_finishes_with_images_and_a_summary() {
    let db = TestDb::new().await;
    let dir = scratch_dir("demo");
    let output = dir.join("out");
    let run = genq(&dir)
        .args([
            "demo",
            "--json",
            "--exit-when-done",
            "--jobs",
            "30",
            "--workers",
            "2",
        ])
        .env("DATABASE_URL", &db.url)
        .env("GENQ_OUTPUT_DIR", &output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "genq demo failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: DemoSummary = serde_json::from_slice(&run.stdout).unwrap();

    assert_eq!(summary.unfinished, 0);
    let failed: i64 = summary.failed.iter().map(|(_, n)| n).sum();
    assert_eq!(summary.succeeded + failed, 30);
    assert_eq!(
        failed, 2,
        "one content-policy job and one bad-size job: {:?}",
        summary.failed
    );
    assert!(
        summary
            .failed
            .iter()
            .any(|(r, _)| r.contains("content_policy_violation"))
    );
    assert!(
        summary
            .failed
            .iter()
            .any(|(r, _)| r.contains("size \"512x512\" is not supported"))
    );
    assert_eq!(summary.png_files as i64, summary.succeeded);
    // Every success was billed; the cost is positive and not absurd
    // (the demo's jobs are gpt-image-2 at default quality and size).
    assert!(summary.billed_requests >= summary.succeeded, "{summary:?}");
    assert!(
        summary.cost_usd > 0.0 && summary.cost_usd < summary.billed_requests as f64,
        "{summary:?}"
    );
    // alpha's limit is configured: nothing over it, by the sim's count of every
    // request. bravo and charlie announce none or only in headers: genq finds them out.
    assert!(
        summary.over_limit.iter().all(|(key, _)| key != "alpha"),
        "{:?}",
        summary.over_limit
    );
    let disabled: Vec<&str> = summary
        .disabled_keys
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(disabled, ["broke", "stranger"]);
    // The images are real PNGs.
    let job_dir = std::fs::read_dir(&output)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // <job id>/<attempt>/<n>.png
    let attempt_dir = std::fs::read_dir(&job_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let png = std::fs::read(attempt_dir.join("0.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // The generate → edit pipeline ran, and the summary says where its images are.
    let pipeline = summary.pipeline.expect("a pipeline among 30 jobs");
    for step in [&pipeline.generate, &pipeline.edit] {
        assert_eq!(step.state, "succeeded", "{pipeline:?}");
        assert_eq!(step.images.len(), 1, "{pipeline:?}");
        let image = std::fs::read(&step.images[0]).unwrap();
        assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_demo_serves_its_dashboard_until_ctrl_c() {
    use std::io::BufRead;
    let db = TestDb::new().await;
    let dir = scratch_dir("demo-dashboard");
    let mut child = genq_testkit::ChildGuard(
        genq(&dir)
            .args(["demo", "--jobs", "5", "--workers", "1"])
            .env("DATABASE_URL", &db.url)
            .env("GENQ_OUTPUT_DIR", dir.join("out"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("dashboard: ")
                && line.contains("Ctrl-C to stop")
            {
                let url = rest.split_whitespace().next().unwrap().to_string();
                let _ = tx.send(url);
            }
        }
    });
    let url = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the demo printed its dashboard URL after the summary");
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Overview") && html.contains("Queues"),
        "{html}"
    );
    // Still serving a moment later; Ctrl-C ends it cleanly.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the demo exited on its own"
    );
    let pid = child.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed().as_secs() < 20, "the demo ignored Ctrl-C");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
