//! The figures the app exposes about its own runtime (design seed 2.5): the database pool's
//! saturation in `/metrics`, and the allocator `APP_ALLOCATOR` picks for the `app` binary.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::app::{self as a, client, metrics};

/// The value of an unlabelled series in a `/metrics` text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Every read goes to the database (no cache), through a pool of two connections, from 32
/// concurrent clients: the pool's series count each acquire, never show more connections in
/// use than the pool has, and drop back to zero when the load ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_saturation_is_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // No cache and no Bloom filter: Redis is never used (the URL names no server).
    let mut cfg = a::test_config(&a::sqlite_url(dir.path()), "redis://127.0.0.1:1/");
    cfg.cache.l1_enabled = false;
    cfg.cache.l2_enabled = false;
    cfg.cache.bloom_enabled = false;
    cfg.database.max_connections = 2;
    let app = a::start(cfg).await;
    let (c, base) = (client(), a::base(&app));
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(a::create_user(&c, &base, &format!("p{i}"), &format!("p{i}@example.org")).await);
    }
    let m0 = metrics(&c, &base).await;
    assert_eq!(
        series(&m0, "app_db_pool_max_connections"),
        Some(2.0),
        "{m0}"
    );
    let acquired0 = series(&m0, "app_db_pool_acquire_wait_seconds_count").unwrap_or(0.0);
    let loads0 = app.state.metrics.user_db_loads();

    let pool = app.state.store.pool_metrics().clone();
    let watch = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..2_000 {
            peak = peak.max(pool.in_use());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        peak
    });
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (c, base, ids) = (c.clone(), base.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..20 {
                let id = ids[(t + k) % ids.len()];
                assert!(a::user_name(&c, &base, id).await.is_some(), "user {id}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let peak = watch.await.unwrap();
    assert!(peak <= 2, "{peak} connections in use with a pool of 2");

    // Concurrent reads of one id share one database load (coalescing), so the pool sees one
    // acquire per load, not per request: every load the app counted went through the pool.
    let loads = app.state.metrics.user_db_loads() - loads0;
    let m1 = metrics(&c, &base).await;
    let acquired = series(&m1, "app_db_pool_acquire_wait_seconds_count").unwrap_or(0.0) - acquired0;
    assert!(
        loads >= 8,
        "{loads} database loads for 8 users read 640 times"
    );
    assert!(
        acquired >= loads as f64,
        "{acquired} acquires for {loads} database loads"
    );
    assert_eq!(
        series(&m1, "app_db_pool_connections_in_use"),
        Some(0.0),
        "{m1}"
    );
    assert!(
        m1.contains("app_db_pool_acquire_wait_seconds_bucket{le=\"0.001\"}"),
        "{m1}"
    );
    app.stop().await.unwrap();
}

/// `APP_ALLOCATOR` names the allocator of the `app` binary; a name it does not know is
/// refused before anything runs.
#[test]
fn unknown_allocator_is_refused() {
    let (ok, _, err) = a::app_cli(&[("APP_ALLOCATOR", "tcmalloc")], &["check-config"]);
    assert!(!ok, "app ran with APP_ALLOCATOR=tcmalloc");
    assert!(
        err.contains("APP_ALLOCATOR") && err.contains("tcmalloc") && err.contains("mimalloc"),
        "{err}"
    );
    for name in ["system", "jemalloc", "mimalloc", ""] {
        let (ok, _, err) = a::app_cli(&[("APP_ALLOCATOR", name)], &["check-config"]);
        assert!(ok, "APP_ALLOCATOR={name:?}: {err}");
    }
}

/// The binary runs on the allocator it was told to, and says so in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_its_allocator() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["jemalloc", "mimalloc"] {
        let port = support::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_app"))
            .arg("serve")
            .env_remove("APP_CONFIG")
            .env("APP_ALLOCATOR", name)
            .env("APP_LISTEN", format!("127.0.0.1:{port}"))
            .env("APP_DATABASE__URL", a::sqlite_url(dir.path()))
            .env("APP_CACHE__L1_ENABLED", "false")
            .env("APP_CACHE__L2_ENABLED", "false")
            .env("APP_CACHE__BLOOM_ENABLED", "false")
            .env("APP_QUEUE__WORKERS_IN_SERVE", "false")
            .env("APP_REDIS__URL", "redis://127.0.0.1:1/")
            .env("APP_SHUTDOWN__DRAIN_DELAY_MS", "0")
            .env("APP_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn app binary");
        let mut guard = support::ChildGuard::new("app", child);
        let (c, base) = (client(), format!("http://127.0.0.1:{port}"));
        let up = support::wait_until_async(
            Duration::from_secs(60),
            Duration::from_millis(50),
            || async {
                matches!(c.get(format!("{base}/metrics")).send().await, Ok(r) if r.status() == 200)
            },
        )
        .await;
        assert!(up, "app serve on {name} did not answer /metrics");
        let text = metrics(&c, &base).await;
        let want = format!("app_allocator_info{{allocator=\"{name}\"}} 1");
        assert!(text.contains(&want), "no `{want}` in:\n{text}");
        guard.signal(libc::SIGTERM);
        let status = guard.wait_exit(Duration::from_secs(30)).expect("app exits");
        assert!(status.success(), "{name}: exit status {status}");
    }
}
