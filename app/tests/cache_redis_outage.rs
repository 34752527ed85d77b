//! Redis failures never fail a request: killed in the middle of a load (served from the
//! database, the breaker opens, the cache is used again once Redis is back), and frozen
//! (commands time out; L1 keeps serving).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::app as tapp;

const WORKERS: u64 = 4;
const REQUESTS_PER_WORKER: u64 = 600;

/// Runs a bounded mixed load (reads of existing and unknown ids, some updates) and returns
/// the failures (transport errors or unexpected statuses) with their descriptions.
async fn load(base: String, ids: Arc<Vec<i64>>, done: Arc<AtomicU64>) -> Vec<String> {
    let c = tapp::client();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (c, base, ids, done) = (c.clone(), base.clone(), ids.clone(), done.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..REQUESTS_PER_WORKER {
                    let id = ids[((w * 31 + i * 7) as usize) % ids.len()];
                    let (req, want) = match i % 10 {
                        0 => (
                            c.patch(format!("{base}/users/{id}"))
                                .json(&serde_json::json!({"name": format!("w{w}i{i}")})),
                            200,
                        ),
                        1 => (c.get(format!("{base}/users/{}", 7_000_000 + i)), 404),
                        _ => (c.get(format!("{base}/users/{id}")), 200),
                    };
                    match req.send().await {
                        Ok(r) if r.status().as_u16() == want => {}
                        Ok(r) => failures.push(format!("status {} (want {want})", r.status())),
                        Err(e) => failures.push(format!("transport: {e}")),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    // Spread the load over time so the outage lands in its middle.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                failures
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_then_back() {
    let mut redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &redis.url());
    // L1 off: every read goes to Redis, so the outage is felt by every request.
    cfg.cache.l1_enabled = false;
    cfg.redis.command_timeout_ms = 500;
    cfg.cache.breaker_open_ms = 200;
    let app = tapp::start(cfg).await;
    let base = tapp::base(&app);
    let c = tapp::client();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            tapp::create_user(&c, &base, &format!("r{i}"), &format!("r{i}@example.org")).await,
        );
    }
    tapp::wait_bloom_ready(&app).await;
    let m = &app.state.metrics;

    let done = Arc::new(AtomicU64::new(0));
    let runner = tokio::spawn(load(base.clone(), Arc::new(ids.clone()), done.clone()));
    let total = WORKERS * REQUESTS_PER_WORKER;
    // Kill Redis once a quarter of the load is done.
    assert!(
        support::wait_until_async(
            Duration::from_secs(120),
            Duration::from_millis(5),
            || async { done.load(Ordering::SeqCst) >= total / 4 }
        )
        .await,
        "load did not progress"
    );
    let l2_hits_before_kill = m.lookups("l2", "hit");
    redis.kill();
    let killed_at = done.load(Ordering::SeqCst);
    let failures = runner.await.unwrap();
    println!(
        "redis killed after {killed_at} of {total} requests; failures: {}; redis errors: {}; breaker opened {} times; l2 hits before the kill: {l2_hits_before_kill}",
        failures.len(),
        m.redis_errors.with_label_values(&["get"]).get(),
        m.breaker_opened.get(),
    );
    assert!(
        failures.is_empty(),
        "requests failed while Redis was down: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(
        killed_at < total,
        "the kill must land in the middle of the load"
    );
    assert!(l2_hits_before_kill > 0, "L2 was used before the outage");
    assert!(
        m.breaker_opened.get() >= 1,
        "the breaker opened during the outage"
    );

    // Redis back (empty): the breaker closes and L2 serves hits again.
    redis.restart();
    let hits = m.lookups("l2", "hit");
    let back = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            for id in &ids[..5] {
                assert!(tapp::user_name(&c, &base, *id).await.is_some());
            }
            m.lookups("l2", "hit") > hits
        },
    )
    .await;
    assert!(
        back,
        "L2 was not used again within 60 s after Redis came back"
    );
    // The Bloom filter, wiped with Redis, is rebuilt from the database.
    tapp::wait_bloom_ready(&app).await;
    assert_eq!(
        app.state.cache.breaker_state(),
        Some(app::cache::BreakerState::Closed { failures: 0 })
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_is_bypassed() {
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &redis.url());
    cfg.redis.command_timeout_ms = 300;
    cfg.cache.breaker_open_ms = 300;
    cfg.cache.l1_ttl_ms = 600_000;
    let app = tapp::start(cfg).await;
    let base = tapp::base(&app);
    let c = tapp::client();
    let hot = tapp::create_user(&c, &base, "hot", "hot@example.org").await;
    let mut cold = Vec::new();
    for i in 0..10 {
        cold.push(
            tapp::create_user(&c, &base, &format!("c{i}"), &format!("c{i}@example.org")).await,
        );
    }
    assert!(tapp::user_name(&c, &base, hot).await.is_some()); // now in L1
    let m = &app.state.metrics;
    let l1_hits = m.lookups("l1", "hit");

    redis.pause();
    // The hot key is served from L1 without touching Redis; cold keys from the database
    // after a bounded wait on Redis.
    for _ in 0..50 {
        assert_eq!(
            tapp::user_name(&c, &base, hot).await.as_deref(),
            Some("hot")
        );
    }
    for id in &cold {
        assert!(
            tapp::user_name(&c, &base, *id).await.is_some(),
            "cold user {id} served while Redis is frozen"
        );
    }
    let r = c
        .patch(format!("{base}/users/{hot}"))
        .json(&serde_json::json!({"name": "hot2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "writes succeed while Redis is frozen");
    assert_eq!(
        tapp::user_name(&c, &base, hot).await.as_deref(),
        Some("hot2")
    );
    redis.resume();

    assert!(m.lookups("l1", "hit") >= l1_hits + 50);
    let timeouts: u64 = ["get", "del", "publish", "bloom", "lock"]
        .iter()
        .map(|op| m.redis_errors.with_label_values(&[op]).get())
        .sum();
    println!(
        "frozen redis: {timeouts} redis commands failed/timed out; breaker opened {} times",
        m.breaker_opened.get()
    );
    assert!(
        timeouts >= 1,
        "Redis commands did time out while it was frozen"
    );
    // Once Redis answers again, the failed deletes are retried and the breaker closes.
    let closed = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let _ = tapp::user_name(&c, &base, cold[0]).await;
            app.state.cache.breaker_state()
                == Some(app::cache::BreakerState::Closed { failures: 0 })
        },
    )
    .await;
    assert!(closed, "breaker did not close after Redis resumed");
    app.stop().await.unwrap();
}
