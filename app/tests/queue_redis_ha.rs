//! The queue on highly available Redis while it fails or moves, with real servers started by
//! each test on free loopback ports, and two `app serve` instances (HTTP, in-process
//! workers) whose cache and queue both use it.
//!
//! - A master SIGKILLed under HTTP load (a 3-master 3-replica cluster, every queue over 3
//!   partitions, the victim the master of one; a Sentinel set, the victim its master):
//!   tasks are submitted (`POST /tasks`) and read (`GET /tasks/{id}`) before, during and
//!   after the failover, and no request fails (no 5xx, no transport error). Every accepted
//!   task ends `succeeded`, and ran once in effect: each is an `increment` of a counter of its
//!   own, fenced per task, so every counter ends at 1.
//! - `redis-cli --cluster reshard` moving a partition's slot to another master and back
//!   during the same load, then the same move held half-way (keys moved, slot not yet
//!   reassigned): same checks.
//!
//! Each test prints its report: the gap a probe saw in the victim's slot, the requests and
//! how many waited more than a second, and the queue's repeated commands by operation
//! (`app_queue_redis_retries_total`).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use app::queue::{JobState, Queue, QueueSettings};
use app::server::RunningApp;
use app_redis::slot;
use app_testkit::redis_ha::{Ha, MigrationStep, RedisCluster, RedisSentinel};
use redis::AsyncCommands;
use support::app as tapp;
use support::probe;

/// Concurrent HTTP clients.
const CLIENTS: u64 = 6;
/// Bounds of the load: it stops by itself.
const MAX_REQUESTS_PER_CLIENT: u64 = 5_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(180);
/// Requests of the load before and after the fault.
const REQUESTS_AROUND: u64 = 240;
/// How long the reshard test holds a slot half-moved (requests into it wait meanwhile).
const HALF_MOVED_FOR: Duration = Duration::from_secs(2);

/// Queue settings of the app instances and the test's own handle.
fn queue_settings(partitions: u32) -> QueueSettings {
    QueueSettings {
        partitions,
        claim_idle_ms: 5_000,
        block_ms: 500,
        mover_interval_ms: 100,
        // A failover here takes a few seconds (node timeout 3 s), more on a loaded machine:
        // requests wait through it rather than fail.
        redis_retry_ms: 40_000,
        ..Default::default()
    }
}

async fn start_apps(ha: &Ha, partitions: u32, db: &std::path::Path) -> [RunningApp; 2] {
    let mut cfg = tapp::test_config(&tapp::sqlite_url(db), &ha.url());
    cfg.queue = queue_settings(partitions);
    cfg.http.request_timeout_ms = 60_000;
    let start = || async {
        app::server::start_with(cfg.clone(), app::wiring::extensions)
            .await
            .expect("start app with the queue")
    };
    [start().await, start().await]
}

/// What the load did.
#[derive(Default)]
struct LoadReport {
    requests: u64,
    reads: u64,
    /// Requests that took more than a second (they waited through the fault).
    slow: u64,
    /// Accepted task -> its counter.
    accepted: BTreeMap<String, String>,
    failures: Vec<String>,
}

impl LoadReport {
    fn absorb(&mut self, r: LoadReport) {
        self.requests += r.requests;
        self.reads += r.reads;
        self.slow += r.slow;
        self.accepted.extend(r.accepted);
        self.failures.extend(r.failures);
    }

    /// Prints what the load did (after the fault's own line) and fails the test if a
    /// request failed during `what`.
    fn check(&self, what: &str, retried: &BTreeMap<String, u64>) {
        println!(
            "  HTTP: {} requests ({} task reads, {} tasks accepted), {} failed, {} waited > 1 s; \
             queue commands repeated after transient errors: {retried:?}",
            self.requests,
            self.reads,
            self.accepted.len(),
            self.failures.len(),
            self.slow,
        );
        assert!(
            self.failures.is_empty(),
            "requests failed during {what}: {:?}",
            &self.failures[..self.failures.len().min(10)]
        );
    }
}

/// The load's stop flag and its count of answered requests.
#[derive(Default)]
struct Progress {
    /// Shared with the probe.
    stop: Arc<AtomicBool>,
    done: AtomicU64,
}

impl Progress {
    fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits (bounded) until `n` more requests were answered.
    async fn wait_more(&self, n: u64, what: &str) {
        let want = self.done() + n;
        let ok = support::wait_until_async(
            Duration::from_secs(120),
            Duration::from_millis(10),
            || async { self.done() >= want },
        )
        .await;
        assert!(ok, "the load did not progress {what}");
    }
}

/// Submits `increment` tasks (a counter of their own each) and reads back earlier ones,
/// over both instances, until `stop`; every answer must be 202 or 200.
async fn load(bases: [String; 2], run: &'static str, progress: Arc<Progress>) -> LoadReport {
    let c = tapp::client();
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (c, bases, progress) = (c.clone(), bases.clone(), progress.clone());
            tokio::spawn(async move {
                let (stop, done) = (&progress.stop, &progress.done);
                let mut rep = LoadReport::default();
                let mut mine: Vec<String> = Vec::new();
                for i in 0..MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > MAX_LOAD_TIME {
                        break;
                    }
                    let base = &bases[((w + i) % 2) as usize];
                    let t0 = Instant::now();
                    let read = i % 3 == 2 && !mine.is_empty();
                    let r = if read {
                        let id = &mine[(i as usize * 7) % mine.len()];
                        rep.reads += 1;
                        c.get(format!("{base}/tasks/{id}")).send().await
                    } else {
                        let counter = format!("{run}-{w}-{i}");
                        let r = c
                            .post(format!("{base}/tasks"))
                            .json(&serde_json::json!({
                                "kind": "increment",
                                "input": {"counter": counter, "by": 1},
                            }))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().as_u16() == 202 => {
                                let v: serde_json::Value = r.json().await.unwrap_or_default();
                                match v["id"].as_str() {
                                    Some(id) => {
                                        rep.accepted.insert(id.to_string(), counter);
                                        mine.push(id.to_string());
                                    }
                                    None => rep.failures.push(format!("202 without an id: {v}")),
                                }
                                rep.requests += 1;
                                done.fetch_add(1, Ordering::SeqCst);
                                if t0.elapsed() > Duration::from_secs(1) {
                                    rep.slow += 1;
                                }
                                continue;
                            }
                            other => other,
                        }
                    };
                    rep.requests += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                    if t0.elapsed() > Duration::from_secs(1) {
                        rep.slow += 1;
                    }
                    match r {
                        Ok(r) if r.status().as_u16() == if read { 200 } else { 202 } => {}
                        Ok(r) => rep.failures.push(format!(
                            "{} {} at {:?}: {}",
                            if read { "GET" } else { "POST" },
                            r.status(),
                            started.elapsed(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => rep.failures.push(format!("transport: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                rep
            })
        })
        .collect();
    let mut all = LoadReport::default();
    for t in clients {
        all.absorb(t.await.expect("load client"));
    }
    all
}

/// Every accepted task ends succeeded, with one success in its history, and its counter
/// at 1: none was lost, none had its effect twice.
async fn check_exactly_once(q: &Queue, accepted: &BTreeMap<String, String>) {
    let mut pending: Vec<&String> = accepted.keys().collect();
    let ok =
        support::wait_until_async(Duration::from_secs(120), Duration::from_millis(200), || {
            let q = q.clone();
            let ids: Vec<String> = pending.iter().map(|s| s.to_string()).collect();
            async move {
                for id in &ids {
                    match q.get(id).await {
                        Ok(Some(j)) if j.state == JobState::Succeeded => {}
                        _ => return false,
                    }
                }
                true
            }
        })
        .await;
    if !ok {
        let mut left = Vec::new();
        for id in pending.drain(..) {
            let j = q.get(id).await.ok().flatten();
            if j.as_ref().map(|j| j.state) != Some(JobState::Succeeded) {
                left.push(format!(
                    "{id}: {:?}",
                    j.map(|j| (j.state, j.attempts, j.history))
                ));
            }
        }
        panic!(
            "{} accepted tasks did not succeed within 120 s: {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
    }
    let mut c = q.connection();
    for (id, counter) in accepted {
        let v: Option<i64> = c
            .get(app::tasks::counter_key(q, counter))
            .await
            .expect("read counter");
        assert_eq!(v, Some(1), "task {id} had its effect {v:?} times");
        let j = q.get(id).await.expect("read task").expect("task record");
        assert_eq!(support::successes(&j), 1, "task {id}: {:?}", j.history);
    }
}

/// `app_queue_redis_retries_total` of both instances, by operation.
async fn retries(c: &reqwest::Client, apps: &[RunningApp; 2]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for a in apps {
        let text = tapp::metrics(c, &tapp::base(a)).await;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("app_queue_redis_retries_total{op=\"") else {
                continue;
            };
            let Some((op, value)) = rest.split_once("\"} ") else {
                continue;
            };
            *out.entry(op.to_string()).or_insert(0) += value.trim().parse::<u64>().unwrap_or(0);
        }
    }
    out
}

/// A master SIGKILLed under load; see the module docs.
async fn master_killed_under_load(mut ha: Ha, partitions: u32, run: &'static str) {
    support::raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let apps = start_apps(&ha, partitions, dir.path()).await;
    let q = Queue::connect(&ha.url(), queue_settings(partitions))
        .await
        .expect("the test's queue handle");
    // The victim: the master of the first partition's slot.
    let victim_key = q.keys().stream(q.keys().partition(0).tag, "tasks");
    let victim = tokio::task::block_in_place(|| ha.master_of(&victim_key));

    let progress = Arc::new(Progress::default());
    let t0 = Instant::now();
    let prober = probe::spawn(ha.url(), &victim_key, progress.stop.clone(), MAX_LOAD_TIME);
    let runner = tokio::spawn(load(
        [tapp::base(&apps[0]), tapp::base(&apps[1])],
        run,
        progress.clone(),
    ));
    progress.wait_more(REQUESTS_AROUND, "before the kill").await;
    let before = progress.done();
    let killed_at = t0.elapsed();
    let promoted = tokio::task::block_in_place(|| {
        ha.node_mut(victim).kill();
        ha.wait_promoted(victim, &victim_key)
    });
    let promoted_at = t0.elapsed();
    progress
        .wait_more(REQUESTS_AROUND, "after the failover")
        .await;
    progress.stop();
    let rep = runner.await.unwrap();
    let samples = prober.await.unwrap();
    let c = tapp::client();
    let retried = retries(&c, &apps).await;
    println!(
        "{} failover: master {victim} SIGKILLed at {killed_at:.1?} after {before} requests; \
         replica {promoted} serving at {promoted_at:.1?}; gap seen by the probe: {}; \
         {} probe writes failed",
        ha.name(),
        match probe::recovered_at(&samples) {
            Some(g) => format!("{:.1?}", g.saturating_sub(killed_at)),
            None => "none".into(),
        },
        probe::failures(&samples),
    );
    rep.check("the failover", &retried);
    assert!(
        probe::failures(&samples) > 0,
        "the kill did not interrupt the victim's slot: the test proves nothing"
    );
    check_exactly_once(&q, &rep.accepted).await;
    for a in &apps {
        a.shutdown();
    }
    for a in apps {
        a.wait().await.expect("app stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_under_task_load() {
    let ha = Ha::Cluster(tokio::task::block_in_place(|| RedisCluster::start(3, 1)));
    master_killed_under_load(ha, 3, "ck").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_master_killed_under_task_load() {
    let ha = Ha::Sentinel(tokio::task::block_in_place(|| RedisSentinel::start(2, 3)));
    master_killed_under_load(ha, 1, "sk").await;
}

/// `redis-cli --cluster reshard` of `count` slots from `from` to `to`; checks that `slot`
/// moved and returns how long it took.
fn reshard(
    cluster: &mut RedisCluster,
    (from, to): (u16, u16),
    count: usize,
    slot: u16,
) -> Duration {
    tokio::task::block_in_place(|| {
        let t = Instant::now();
        cluster.reshard(from, to, count);
        let took = t.elapsed();
        assert_eq!(
            cluster.master_of_slot(slot),
            to,
            "the reshard from {from} to {to} did not move slot {slot}"
        );
        took
    })
}

/// `redis-cli --cluster reshard` moves the first partition's slot (and the slots below it
/// on its master) to another master, then back, while tasks are submitted and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reshard_under_task_load() {
    support::raise_fd_limit();
    // Four partitions: the first one's tag hashes to a low slot, so few slots move.
    const PARTITIONS: u32 = 4;
    let mut cluster = tokio::task::block_in_place(|| RedisCluster::start(3, 0));
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &url);
    cfg.queue = queue_settings(PARTITIONS);
    cfg.http.request_timeout_ms = 60_000;
    let apps = [
        app::server::start_with(cfg.clone(), app::wiring::extensions)
            .await
            .expect("start app"),
        app::server::start_with(cfg, app::wiring::extensions)
            .await
            .expect("start app"),
    ];
    let q = Queue::connect(&url, queue_settings(PARTITIONS))
        .await
        .expect("queue handle");
    let tag = q.keys().partition(0).tag.to_string();
    let moving = slot::key_slot(tag.as_bytes());
    let (from, to, count) = tokio::task::block_in_place(|| {
        let masters = cluster.masters();
        let from = masters
            .iter()
            .find(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&moving)))
            .expect("a master serves the partition's slot");
        let lowest = from.slots.iter().map(|&(a, _)| a).min().unwrap_or(0);
        let to = masters
            .iter()
            .find(|m| m.port != from.port)
            .expect("another master");
        (from.port, to.port, usize::from(moving - lowest) + 1)
    });
    assert!(
        count <= 512,
        "partition slot {moving} is too far into its master's range"
    );

    let progress = Arc::new(Progress::default());
    let runner = tokio::spawn(load(
        [tapp::base(&apps[0]), tapp::base(&apps[1])],
        "rs",
        progress.clone(),
    ));
    progress
        .wait_more(REQUESTS_AROUND, "before the reshard")
        .await;
    let there = reshard(&mut cluster, (from, to), count, moving);
    progress
        .wait_more(REQUESTS_AROUND / 2, "between the reshards")
        .await;
    let back = reshard(&mut cluster, (to, from), count, moving);
    // The same move held half-way under load for a while: the slot's keys are on the target
    // while the slot is still the source's (clients get ASK; a script whose keys are split
    // between the two, like an enqueue that creates a job, gets TRYAGAIN and is repeated,
    // so enqueues into this partition wait), then the move is finished (MOVED).
    tokio::task::block_in_place(|| cluster.migrate_slot(moving, to, MigrationStep::Started));
    tokio::time::sleep(HALF_MOVED_FOR).await;
    tokio::task::block_in_place(|| cluster.migrate_slot(moving, to, MigrationStep::Finished));
    progress
        .wait_more(REQUESTS_AROUND / 2, "after the moves")
        .await;
    progress.stop();
    let rep = runner.await.unwrap();
    let c = tapp::client();
    let retried = retries(&c, &apps).await;
    println!(
        "reshard: {count} slots (up to {moving}, partition {tag}) from {from} to {to} in {there:.1?} \
         and back in {back:.1?}, then slot {moving} moved again held half-way"
    );
    rep.check("the reshard", &retried);
    check_exactly_once(&q, &rep.accepted).await;
    for a in &apps {
        a.shutdown();
    }
    for a in apps {
        a.wait().await.expect("app stops");
    }
}
