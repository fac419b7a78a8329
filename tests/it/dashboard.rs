//! The dashboard in a real headless Chromium (WebDriver), against a real
//! server, database, worker and `genq sim`: sign in, find the failed job,
//! read its attempts, retry it and watch it succeed with its thumbnail, cancel
//! a queue's jobs in bulk, enable a disabled key, and see a `<script>` prompt
//! shown as text. Then, without a browser, what must be refused is. Every
//! page is saved as a screenshot under `target/screenshots/`.

use std::time::Duration;

use fantoccini::Locator;
use genq::api::ApiState;
use genq::job::NewJob;
use genq_sim::SimKey;
use genq_testkit::browser::Browser;
use genq_testkit::rig::{Rig, keys};
use genq_testkit::{count_state, wait_until};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "dash-token-8c1e4f";
const SCRIPT_PROMPT: &str = "<script>alert(1)</script> a cat in a hat";

async fn serve(state: ApiState) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(genq::api::serve(listener, state, stop.clone()));
    (format!("http://127.0.0.1:{port}"), stop)
}

async fn submit(rig: &Rig, job: NewJob) -> uuid::Uuid {
    genq::submit(&rig.db.pool, &job).await.unwrap().id
}

/// Waits until `script` (a JS expression) is true in the page.
async fn until_page(b: &Browser, what: &str, script: &str) {
    let started = std::time::Instant::now();
    loop {
        let v = b
            .client
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if v.as_bool() == Some(true) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what} ({script}) at {}",
            b.client.current_url().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks `css` and waits until the page it leads to has loaded.
async fn click_through(b: &Browser, css: &str) {
    b.client
        .execute("window.__genqOldPage = true;", vec![])
        .await
        .unwrap();
    b.client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
    until_page(
        b,
        &format!("the page {css} leads to"),
        "!window.__genqOldPage && document.readyState === 'complete'",
    )
    .await;
}

/// The job ids the jobs table lists, in order.
async fn job_ids(b: &Browser) -> Vec<String> {
    let mut ids = Vec::new();
    for row in b
        .client
        .find_all(Locator::Css("#jobs tbody tr"))
        .await
        .unwrap()
    {
        ids.push(row.attr("data-job").await.unwrap().unwrap());
    }
    ids
}

async fn text(b: &Browser, css: &str) -> String {
    b.client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_triages_failures_in_a_real_browser() {
    let rig = Rig::new(vec![SimKey::new("sk-a", 600)]).await;
    let pool = &rig.db.pool;
    let (worker, stop_worker) = rig.worker(keys(&[("a", "sk-a")]), 2).await;

    // A job that fails its only attempt (the sim answers 500 once), one with
    // markup in its prompt, and three in a queue no worker serves.
    let failing = submit(
        &rig,
        NewJob {
            max_attempts: Some(1),
            ..NewJob::new("[sim:500x1] a fox that fails once")
        },
    )
    .await;
    let scripted = submit(&rig, NewJob::new(SCRIPT_PROMPT)).await;
    for i in 0..3 {
        submit(
            &rig,
            NewJob {
                queue: Some("later".into()),
                ..NewJob::new(format!("a later job {i}"))
            },
        )
        .await;
    }
    wait_until(
        Duration::from_secs(30),
        "the first two jobs to end",
        || async {
            count_state(pool, "failed").await == 1 && count_state(pool, "succeeded").await == 1
        },
    )
    .await;
    // A second key, disabled for its quota.
    genq::store::keys::register(
        pool,
        &[genq::store::keys::KeyRow {
            id: "spare",
            account: None,
        }],
    )
    .await
    .unwrap();
    genq::store::keys::disable(pool, "spare", "HTTP 429: insufficient_quota")
        .await
        .unwrap();

    let state = ApiState::new(pool.clone(), Some(TOKEN.into())).with_images(rig.images.clone());
    let (base, stop_api) = serve(state).await;
    let b = Browser::start().await;

    // Signing in: a page asks for the token, a wrong one is refused, the
    // right one leads back to the page asked for.
    b.client
        .goto(&format!("{base}/jobs?state=failed"))
        .await
        .unwrap();
    assert_eq!(b.client.current_url().await.unwrap().path(), "/login");
    b.screenshot("login").await;
    let token_field = b.client.find(Locator::Id("token")).await.unwrap();
    token_field.send_keys("not-the-token").await.unwrap();
    click_through(&b, "#login button").await;
    assert!(
        text(&b, ".error")
            .await
            .contains("not this server's API token"),
        "a wrong token is refused with the reason"
    );
    b.client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    click_through(&b, "#login button").await;
    let url = b.client.current_url().await.unwrap();
    assert_eq!((url.path(), url.query()), ("/jobs", Some("state=failed")));
    assert!(!url.as_str().contains(TOKEN));

    // Filtered to failed jobs: only the failing one.
    let rows = b
        .client
        .find_all(Locator::Css("#jobs tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].attr("data-job").await.unwrap(),
        Some(failing.to_string())
    );
    b.screenshot("jobs-failed").await;

    // Its page: the attempt that failed, with its HTTP status.
    click_through(&b, "#jobs tbody tr a").await;
    let attempts = text(&b, "#attempts").await;
    assert!(attempts.contains("500"), "{attempts}");
    assert_eq!(text(&b, "#job-state").await, "failed");

    // Retry it and watch it succeed (the page follows the job by itself).
    click_through(&b, "#retry").await;
    until_page(
        &b,
        "the retried job to succeed",
        "document.getElementById('job-state') && document.getElementById('job-state').textContent === 'succeeded'",
    )
    .await;
    until_page(
        &b,
        "its thumbnail to load",
        "(() => { const i = document.querySelector('img.thumb'); return i && i.complete && i.naturalWidth > 0; })()",
    )
    .await;
    b.screenshot("job").await;

    // A prompt with markup is shown as text, and runs nothing.
    b.client
        .goto(&format!("{base}/jobs/{scripted}"))
        .await
        .unwrap();
    assert_eq!(text(&b, "#prompt").await, SCRIPT_PROMPT);
    assert!(b.client.get_alert_text().await.is_err(), "an alert opened");
    b.client
        .goto(&format!("{base}/jobs?q=alert"))
        .await
        .unwrap();
    assert_eq!(text(&b, "#jobs td.prompt").await, SCRIPT_PROMPT);
    let scripts = b
        .client
        .execute("return document.querySelectorAll('script').length;", vec![])
        .await
        .unwrap();
    assert_eq!(scripts.as_i64(), Some(1), "only the dashboard's own script");

    // Cancel the queued jobs of one queue in bulk, after a confirmation
    // that says how many.
    b.client
        .goto(&format!("{base}/jobs?queue=later&state=queued"))
        .await
        .unwrap();
    click_through(&b, "#bulk-cancel").await;
    let count = b.client.find(Locator::Id("confirm-count")).await.unwrap();
    assert_eq!(
        count.attr("data-count").await.unwrap().as_deref(),
        Some("3")
    );
    assert!(count.text().await.unwrap().contains("cancel 3 queued jobs"));
    b.screenshot("bulk-confirm").await;
    click_through(&b, "#confirm").await;
    assert!(text(&b, ".flash").await.contains("cancelled 3 jobs"));
    let cancelled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE queue = 'later' AND state = 'cancelled'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(cancelled, 3);

    // Enable the disabled key.
    b.client.goto(&format!("{base}/keys")).await.unwrap();
    assert_eq!(text(&b, "[data-key-state='spare']").await, "disabled");
    b.screenshot("keys").await;
    click_through(&b, "tr[data-key='spare'] button[data-action='enable']").await;
    assert_eq!(text(&b, "[data-key-state='spare']").await, "active");
    let listed = genq::store::keys::list(pool).await.unwrap();
    let spare = listed.iter().find(|k| k.id == "spare").unwrap();
    assert_eq!(spare.state, genq::keys::KeyState::Active);

    // The overview.
    b.client.goto(&format!("{base}/")).await.unwrap();
    assert!(text(&b, "main").await.contains("Finished per minute"));
    b.client
        .find(Locator::Css("svg.chart"))
        .await
        .expect("the throughput chart");
    b.screenshot("overview").await;

    // Counts update without a reload: 60 jobs land in a queue no worker
    // serves, and the queued count follows on the same page.
    b.client
        .execute("window.__genqSamePage = true;", vec![])
        .await
        .unwrap();
    assert_eq!(text(&b, "[data-live='queued']").await, "0");
    sqlx::query(
        "INSERT INTO genq.jobs (queue, prompt) SELECT 'parked', 'parked job ' || i FROM generate_series(1, 60) i",
    )
    .execute(pool)
    .await
    .unwrap();
    until_page(
        &b,
        "the queued count to update in place",
        "window.__genqSamePage && document.querySelector(\"[data-live='queued']\").textContent === '60'",
    )
    .await;

    // The jobs page goes 50 at a time; the next page has the other 10.
    b.client
        .goto(&format!("{base}/jobs?queue=parked"))
        .await
        .unwrap();
    let first: Vec<String> = job_ids(&b).await;
    assert_eq!(first.len(), 50);
    click_through(&b, "#next-page").await;
    let second: Vec<String> = job_ids(&b).await;
    assert_eq!(second.len(), 10);
    assert!(second.iter().all(|id| !first.contains(id)), "pages overlap");
    b.client.close().await.unwrap();

    stop_worker.cancel();
    worker.await.unwrap();
    stop_api.cancel();
}

#[tokio::test]
async fn requests_without_the_token_or_the_form_token_are_refused() {
    let db = genq_testkit::TestDb::new().await;
    let id = genq::submit(&db.pool, &NewJob::new("a fox"))
        .await
        .unwrap()
        .id;
    let (base, stop) = serve(ApiState::new(db.pool.clone(), Some(TOKEN.into()))).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // No session: pages go to the sign-in form, changes are refused.
    let page = http.get(format!("{base}/jobs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()["location"], "/login?next=%2Fjobs");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let cancel = format!("{base}/jobs/{id}/cancel");
    let refused = http
        .post(&cancel)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("csrf", "x")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.get(format!("{base}/live"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Signing in sets an HttpOnly, SameSite cookie that is not the token.
    let login_page = http
        .get(format!("{base}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = login_page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let signed = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("csrf", csrf.as_str()),
                ("token", TOKEN),
                ("next", "/jobs"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN));
    let session = cookie.split(';').next().unwrap().to_string();

    // Signed in, but with a wrong form token, or from another site: refused.
    for (form_token, origin) in [
        ("wrong", None),
        ("", None),
        (csrf.as_str(), Some("http://evil.example")),
    ] {
        let mut post = http
            .post(&cancel)
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string([("csrf", form_token)]).unwrap());
        if let Some(origin) = origin {
            post = post.header("origin", origin);
        }
        let answer = post.send().await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::FORBIDDEN,
            "csrf {form_token:?} origin {origin:?}"
        );
    }
    let job = genq::store::jobs::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.state, genq::JobState::Queued, "nothing was cancelled");

    // With both, the change is made.
    let done = http
        .post(&cancel)
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("csrf", csrf.as_str())]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let job = genq::store::jobs::get(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(job.state, genq::JobState::Cancelled);
    // The API's bearer token still works for /v1, and the cookie does not.
    let api = http
        .get(format!("{base}/v1/jobs/{id}"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    stop.cancel();
}
