//! Cache protections with real Redis and real databases: penetration (Bloom filter and
//! negative caching), breakdown (one load for a hot key across two instances), and
//! consistency (no instance serves the old value once the invalidation was delivered,
//! including the delayed second delete).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::app as tapp;

/// 1,000 requests for ids that do not exist reach the database at most a handful of times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penetration_bloom_filter_and_negative_cache() {
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = tapp::sqlite_url(dir.path());
    let c = tapp::client();

    // Instance with the Bloom filter: distinct unknown ids never reach the database.
    let app = tapp::start(tapp::test_config(&db, &redis.url())).await;
    let base = tapp::base(&app);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            tapp::create_user(&c, &base, &format!("p{i}"), &format!("p{i}@example.org")).await,
        );
    }
    tapp::wait_bloom_ready(&app).await;
    let before = app.state.metrics.user_db_loads();
    let base2 = base.clone();
    let results = futures::future::join_all((0..1000i64).map(|i| {
        let (c, base) = (c.clone(), base2.clone());
        async move {
            c.get(format!("{base}/users/{}", 5_000_000 + i * 7919))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    }))
    .await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(404))),
        "every unknown id is a 404"
    );
    let loads = app.state.metrics.user_db_loads() - before;
    let absent = app
        .state
        .metrics
        .bloom_checks
        .with_label_values(&["absent"])
        .get();
    println!("bloom: 1000 unknown ids -> {loads} database loads, {absent} bloom rejections");
    assert!(
        loads <= 5,
        "{loads} database loads for 1000 unknown ids (bloom filter)"
    );
    // No false negatives: every existing user is still found.
    for id in &ids {
        assert!(
            tapp::user_name(&c, &base, *id).await.is_some(),
            "user {id} must be found"
        );
    }
    // A user created now is found at once (its id went into the shared filter).
    let fresh = tapp::create_user(&c, &base, "late", "late@example.org").await;
    assert_eq!(
        tapp::user_name(&c, &base, fresh).await.as_deref(),
        Some("late")
    );
    app.stop().await.unwrap();

    // Instance without the Bloom filter: negative caching alone keeps repeats away.
    let mut cfg = tapp::test_config(&db, &redis.url());
    cfg.cache.bloom_enabled = false;
    cfg.cache.key_prefix = "nobloom".into();
    cfg.cache.negative_ttl_ms = 60_000;
    let app = tapp::start(cfg).await;
    let base = tapp::base(&app);
    let before = app.state.metrics.user_db_loads();
    let mut ok = 0;
    for round in 0..200 {
        for k in 0..5i64 {
            let _ = round;
            let r = c
                .get(format!("{base}/users/{}", 9_000_000 + k))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404);
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    let loads = app.state.metrics.user_db_loads() - before;
    println!("negative cache: 1000 requests for 5 unknown ids -> {loads} database loads");
    assert!(
        loads <= 5,
        "{loads} database loads for 5 unknown ids requested 1000 times"
    );
    app.stop().await.unwrap();
}

/// 1,000 concurrent requests for one expired hot key over two instances: at most two
/// database loads (the rebuild lock makes it one in practice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakdown_one_load_for_a_hot_key_across_two_instances() {
    support::raise_fd_limit();
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = tapp::sqlite_url(dir.path());
    let mut cfg = tapp::test_config(&db, &redis.url());
    // Waiters poll the rebuilt value for up to 10 s: generous for a loaded machine.
    cfg.cache.lock_wait_ms = 10_000;
    cfg.cache.lock_ttl_ms = 15_000;
    let a = tapp::start(cfg.clone()).await;
    let b = tapp::start(cfg).await;
    let c = tapp::client();
    let hot = tapp::create_user(&c, &tapp::base(&a), "hot", "hot@example.org").await;
    for round in 0..3 {
        // Expire the hot key everywhere: L2 entry gone, L1 of both instances empty.
        redis.cli(&["DEL", &format!("app:{{user:{hot}}}")]);
        a.state
            .cache
            .invalidate_local(app::cache::Key::user(hot))
            .await;
        b.state
            .cache
            .invalidate_local(app::cache::Key::user(hot))
            .await;
        let before = a.state.metrics.user_db_loads() + b.state.metrics.user_db_loads();
        let barrier = Arc::new(tokio::sync::Barrier::new(1000));
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let url = format!(
                    "{}/users/{hot}",
                    if i % 2 == 0 {
                        tapp::base(&a)
                    } else {
                        tapp::base(&b)
                    }
                );
                let (c, barrier) = (c.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    c.get(url).send().await.map(|r| r.status().as_u16())
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Ok(200)) {
                ok += 1;
            }
        }
        assert_eq!(ok, 1000, "every request for the hot key succeeds");
        let loads = a.state.metrics.user_db_loads() + b.state.metrics.user_db_loads() - before;
        let m = |s: &app::server::RunningApp, o: &str| {
            s.state.metrics.lock_waits.with_label_values(&[o]).get()
        };
        println!(
            "round {round}: 1000 concurrent requests over 2 instances -> {loads} database loads \
             (coalesced in-process: {}, lock waits served: {})",
            a.state.metrics.coalesced.get() + b.state.metrics.coalesced.get(),
            m(&a, "waited_hit") + m(&b, "waited_hit"),
        );
        assert!(
            loads <= 2,
            "round {round}: {loads} database loads for one hot key"
        );
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Two instances sharing PostgreSQL and Redis: after an update returns, once the
/// invalidation has reached the other instance, neither serves the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_after_update_across_instances() {
    let redis = support::RedisServer::start();
    let pg = support::Postgres::start();
    let db = pg.create_database("consistency");
    let c = tapp::client();

    // Phase 1: no delayed deletes during the phase, so every message B counts is the
    // update's own invalidation.
    let mut cfg = tapp::test_config(&db, &redis.url());
    cfg.cache.l1_ttl_ms = 600_000; // only invalidation can drop the L1 copy
    cfg.cache.delayed_delete_ms = 600_000;
    let a = tapp::start(cfg.clone()).await;
    let b = tapp::start(cfg).await;
    tapp::wait_subscribed(&[&a, &b]).await;
    let (ba, bb) = (tapp::base(&a), tapp::base(&b));
    let id = tapp::create_user(&c, &ba, "v0", "cons@example.org").await;
    let mut waits = Vec::new();
    for version in 1..=5 {
        // Warm both L1s with the current value.
        for base in [&ba, &bb] {
            for _ in 0..3 {
                assert_eq!(
                    tapp::user_name(&c, base, id).await,
                    Some(format!("v{}", version - 1))
                );
            }
        }
        let seen_by_b = tapp::invalidations_received(&b);
        let t0 = Instant::now();
        let r = c
            .patch(format!("{ba}/users/{id}"))
            .json(&serde_json::json!({"name": format!("v{version}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let delivered = support::wait_until_async(
            Duration::from_secs(30),
            Duration::from_millis(1),
            || async { tapp::invalidations_received(&b) > seen_by_b },
        )
        .await;
        assert!(
            delivered,
            "invalidation not delivered to instance B within 30 s"
        );
        waits.push(t0.elapsed().as_secs_f64() * 1e3);
        for base in [&ba, &bb] {
            for _ in 0..20 {
                assert_eq!(
                    tapp::user_name(&c, base, id).await,
                    Some(format!("v{version}")),
                    "stale read from {base}"
                );
            }
        }
    }
    waits.sort_by(f64::total_cmp);
    println!(
        "invalidation reached instance B after the PATCH was sent: median {:.1} ms, max {:.1} ms",
        waits[2], waits[4]
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    // Phase 2: the delayed second delete removes a stale L2 value that a racing reader
    // wrote back (staged: the old envelope is put into Redis right after the update).
    let mut cfg = tapp::test_config(&db, &redis.url());
    cfg.cache.l1_ttl_ms = 600_000;
    cfg.cache.delayed_delete_ms = 3_000;
    let a = tapp::start(cfg.clone()).await;
    let b = tapp::start(cfg).await;
    tapp::wait_subscribed(&[&a, &b]).await;
    let (ba, bb) = (tapp::base(&a), tapp::base(&b));
    let done = |s: &app::server::RunningApp| {
        s.state
            .metrics
            .delayed_deletes
            .with_label_values(&["done"])
            .get()
    };
    let done_before = done(&a);
    let seen_by_b = tapp::invalidations_received(&b);
    let r = c
        .patch(format!("{ba}/users/{id}"))
        .json(&serde_json::json!({"name": "final"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let far = app::store::now_ms() + 3_600_000;
    let stale = format!(
        "{far}|{{\"id\":{id},\"name\":\"stale\",\"email\":\"cons@example.org\",\"created_at\":0,\"updated_at\":0}}"
    );
    redis.cli(&["SET", &format!("app:{{user:{id}}}"), &stale]);
    assert_eq!(
        done(&a),
        done_before,
        "the delayed delete ran before the race was staged (3 s): machine too loaded"
    );
    let deleted = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || async { done(&a) > done_before },
    )
    .await;
    assert!(deleted, "delayed delete did not run within 60 s");
    // B gets two messages: the immediate invalidation and the delayed one.
    let delivered = support::wait_until_async(
        Duration::from_secs(30),
        Duration::from_millis(5),
        || async { tapp::invalidations_received(&b) >= seen_by_b + 2 },
    )
    .await;
    assert!(
        delivered,
        "delayed invalidation not delivered to instance B within 30 s"
    );
    for base in [&ba, &bb] {
        assert_eq!(
            tapp::user_name(&c, base, id).await.as_deref(),
            Some("final"),
            "after the delayed delete"
        );
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// PTTL (ms) of the L2 value of user `id` under `prefix`, read right after the GET that
/// cached it; and how long that GET + PTTL pair took (the most the TTL can have run down
/// since it was set).
async fn cached_pttl(
    c: &reqwest::Client,
    base: &str,
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    id: i64,
) -> (i64, u64) {
    let began = Instant::now();
    assert!(tapp::user_name(c, base, id).await.is_some(), "user {id}");
    let key =
        app::cache::KeySpace::new(prefix, "invalidate", None).value(&app::cache::Key::user(id));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(conn)
        .await
        .expect("PTTL");
    assert!(pttl > 0, "{key} has no TTL in Redis (PTTL {pttl})");
    (pttl, began.elapsed().as_millis() as u64 + 1)
}

/// Avalanche protection: values cached at the same moment get TTLs spread over the whole
/// `cache.ttl_jitter_pct` band, so they do not all expire (and reach the database) in the
/// same instant. The same reads with a jitter of 0 give every value the same TTL: the
/// control that shows the spread comes from the jitter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_jitter_spreads_l2_expiries() {
    const USERS: usize = 200;
    const TTL_MS: u64 = 600_000;
    const STALE_MS: u64 = 30_000;
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = tapp::sqlite_url(dir.path());
    let c = tapp::client();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");

    // The users are written by an instance of their own, so that the write path's deletes
    // (immediate and delayed) never touch the values measured below.
    let seed = tapp::start(tapp::test_config(&db, &redis.url())).await;
    let base = tapp::base(&seed);
    let mut ids = Vec::new();
    for i in 0..USERS {
        ids.push(
            tapp::create_user(&c, &base, &format!("j{i}"), &format!("j{i}@example.org")).await,
        );
    }
    seed.stop().await.unwrap();

    let mut spans = Vec::new();
    for pct in [10u8, 0] {
        let prefix = format!("jitter{pct}");
        let mut cfg = tapp::test_config(&db, &redis.url());
        cfg.cache.key_prefix = prefix.clone();
        cfg.cache.l1_enabled = false;
        cfg.cache.bloom_enabled = false;
        cfg.cache.l2_ttl_ms = TTL_MS;
        cfg.cache.l2_stale_ms = STALE_MS;
        cfg.cache.ttl_jitter_pct = pct;
        let app = tapp::start(cfg).await;
        let base = tapp::base(&app);
        let f = f64::from(pct) / 100.0;
        let lowest = (TTL_MS as f64 * (1.0 - f)) as u64 + STALE_MS;
        let highest = (TTL_MS as f64 * (1.0 + f)).ceil() as u64 + STALE_MS;
        let mut ttls = Vec::new();
        for id in &ids {
            let (pttl, slack) = cached_pttl(&c, &base, &mut conn, &prefix, *id).await;
            let pttl = pttl as u64;
            assert!(
                pttl <= highest && pttl + slack >= lowest,
                "jitter {pct}%: user {id} got a TTL of {pttl} ms, outside {lowest}..={highest} ms"
            );
            ttls.push((pttl, slack));
        }
        app.stop().await.unwrap();
        let min = ttls.iter().map(|t| t.0).min().unwrap();
        let max = ttls.iter().map(|t| t.0).max().unwrap();
        let slack = ttls.iter().map(|t| t.1).max().unwrap();
        println!(
            "jitter {pct}%: {USERS} values cached together expire {min}..{max} ms later \
             (spread {} ms, allowed band {lowest}..={highest} ms)",
            max - min
        );
        spans.push((pct, max - min, slack, highest - lowest));
    }
    let (_, spread, slack, band) = spans[0];
    // The TTLs as set spread over at least the measured spread less the most any of them
    // ran down before its PTTL read. 200 draws from a uniform band cover most of it (less
    // than 80% has a probability of about 200 * 0.8^199, 10^-17).
    assert!(
        spread.saturating_sub(slack) >= band * 8 / 10,
        "jitter 10%: TTLs spread over {spread} ms (read-back slack {slack} ms), of a {band} ms band"
    );
    let (_, spread0, slack0, _) = spans[1];
    assert!(
        spread0 <= slack0,
        "jitter 0%: TTLs differ by {spread0} ms, more than the read-back slack {slack0} ms"
    );
}
