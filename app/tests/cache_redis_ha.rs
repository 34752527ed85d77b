//! The cache on highly available Redis, with real servers: a 3-master 3-replica Redis
//! Cluster and a Sentinel set (1 master, 2 replicas, 3 sentinels), each started by the test
//! on free loopback ports.
//!
//! - Every cache mechanism works unchanged (L2, Bloom filter, rebuild lock, L1 invalidation
//!   across instances), without a single failed Redis command (a key of a script in another
//!   slot would fail with CROSSSLOT); in the cluster, records and invalidation channels
//!   spread over every master.
//! - A master SIGKILLed under HTTP load (reads, updates, creates over two instances): no
//!   request fails, the replica takes over, the cache is used again, and afterwards both
//!   instances agree with the database. The report gives the Redis gap and the retried
//!   operations.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use app::cache::Key;
use app::server::RunningApp;
use app_redis::{RedisConn, RedisTarget, Timeouts, slot};
use app_testkit::redis_ha::{self, Ha, MigrationStep, RedisCluster, RedisSentinel};
use redis::AsyncCommands;
use support::app as tapp;
use support::probe;

/// The test's own connection, through the app's connection type.
fn redis_conn(ha: &Ha) -> RedisConn {
    let target = RedisTarget::parse(&ha.url()).expect("valid HA url");
    RedisConn::open(
        &target,
        Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(2),
        },
    )
    .expect("open redis connection")
}

fn value_key(id: i64) -> String {
    format!("app:{{user:{id}}}")
}

/// Waits until `app`'s scheduler did `n` delayed deletes (those of the creates), so they
/// cannot remove values the test reads afterwards.
async fn wait_delayed_deletes(app: &RunningApp, n: u64) {
    let m = &app.state.metrics.delayed_deletes;
    let ok = support::wait_until_async(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { m.with_label_values(&["done"]).get() >= n },
    )
    .await;
    assert!(
        ok,
        "the delayed deletes of the creates did not run within 30 s"
    );
}

async fn create_users(c: &reqwest::Client, base: &str, tag: &str, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            tapp::create_user(
                c,
                base,
                &format!("{tag}{i}"),
                &format!("{tag}{i}@example.org"),
            )
            .await,
        );
    }
    ids
}

/// Waits (bounded) until `app` answers `want` for user `id`.
async fn wait_name(c: &reqwest::Client, app: &RunningApp, id: i64, want: Option<&str>) -> bool {
    let base = tapp::base(app);
    support::wait_until_async(
        Duration::from_secs(15),
        Duration::from_millis(20),
        || async { tapp::user_name(c, &base, id).await.as_deref() == want },
    )
    .await
}

/// Every cache mechanism on `ha`, over two instances sharing one SQLite file.
async fn cache_works(ha: &mut Ha) {
    support::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &ha.url());
    // Only an invalidation can refresh an L1 entry within the test.
    cfg.cache.l1_ttl_ms = 600_000;
    cfg.cache.lock_wait_ms = 10_000;
    cfg.cache.lock_ttl_ms = 15_000;
    let a = tapp::start(cfg.clone()).await;
    let b = tapp::start(cfg).await;
    tapp::wait_subscribed(&[&a, &b]).await;
    let c = tapp::client();
    let (base_a, base_b) = (tapp::base(&a), tapp::base(&b));
    let ids = create_users(&c, &base_a, "u", 30).await;
    tapp::wait_bloom_ready(&a).await;
    tapp::wait_bloom_ready(&b).await;
    wait_delayed_deletes(&a, ids.len() as u64).await;

    // L2: values written through both instances land in Redis under per-record tags.
    for id in &ids {
        assert!(tapp::user_name(&c, &base_a, *id).await.is_some());
        assert!(tapp::user_name(&c, &base_b, *id).await.is_some());
    }
    let mut conn = redis_conn(ha);
    for id in &ids {
        let n: i64 = conn.exists(value_key(*id)).await.expect("EXISTS");
        assert_eq!(n, 1, "L2 holds {}", value_key(*id));
    }

    // Penetration: unknown ids are answered by the Bloom filter, not the database.
    let before = a.state.metrics.user_db_loads();
    for i in 0..200i64 {
        let r = c
            .get(format!("{base_a}/users/{}", 8_000_000 + i * 13))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let loads = a.state.metrics.user_db_loads() - before;
    assert!(loads <= 5, "{loads} database loads for 200 unknown ids");

    // Breakdown: an expired hot key, 200 concurrent requests over both instances, at most
    // one load per instance (the rebuild lock makes it one in practice).
    let hot = ids[0];
    let _: i64 = conn.del(value_key(hot)).await.expect("DEL");
    for s in [&a, &b] {
        s.state.cache.invalidate_local(Key::user(hot)).await;
    }
    let before = a.state.metrics.user_db_loads() + b.state.metrics.user_db_loads();
    let acquired = |s: &RunningApp| {
        s.state
            .metrics
            .lock_waits
            .with_label_values(&["acquired"])
            .get()
    };
    let acquired_before = acquired(&a) + acquired(&b);
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let url = format!("{}/users/{hot}", if i % 2 == 0 { &base_a } else { &base_b });
            let (c, barrier) = (c.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                c.get(url).send().await.map(|r| r.status().as_u16())
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Ok(200)));
    }
    let loads = a.state.metrics.user_db_loads() + b.state.metrics.user_db_loads() - before;
    assert!(loads <= 2, "{loads} database loads for one hot key");
    assert!(
        acquired(&a) + acquired(&b) > acquired_before,
        "the rebuild lock was taken"
    );

    // L1 invalidation across instances: b holds the user in L1 (long TTL); an update and a
    // delete through a reach b only through the invalidation channel.
    let x = ids[1];
    assert!(tapp::user_name(&c, &base_b, x).await.is_some());
    let received_before = tapp::invalidations_received(&b);
    let r = c
        .patch(format!("{base_a}/users/{x}"))
        .json(&serde_json::json!({"name": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        wait_name(&c, &b, x, Some("renamed")).await,
        "b still serves the old name 15 s after the update"
    );
    assert!(
        tapp::invalidations_received(&b) > received_before,
        "b received the invalidation"
    );
    let r = c
        .delete(format!("{base_a}/users/{x}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        wait_name(&c, &b, x, None).await,
        "b still serves a deleted user 15 s after the delete"
    );
    // A user created on one instance is found on the other at once (Bloom bits).
    let fresh = tapp::create_user(&c, &base_b, "fresh", "fresh@example.org").await;
    assert_eq!(
        tapp::user_name(&c, &base_a, fresh).await.as_deref(),
        Some("fresh")
    );

    let errors = a.state.metrics.redis_errors_total() + b.state.metrics.redis_errors_total();
    assert_eq!(
        errors,
        0,
        "failed Redis commands on a healthy {}",
        ha.name()
    );

    if let Ha::Cluster(cl) = ha {
        // Records spread over every master, and so do the sharded invalidation channels.
        let masters = cl.masters();
        assert_eq!(masters.len(), 3);
        let mut per_master = std::collections::BTreeMap::new();
        for id in &ids[2..] {
            let port = cl.master_of_slot(slot::key_slot(value_key(*id).as_bytes()));
            *per_master.entry(port).or_insert(0) += 1;
        }
        let mut channels = 0;
        for m in &masters {
            let out = redis_ha::cli(m.port, &["PUBSUB", "SHARDCHANNELS", "app:*"]);
            let n = out.lines().filter(|l| !l.is_empty()).count();
            channels += n;
            assert!(n >= 1, "master {} holds no invalidation channel", m.port);
        }
        println!("cluster: records per master {per_master:?}; {channels} sharded channels");
        assert_eq!(
            per_master.len(),
            3,
            "records on every master: {per_master:?}"
        );
        assert_eq!(channels, 16, "16 sharded channels, each on one master");

        // A slot moving under the cache: half-moved (ASK redirects), then moved (MOVED and a
        // new slot map). a reads from L2 throughout, without a failed command.
        let y = ids[2];
        let key = value_key(y);
        let slot = slot::key_slot(key.as_bytes());
        let from = cl.master_of_slot(slot);
        let to = masters
            .iter()
            .find(|m| m.port != from)
            .expect("another master")
            .port;
        for step in [MigrationStep::Started, MigrationStep::Finished] {
            cl.migrate_slot(slot, to, step);
            a.state.cache.invalidate_local(Key::user(y)).await;
            let hits = a.state.metrics.lookups("l2", "hit");
            assert!(tapp::user_name(&c, &base_a, y).await.is_some());
            assert_eq!(
                a.state.metrics.lookups("l2", "hit"),
                hits + 1,
                "{step:?}: the value was read from L2"
            );
            // The rebuild lock and its release script run in the moving slot too.
            let _: i64 = conn.del(&key).await.expect("DEL through the redirect");
            a.state.cache.invalidate_local(Key::user(y)).await;
            assert!(tapp::user_name(&c, &base_a, y).await.is_some());
        }
        assert_eq!(cl.master_of_slot(slot), to, "slot {slot} moved");
        let n: i64 = conn.exists(&key).await.expect("EXISTS");
        assert_eq!(n, 1, "the value was written again on the new owner");
        let errors = a.state.metrics.redis_errors_total();
        assert_eq!(errors, 0, "failed Redis commands while slot {slot} moved");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// `app check-config` names the mode `redis.url` selects (and hides passwords).
#[test]
fn check_config_names_the_redis_mode() {
    let run = |env: &[(&str, &str)]| tapp::app_cli(env, &["check-config"]);
    let (ok, out, _) = run(&[]);
    assert!(ok);
    assert!(
        out.starts_with("# redis mode: single server 127.0.0.1:6379"),
        "{out}"
    );
    let queue = ("APP_QUEUE__REDIS_URL", "redis://127.0.0.1:6379/");
    let (ok, out, err) = run(&[
        (
            "APP_REDIS__URL",
            "redis+cluster://:pw-s3cr3t@10.0.0.1:7000,10.0.0.2:7000",
        ),
        queue,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("# redis mode: cluster: 2 seed node(s): 10.0.0.1:7000, 10.0.0.2:7000"),
        "{out}"
    );
    assert!(!out.contains("pw-s3cr3t"), "{out}");
    assert!(
        out.contains("url = \"redis+cluster://:***@10.0.0.1:7000"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        ("APP_REDIS__URL", "redis+sentinel://10.0.0.1,10.0.0.2/main"),
        queue,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("# redis mode: sentinel: master `main` (db 0)"),
        "{out}"
    );
    let (ok, _, err) = run(&[("APP_REDIS__URL", "redis+sentinel://10.0.0.1,10.0.0.2")]);
    assert!(!ok);
    assert!(err.contains("redis.url") && err.contains("master"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_a_cluster() {
    let mut ha = Ha::Cluster(RedisCluster::start(3, 1));
    cache_works(&mut ha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_sentinel() {
    let mut ha = Ha::Sentinel(RedisSentinel::start(2, 3));
    cache_works(&mut ha).await;
}

const WORKERS: u64 = 4;
/// Hard bounds on the load: it stops at the flag, or at these.
const MAX_REQUESTS_PER_WORKER: u64 = 20_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(150);

#[derive(Default)]
struct LoadReport {
    requests: u64,
    writes: u64,
    creates: Vec<i64>,
    failures: Vec<String>,
}

/// Reads (existing and unknown ids), updates and creates, spread over both instances,
/// until `stop`; every answer must have the expected status.
async fn load(
    bases: [String; 2],
    ids: Arc<Vec<i64>>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> LoadReport {
    let c = tapp::client();
    let started = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (c, bases, ids, stop, done) = (
                c.clone(),
                bases.clone(),
                ids.clone(),
                stop.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let mut rep = LoadReport::default();
                for i in 0..MAX_REQUESTS_PER_WORKER {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOAD_TIME {
                        break;
                    }
                    let base = &bases[((w + i) % 2) as usize];
                    let id = ids[((w * 31 + i * 7) as usize) % ids.len()];
                    let (req, want) = match i % 20 {
                        0 | 10 => (
                            c.patch(format!("{base}/users/{id}"))
                                .json(&serde_json::json!({"name": format!("w{w}i{i}")})),
                            200,
                        ),
                        5 => (
                            c.post(format!("{base}/users")).json(&serde_json::json!({
                                "name": format!("n{w}i{i}"),
                                "email": format!("n{w}i{i}@example.org"),
                            })),
                            201,
                        ),
                        1 | 11 => (c.get(format!("{base}/users/{}", 7_000_000 + i)), 404),
                        _ => (c.get(format!("{base}/users/{id}")), 200),
                    };
                    rep.requests += 1;
                    if matches!(i % 20, 0 | 5 | 10) {
                        rep.writes += 1;
                    }
                    match req.send().await {
                        Ok(r) if r.status().as_u16() == want => {
                            if want == 201
                                && let Ok(v) = r.json::<serde_json::Value>().await
                                && let Some(id) = v["id"].as_i64()
                            {
                                rep.creates.push(id);
                            }
                        }
                        Ok(r) => rep.failures.push(format!(
                            "status {} (want {want}) at {:?}",
                            r.status(),
                            started.elapsed()
                        )),
                        Err(e) => rep.failures.push(format!("transport: {e}")),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                rep
            })
        })
        .collect();
    let mut all = LoadReport::default();
    for t in tasks {
        let r = t.await.expect("load task");
        all.requests += r.requests;
        all.writes += r.writes;
        all.creates.extend(r.creates);
        all.failures.extend(r.failures);
    }
    all
}

/// How the master fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL: connections are reset, clients see errors at once.
    Kill,
    /// SIGSTOP: connections stay open and nothing answers (a hung host, a partition):
    /// clients see only timeouts. The old master is resumed after the failover and must
    /// not be used again (it comes back as a replica).
    Freeze,
}

/// A master failing under HTTP load; see the module docs.
async fn failover_under_load(mut ha: Ha, fault: Fault) {
    support::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &ha.url());
    cfg.redis.command_timeout_ms = 500;
    cfg.redis.connect_timeout_ms = 500;
    cfg.cache.breaker_open_ms = 300;
    cfg.cache.l1_ttl_ms = 600_000;
    // a: no L1, every read goes to Redis and feels the failover; b: L1 kept fresh only
    // by invalidations.
    let mut cfg_a = cfg.clone();
    cfg_a.cache.l1_enabled = false;
    let a = tapp::start(cfg_a).await;
    let b = tapp::start(cfg).await;
    tapp::wait_subscribed(&[&b]).await;
    let c = tapp::client();
    let ids = create_users(&c, &tapp::base(&a), "f", 40).await;
    tapp::wait_bloom_ready(&a).await;
    tapp::wait_bloom_ready(&b).await;
    for id in &ids {
        assert!(tapp::user_name(&c, &tapp::base(&a), *id).await.is_some());
        assert!(tapp::user_name(&c, &tapp::base(&b), *id).await.is_some());
    }
    let victim_key = value_key(ids[0]);
    let victim = ha.master_of(&victim_key);

    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let t0 = Instant::now();
    let prober = probe::spawn(ha.url(), &victim_key, stop.clone(), MAX_LOAD_TIME);
    let runner = tokio::spawn(load(
        [tapp::base(&a), tapp::base(&b)],
        Arc::new(ids.clone()),
        stop.clone(),
        done.clone(),
    ));
    assert!(
        support::wait_until_async(
            Duration::from_secs(60),
            Duration::from_millis(10),
            || async { done.load(Ordering::SeqCst) >= 400 }
        )
        .await,
        "load did not progress"
    );
    let before_kill = done.load(Ordering::SeqCst);
    // When b listens for invalidations again after losing its subscription.
    let resubscribed = {
        let m = b.state.metrics.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                if m.invalidation_resubscribed.get() >= 1 && m.invalidation_subscribed.get() == 1 {
                    return Some(start.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        })
    };
    let killed_at = t0.elapsed();
    // The harness blocks (processes, redis-cli): off the async workers.
    let promoted = tokio::task::block_in_place(|| {
        match fault {
            Fault::Kill => ha.node_mut(victim).kill(),
            Fault::Freeze => ha.node_mut(victim).pause(),
        }
        let promoted = ha.wait_promoted(victim, &victim_key);
        if fault == Fault::Freeze {
            ha.node_mut(victim).resume();
        }
        promoted
    });
    let promoted_at = t0.elapsed();
    // The app's own connection must reach the new master: L2 hits again on a.
    let hits = a.state.metrics.lookups("l2", "hit");
    let back = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            a.state.metrics.lookups("l2", "hit") > hits + 50
                && a.state.cache.breaker_state()
                    == Some(app::cache::BreakerState::Closed { failures: 0 })
        },
    )
    .await;
    // Load after the failover too.
    let after = done.load(Ordering::SeqCst);
    let more = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || async { done.load(Ordering::SeqCst) >= after + 400 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let rep = runner.await.unwrap();
    let samples = prober.await.unwrap();
    assert!(
        back,
        "the cache did not use Redis again within 60 s after the failover"
    );
    assert!(more, "load did not progress after the failover");

    let gap_end = probe::recovered_at(&samples);
    let probe_failures = probe::failures(&samples);
    let m = |s: &RunningApp| s.state.metrics.clone();
    let (ma, mb) = (m(&a), m(&b));
    let errors_by_op = |op: &str| {
        ma.redis_errors.with_label_values(&[op]).get()
            + mb.redis_errors.with_label_values(&[op]).get()
    };
    let ops = [
        "get", "set", "del", "lock", "unlock", "publish", "bloom", "exists",
    ];
    let errors: Vec<String> = ops
        .iter()
        .map(|op| format!("{op} {}", errors_by_op(op)))
        .collect();
    let retried = ma.delayed_deletes.with_label_values(&["retried"]).get()
        + mb.delayed_deletes.with_label_values(&["retried"]).get();
    println!(
        "{} failover: master {victim} {} at {killed_at:.1?} after {before_kill} requests; \
         replica {promoted} serving at {promoted_at:.1?}; redis gap seen by the probe: {}; \
         {probe_failures} probe writes failed",
        ha.name(),
        match fault {
            Fault::Kill => "SIGKILLed",
            Fault::Freeze => "frozen (SIGSTOP)",
        },
        match gap_end {
            Some(g) => format!("{:.1?}", g.saturating_sub(killed_at)),
            None => "none".into(),
        },
    );
    println!(
        "  HTTP: {} requests ({} writes, {} creates), {} failed; redis errors: {}; \
         breaker opened {}x; retried cache writes (scheduler): {retried}; \
         database loads {}; invalidation resubscriptions on b (L1 cleared): {}; \
         bloom bits set again by the keeper: {}",
        rep.requests,
        rep.writes,
        rep.creates.len(),
        rep.failures.len(),
        errors.join(", "),
        ma.breaker_opened.get() + mb.breaker_opened.get(),
        ma.user_db_loads() + mb.user_db_loads(),
        mb.invalidation_resubscribed.get(),
        ma.bloom_healed.get() + mb.bloom_healed.get(),
    );
    assert!(
        rep.failures.is_empty(),
        "requests failed during the failover: {:?}",
        &rep.failures[..rep.failures.len().min(10)]
    );
    assert!(probe_failures > 0, "the kill interrupted the victim's slot");

    // Afterwards both instances agree with the database, for every record (updates whose
    // invalidation was lost reach b through the resubscription, deletes retried).
    let mut all = ids.clone();
    all.extend(&rep.creates);
    let agree = support::wait_until_async(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            for id in &all {
                let want = a
                    .state
                    .store
                    .get_user(*id)
                    .await
                    .expect("database read")
                    .map(|u| u.name);
                for s in [&a, &b] {
                    if tapp::user_name(&c, &tapp::base(s), *id).await != want {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    assert!(
        agree,
        "an instance still serves an old value 30 s after the failover"
    );
    // b's subscription broke with the master (or a node) and was made again.
    let resubscribed = resubscribed.await.expect("watcher task");
    println!(
        "  {}: b listened for invalidations again {} after the kill",
        ha.name(),
        match resubscribed {
            Some(d) => format!("{d:.1?}"),
            None => "never (60 s)".into(),
        }
    );
    assert!(
        resubscribed.is_some(),
        "b's invalidation subscription was not restored within 60 s of the failover"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_under_load() {
    failover_under_load(Ha::Cluster(RedisCluster::start(3, 1)), Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_under_load() {
    failover_under_load(Ha::Sentinel(RedisSentinel::start(2, 3)), Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_frozen_under_load() {
    failover_under_load(Ha::Cluster(RedisCluster::start(3, 1)), Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_frozen_under_load() {
    failover_under_load(Ha::Sentinel(RedisSentinel::start(2, 3)), Fault::Freeze).await;
}
