//! The queue conformance suite, written once and run against both backends (Redis Streams
//! and RabbitMQ) by `queue_conformance_redis.rs` and `queue_conformance_rabbit.rs` through
//! [`conformance_suite!`]. Every test gets its own redis-server and its own key/queue-name
//! prefix, so tests sharing one RabbitMQ broker never see each other's jobs.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use app::queue::{
    JobError, JobState, NewJob, Queue, QueueBackend, QueueSettings, Registry, Schedule, WorkerPool,
};
use redis::AsyncCommands;
use serde_json::json;

use app_testkit::redis_ha::{self, Ha};

use super::{ChildGuard, RedisServer, wait_until_async};

pub mod stats;
// Only the binaries that expand `conformance_suite!` use it.
#[allow(unused_imports)]
pub use stats::stats_count_jobs_in_flight;

/// Generous bound for "eventually" on a loaded 2-core machine (never decides speed).
pub const EVENTUALLY: Duration = Duration::from_secs(90);

/// Where the queue's Redis runs.
pub enum Store {
    /// A redis-server of the test's own.
    Single(RedisServer),
    /// A Redis Cluster or a Sentinel set shared by the tests of the binary (each test has
    /// its own key prefix).
    Shared(&'static Ha),
}

impl Store {
    pub fn url(&self) -> String {
        match self {
            Store::Single(r) => r.url(),
            Store::Shared(ha) => ha.url(),
        }
    }
}

/// One backend under test: its Redis and, for RabbitMQ, the shared broker.
pub struct Env {
    pub backend: QueueBackend,
    pub redis: Store,
    pub rabbit_url: Option<String>,
    pub prefix: String,
    /// `queue.partitions`.
    pub partitions: u32,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Partitions of every queue on the cluster: one per master.
pub const CLUSTER_PARTITIONS: u32 = 3;

impl Env {
    pub fn redis() -> Self {
        Self::new(
            QueueBackend::Redis,
            None,
            Store::Single(RedisServer::start()),
            1,
        )
    }

    pub fn rabbit() -> Self {
        let url = super::rabbit::shared().url();
        Self::new(
            QueueBackend::Rabbitmq,
            Some(url),
            Store::Single(RedisServer::start()),
            1,
        )
    }

    /// Redis Streams on the binary's 3-master 3-replica cluster, every queue over
    /// [`CLUSTER_PARTITIONS`] partitions.
    pub fn cluster() -> Self {
        Self::new(
            QueueBackend::Redis,
            None,
            Store::Shared(redis_ha::shared_cluster()),
            CLUSTER_PARTITIONS,
        )
    }

    /// Redis Streams on the binary's Sentinel set (1 master, 2 replicas, 3 sentinels).
    pub fn sentinel() -> Self {
        Self::new(
            QueueBackend::Redis,
            None,
            Store::Shared(redis_ha::shared_sentinel()),
            1,
        )
    }

    fn new(
        backend: QueueBackend,
        rabbit_url: Option<String>,
        redis: Store,
        partitions: u32,
    ) -> Self {
        let prefix = format!(
            "c{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            backend,
            redis,
            rabbit_url,
            prefix,
            partitions,
        }
    }

    /// Settings with fast loops and short backoffs, on this env's backend and prefix.
    pub fn settings(&self) -> QueueSettings {
        let mut s = QueueSettings {
            backend: self.backend,
            key_prefix: self.prefix.clone(),
            partitions: self.partitions,
            claim_idle_ms: 1_000,
            block_ms: 200,
            mover_interval_ms: 50,
            backoff_base_ms: 200,
            backoff_max_ms: 2_000,
            shutdown_grace_ms: 20_000,
            ..Default::default()
        };
        if let Some(u) = &self.rabbit_url {
            s.rabbitmq_url = u.clone();
        }
        s
    }

    pub async fn queue(&self, s: QueueSettings) -> Queue {
        Queue::connect(&self.redis.url(), s)
            .await
            .expect("connect the queue")
    }

    /// An `app worker` process on this backend (for SIGKILL tests).
    pub fn spawn_worker(&self, name: &str, log: &std::path::Path) -> ChildGuard {
        let log = std::fs::File::create(log).expect("worker log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_app"));
        cmd.arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_LOG", "app=info")
            .env("APP_REDIS__URL", self.redis.url())
            .env("APP_QUEUE__BACKEND", self.backend.as_str())
            .env("APP_QUEUE__KEY_PREFIX", &self.prefix)
            .env("APP_QUEUE__PARTITIONS", self.partitions.to_string())
            .env("APP_QUEUE__CLAIM_IDLE_MS", "1000")
            .env("APP_QUEUE__BLOCK_MS", "200")
            .env("APP_QUEUE__DEFAULT_CONCURRENCY", "8")
            .env("APP_QUEUE__SHUTDOWN_GRACE_MS", "20000");
        if let Some(u) = &self.rabbit_url {
            cmd.env("APP_QUEUE__RABBITMQ_URL", u);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn app worker");
        ChildGuard::new(name, child)
    }
}

async fn state(q: &Queue, id: &str) -> Option<JobState> {
    q.get(id).await.expect("read job").map(|j| j.state)
}

async fn wait_state(q: &Queue, id: &str, want: JobState) {
    let ok = wait_until_async(EVENTUALLY, Duration::from_millis(20), || async {
        state(q, id).await == Some(want)
    })
    .await;
    assert!(
        ok,
        "job {id} never reached {want}; it is {:?}",
        q.get(id).await
    );
}

async fn wait_all(q: &Queue, ids: &[String], want: JobState) {
    for id in ids {
        wait_state(q, id, want).await;
    }
}

async fn list(q: &Queue, key: &str) -> Vec<String> {
    let mut c = q.connection();
    c.lrange(q.keys().scoped(key), 0, -1).await.expect("lrange")
}

/// Redis clock in ms (the clock job records use).
async fn redis_ms(q: &Queue) -> u64 {
    let mut c = q.connection();
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
    s * 1000 + us / 1000
}

/// A handler that appends `payload.seq` (or the run time) to a list named by `payload.list`.
fn recorder() -> Registry {
    Registry::new().on("conf", "record", |ctx: app::queue::JobContext| async move {
        let list = ctx.payload["list"].as_str().unwrap_or("runs").to_string();
        let item = match ctx.payload.get("seq") {
            Some(v) => v.to_string(),
            None => redis_ms(&ctx.queue).await.to_string(),
        };
        let mut c = ctx.queue.connection();
        let _: i64 = c.rpush(ctx.queue.keys().scoped(&list), item).await?;
        Ok(None)
    })
}

/// With one job at a time on a queue (concurrency 1), jobs of one ordering key run in the
/// order they were enqueued: the order both backends promise for one key (one partition
/// on Redis Streams, one work queue on RabbitMQ).
pub async fn ordering_within_a_key(env: &Env) {
    let mut s = env.settings();
    s.queues.insert(
        "conf".into(),
        app::queue::QueueOverride {
            concurrency: Some(1),
            ..Default::default()
        },
    );
    let q = env.queue(s).await;
    q.ensure_group("conf").await.expect("declare");
    let mut ids = Vec::new();
    for seq in 0..60 {
        let e = q
            .enqueue(
                NewJob::new("conf", "record", json!({"list": "order:k1", "seq": seq}))
                    .ordering_key("k1"),
            )
            .await
            .expect("enqueue");
        ids.push(e.id);
    }
    let pool = WorkerPool::start(q.clone(), recorder())
        .await
        .expect("pool");
    wait_all(&q, &ids, JobState::Succeeded).await;
    let got = list(&q, "order:k1").await;
    let want: Vec<String> = (0..60).map(|i: i32| i.to_string()).collect();
    assert_eq!(got, want, "jobs of one key ran out of order");
    assert!(pool.shutdown().await.drained);
}

/// SIGKILL an `app worker` process in the middle of jobs: every job completes, each
/// `increment` had its effect once, and the second worker stops cleanly on SIGTERM.
pub async fn at_least_once_after_sigkill(env: &Env) {
    const JOBS: usize = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    let q = env.queue(env.settings()).await;
    q.ensure_group("tasks").await.expect("declare");
    let tasks = app::tasks::TaskService::new(q.clone(), Default::default());
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let req: app::tasks::TaskRequest = serde_json::from_value(json!({
            "kind": "increment",
            "input": {"counter": "kill", "by": 1, "sleep_ms": 40},
        }))
        .expect("request");
        let (id, _) = tasks
            .submit(req, Some(format!("kill-{i}")))
            .await
            .expect("submit");
        ids.push(id);
    }
    let done = |q: Queue, ids: Vec<String>| async move {
        let mut n = 0;
        for id in &ids {
            if state(&q, id).await == Some(JobState::Succeeded) {
                n += 1;
            }
        }
        n
    };
    let mut first = env.spawn_worker("worker-1", &dir.path().join("w1.log"));
    let progressed = wait_until_async(EVENTUALLY, Duration::from_millis(50), || {
        let (q, ids) = (q.clone(), ids.clone());
        async move { done(q, ids).await >= 30 }
    })
    .await;
    let log1 = || std::fs::read_to_string(dir.path().join("w1.log")).unwrap_or_default();
    assert!(
        progressed,
        "first worker made no progress; log:\n{}",
        log1()
    );
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    let before = done(q.clone(), ids.clone()).await;
    assert!(
        before < JOBS,
        "all jobs finished before the kill: test proves nothing"
    );
    // The killed worker's jobs were delivered and never acknowledged: they stay pending
    // until a worker takes them over (Redis: in the group's PEL, which may also hold
    // entries read but not started yet; RabbitMQ: their records still say running).
    let mut running = 0u64;
    for id in &ids {
        if state(&q, id).await == Some(JobState::Running) {
            running += 1;
        }
    }
    let pending = q.stats("tasks").await.expect("stats").pending;
    assert!(
        pending >= running,
        "{running} jobs left running by the killed worker, {pending} pending"
    );
    if env.backend == QueueBackend::Rabbitmq {
        assert_eq!(pending, running, "pending is the count of running jobs");
    }

    let mut second = env.spawn_worker("worker-2", &dir.path().join("w2.log"));
    wait_all(&q, &ids, JobState::Succeeded).await;
    let mut c = q.connection();
    let counter: i64 = c
        .get(app::tasks::counter_key(&q, "kill"))
        .await
        .expect("counter");
    assert_eq!(
        counter, JOBS as i64,
        "an increment ran twice in effect or never"
    );
    let idle = wait_until_async(EVENTUALLY, Duration::from_millis(50), || async {
        q.stats("tasks").await.expect("stats").pending == 0
    })
    .await;
    assert!(
        idle,
        "pending after every job succeeded: {:?}",
        q.stats("tasks").await
    );
    second.signal(libc::SIGTERM);
    let status = second.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "second worker did not stop cleanly: {status:?}"
    );
}

/// A job failing twice then succeeding runs 3 times, with backoff gaps of at least half the
/// exponential delay (equal jitter); a job that always fails is dead after max_attempts.
pub async fn retries_and_backoff(env: &Env) {
    let q = env.queue(env.settings()).await;
    q.ensure_group("conf").await.expect("declare");
    let reg = Registry::new()
        .on("conf", "flaky", |ctx: app::queue::JobContext| async move {
            let mut c = ctx.queue.connection();
            let now = redis_ms(&ctx.queue).await;
            let _: i64 = c.rpush(ctx.queue.keys().scoped("flaky-runs"), now).await?;
            if ctx.attempt < 3 {
                Err(JobError::retry(format!("failure {}", ctx.attempt)))
            } else {
                Ok(Some(json!({"attempt": ctx.attempt})))
            }
        })
        .on("conf", "never", |_ctx: app::queue::JobContext| async move {
            Err::<app::queue::JobOutput, _>(JobError::retry("always fails"))
        });
    let pool = WorkerPool::start(q.clone(), reg).await.expect("pool");
    let flaky = q
        .enqueue(NewJob::new("conf", "flaky", json!({})).max_attempts(5))
        .await
        .expect("enqueue");
    let never = q
        .enqueue(NewJob::new("conf", "never", json!({})).max_attempts(3))
        .await
        .expect("enqueue");
    wait_state(&q, &flaky.id, JobState::Succeeded).await;
    wait_state(&q, &never.id, JobState::Dead).await;

    let j = q.get(&flaky.id).await.expect("get").expect("job");
    assert_eq!(j.attempts, 3);
    let outcomes: Vec<&str> = j.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    let runs: Vec<u64> = list(&q, "flaky-runs")
        .await
        .iter()
        .map(|s| s.parse().expect("ms"))
        .collect();
    assert_eq!(runs.len(), 3, "runs: {runs:?}");
    // base 200 ms: retry 1 waits 100-200 ms, retry 2 waits 200-400 ms (never less).
    assert!(runs[1] - runs[0] >= 100, "first retry came early: {runs:?}");
    assert!(
        runs[2] - runs[1] >= 200,
        "second retry came early: {runs:?}"
    );

    let n = q.get(&never.id).await.expect("get").expect("job");
    assert_eq!(n.attempts, 3);
    assert_eq!(n.history.len(), 3);
    assert_eq!(n.last_error.as_deref(), Some("always fails"));
    assert!(pool.shutdown().await.drained);
}

/// Dead letters are listed with their history; a replay runs the job again with a fresh
/// attempt budget; a permanent failure is dead after one attempt.
pub async fn dead_letters_and_replay(env: &Env) {
    let q = env.queue(env.settings()).await;
    q.ensure_group("conf").await.expect("declare");
    let reg = Registry::new()
        .on("conf", "gated", |ctx: app::queue::JobContext| async move {
            let mut c = ctx.queue.connection();
            let open: bool = c.exists(ctx.queue.keys().scoped("gate")).await?;
            if open {
                Ok(Some(json!("through")))
            } else {
                Err(JobError::retry("gate closed"))
            }
        })
        .on(
            "conf",
            "broken",
            |_ctx: app::queue::JobContext| async move {
                Err::<app::queue::JobOutput, _>(JobError::permanent("cannot ever work"))
            },
        );
    let pool = WorkerPool::start(q.clone(), reg).await.expect("pool");
    let gated = q
        .enqueue(NewJob::new("conf", "gated", json!({})).max_attempts(2))
        .await
        .expect("enqueue");
    let broken = q
        .enqueue(NewJob::new("conf", "broken", json!({})))
        .await
        .expect("enqueue");
    wait_state(&q, &gated.id, JobState::Dead).await;
    wait_state(&q, &broken.id, JobState::Dead).await;
    assert_eq!(q.get(&broken.id).await.unwrap().unwrap().attempts, 1);

    let ok = wait_until_async(EVENTUALLY, Duration::from_millis(50), || async {
        q.dlq_list("conf", None, 100).await.expect("list").len() == 2
    })
    .await;
    let dead = q.dlq_list("conf", None, 100).await.expect("list");
    assert!(ok, "expected 2 dead letters, got {dead:?}");
    let g = dead
        .iter()
        .find(|d| d.job_id == gated.id)
        .expect("gated job in the dead letters");
    assert_eq!(g.attempts, 2);
    assert_eq!(g.error, "gate closed");
    assert_eq!(g.history.len(), 2);
    // Listing does not consume.
    assert_eq!(q.dlq_list("conf", None, 100).await.unwrap().len(), 2);
    assert_eq!(q.stats("conf").await.expect("stats").dead, 2);

    let mut c = q.connection();
    let _: () = c.set(q.keys().scoped("gate"), 1).await.expect("open gate");
    let replayed = q.dlq_replay("conf", &g.entry).await.expect("replay");
    assert_eq!(replayed.as_deref(), Some(gated.id.as_str()));
    wait_state(&q, &gated.id, JobState::Succeeded).await;
    let j = q.get(&gated.id).await.unwrap().unwrap();
    assert_eq!(j.attempts, 1, "replay gives a fresh attempt budget");
    let left = q.dlq_list("conf", None, 100).await.expect("list");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].job_id, broken.id);
    assert_eq!(q.dlq_purge("conf").await.expect("purge"), 1);
    assert!(q.dlq_list("conf", None, 100).await.unwrap().is_empty());
    assert!(q.get(&broken.id).await.unwrap().is_none());
    assert!(pool.shutdown().await.drained);
}

/// Delayed jobs (after a delay, at a time, several hops long) never start before they are due.
pub async fn delayed_jobs_not_early(env: &Env) {
    let q = env.queue(env.settings()).await;
    q.ensure_group("conf").await.expect("declare");
    let pool = WorkerPool::start(q.clone(), recorder())
        .await
        .expect("pool");
    let now = redis_ms(&q).await;
    let mut jobs = Vec::new();
    for (i, delay) in [250u64, 1_300, 2_700].into_iter().enumerate() {
        let list = format!("delayed-{i}");
        let e = q
            .enqueue(
                NewJob::new("conf", "record", json!({ "list": list }))
                    .schedule(Schedule::After(delay)),
            )
            .await
            .expect("enqueue");
        jobs.push((e.id, list, delay));
    }
    let at = now + 1_800;
    let e = q
        .enqueue(
            NewJob::new("conf", "record", json!({ "list": "delayed-at" }))
                .schedule(Schedule::At(at)),
        )
        .await
        .expect("enqueue");
    assert_eq!(state(&q, &e.id).await, Some(JobState::Scheduled));
    for (id, list, delay) in &jobs {
        wait_state(&q, id, JobState::Succeeded).await;
        let j = q.get(id).await.unwrap().unwrap();
        let ran: u64 = list_first(&q, list).await;
        assert!(
            ran >= j.created_ms + delay,
            "job delayed {delay} ms ran {} ms after enqueue",
            ran - j.created_ms
        );
    }
    wait_state(&q, &e.id, JobState::Succeeded).await;
    let ran = list_first(&q, "delayed-at").await;
    assert!(ran >= at, "job scheduled at {at} ran at {ran}");
    assert!(pool.shutdown().await.drained);
}

async fn list_first(q: &Queue, key: &str) -> u64 {
    list(q, key)
        .await
        .first()
        .expect("a recorded run")
        .parse()
        .expect("ms")
}

/// The same idempotency key, enqueued 20 times concurrently: one job, run once.
pub async fn idempotent_enqueue(env: &Env) {
    let q = env.queue(env.settings()).await;
    q.ensure_group("conf").await.expect("declare");
    let mut handles = Vec::new();
    for _ in 0..20 {
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            q.enqueue(
                NewJob::new("conf", "record", json!({"list": "idem", "seq": 1}))
                    .idempotency_key("same-key"),
            )
            .await
            .expect("enqueue")
        }));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.expect("task"));
    }
    let created = results.iter().filter(|e| e.created).count();
    assert_eq!(created, 1, "{results:?}");
    assert!(results.iter().all(|e| e.id == results[0].id));
    let pool = WorkerPool::start(q.clone(), recorder())
        .await
        .expect("pool");
    wait_state(&q, &results[0].id, JobState::Succeeded).await;
    // Give a duplicate every chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(list(&q, "idem").await, ["1"], "the job ran more than once");
    let again = q
        .enqueue(
            NewJob::new("conf", "record", json!({"list": "idem", "seq": 2}))
                .idempotency_key("same-key"),
        )
        .await
        .expect("enqueue");
    assert!(!again.created);
    assert_eq!(again.id, results[0].id);
    assert!(pool.shutdown().await.drained);
}

/// Shutdown lets running jobs finish within the grace period and takes no new ones; a job
/// that outlives the grace period is abandoned and runs again on the next pool.
pub async fn graceful_shutdown(env: &Env) {
    let mut s = env.settings();
    s.default_concurrency = 2;
    s.shutdown_grace_ms = 10_000;
    let q = env.queue(s.clone()).await;
    q.ensure_group("conf").await.expect("declare");
    let started = Arc::new(AtomicU32::new(0));
    let reg = |started: Arc<AtomicU32>| {
        Registry::new().on("conf", "slow", move |ctx: app::queue::JobContext| {
            let started = started.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let ms = ctx.payload["ms"].as_u64().unwrap_or(300);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(None)
            }
        })
    };
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            q.enqueue(NewJob::new("conf", "slow", json!({"ms": 700})))
                .await
                .expect("enqueue")
                .id,
        );
    }
    let pool = WorkerPool::start(q.clone(), reg(started.clone()))
        .await
        .expect("pool");
    let ok = wait_until_async(EVENTUALLY, Duration::from_millis(10), || async {
        started.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(ok, "no job started");
    let report = pool.shutdown().await;
    assert!(report.drained, "{report:?}");
    assert_eq!(report.abandoned, 0);
    let mut succeeded = 0;
    for id in &ids {
        match state(&q, id).await {
            Some(JobState::Succeeded) => succeeded += 1,
            Some(JobState::Queued) => {}
            other => panic!("after a drained shutdown job {id} is {other:?}"),
        }
    }
    assert!((1..10).contains(&succeeded), "{succeeded} succeeded");

    // A job longer than the grace period is abandoned, then finished by the next pool.
    let mut short = s.clone();
    short.shutdown_grace_ms = 200;
    let q2 = env.queue(short).await;
    let long = q2
        .enqueue(NewJob::new("conf", "slow", json!({"ms": 3_000})))
        .await
        .expect("enqueue")
        .id;
    let before = started.load(Ordering::SeqCst);
    let pool = WorkerPool::start(q2.clone(), reg(started.clone()))
        .await
        .expect("pool");
    let ok = wait_until_async(EVENTUALLY, Duration::from_millis(10), || async {
        q2.get(&long)
            .await
            .unwrap()
            .is_some_and(|j| j.state == JobState::Running)
    })
    .await;
    assert!(ok, "the long job never started");
    let report = pool.shutdown().await;
    assert!(!report.drained);
    assert!(report.abandoned >= 1, "{report:?}");
    assert!(started.load(Ordering::SeqCst) > before);

    let pool = WorkerPool::start(q.clone(), reg(started.clone()))
        .await
        .expect("pool");
    ids.push(long);
    wait_all(&q, &ids, JobState::Succeeded).await;
    assert!(pool.shutdown().await.drained);
}

/// Generates one `#[tokio::test]` per conformance test, on the backend `$env` builds.
/// `conformance_suite!(on ENV; [#[attr]] test, ...)` picks the tests (and their attributes,
/// e.g. `#[ignore = "..."]`) by hand: a test added to the list below must be added there too.
#[macro_export]
macro_rules! conformance_suite {
    ($env:expr) => {
        $crate::conformance_suite!(
            on $env;
            ordering_within_a_key,
            at_least_once_after_sigkill,
            retries_and_backoff,
            dead_letters_and_replay,
            delayed_jobs_not_early,
            idempotent_enqueue,
            graceful_shutdown,
            stats_count_jobs_in_flight,
        );
    };
    (on $env:expr; $($(#[$attr:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::support::conformance::$name(&$env).await;
            }
        )*
    };
}
