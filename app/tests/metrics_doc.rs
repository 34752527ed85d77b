//! docs/metrics.md lists every metric the app has: a real instance (SQLite, a test
//! redis-server, its queue) serves some traffic and dead-letters a failing task, then its
//! `/metrics` and the names the app's source defines are compared with the page's `## app`
//! table (`tests::metrics_doc`).

mod support;

use std::path::Path;
use std::time::Duration;

use support::app::{base, client, create_user, sqlite_url, test_config, user_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_metrics_md_lists_every_app_metric() {
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = test_config(&sqlite_url(dir.path()), &redis.url());
    let app = app::server::start_with(cfg, app::wiring::extensions)
        .await
        .expect("start the app with its queue");
    let base = base(&app);
    let c = client();
    // Requests, a cache miss and a hit, a database load: the vectors get their samples.
    let id = create_user(&c, &base, "Ann", "ann@example.com").await;
    for _ in 0..2 {
        assert_eq!(user_name(&c, &base, id).await.as_deref(), Some("Ann"));
    }
    // A task that fails for good: enqueued, retried, dead-lettered (the queue's families).
    let r = c
        .post(format!("{base}/tasks"))
        .json(&serde_json::json!({"kind": "fail", "max_attempts": 2}))
        .send()
        .await
        .expect("POST /tasks");
    assert_eq!(r.status(), 202, "a failing task is accepted");
    let dead =
        support::wait_until_async(Duration::from_secs(60), Duration::from_millis(100), || {
            let (c, base) = (c.clone(), base.clone());
            async move {
                let m = support::app::metrics(&c, &base).await;
                tests::metrics::sum(&m, "app_queue_dead_letters_total", &[]) >= 1.0
            }
        })
        .await;
    assert!(
        dead,
        "the failing task reached the dead letters within 60 s"
    );
    let text = support::app::metrics(&c, &base).await;

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let page = repo.join("docs/metrics.md");
    let documented = tests::metrics_doc::documented(&page, "app").unwrap_or_else(|e| panic!("{e}"));
    let exposed = tests::metrics_doc::exposed(&text);
    let source = tests::metrics_doc::in_source(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &["app_"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for family in [
        "app_http_requests_total",
        "app_http_request_duration_seconds",
        "app_cache_lookups_total",
        "app_db_pool_acquire_wait_seconds",
        "app_queue_backend_info",
        "app_queue_enqueued_total",
        "app_queue_jobs_total",
        "app_queue_retries_total",
        "app_queue_dead_letters_total",
        "app_queue_processing_seconds",
    ] {
        assert!(
            exposed.get(family).is_some_and(|e| e.sampled),
            "{family} has samples after the traffic:\n{text}"
        );
    }
    let problems = tests::metrics_doc::compare(&documented, &exposed, &source);
    app.stop().await.expect("stop the app");
    assert!(
        problems.is_empty(),
        "{} disagrees with the app:\n  {}",
        page.display(),
        problems.join("\n  ")
    );
}
