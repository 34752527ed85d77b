//! The Redis Streams queue's batching edge cases, against a real redis-server: concurrent
//! enqueues coalesced into one ENQUEUE call (an idempotency key repeated within one batch),
//! entries started by one START call and completions coalesced into one COMPLETE call while
//! jobs of the same batch fail, retry and go dead, and a worker that dies after its handler's
//! effect but before the completion is recorded (the job runs again: at least once). The
//! fused COMPLETE (it reads and starts the next entries): a job it started whose worker dies
//! before its handler ran is re-delivered, and a call whose completion part fails loses
//! neither the completed job (it runs again) nor the next one.

use std::future::Future;
use std::time::Duration;

mod support;

use app::queue::{
    JobContext, JobError, JobOutput, JobState, NewJob, Queue, QueueSettings, Registry, WorkerPool,
};
use redis::AsyncCommands;
use serde_json::json;

fn settings() -> QueueSettings {
    QueueSettings {
        // Many jobs in flight per worker: batches fill.
        default_concurrency: 64,
        ..support::fast_queue_settings()
    }
}

/// Polls `cond` every 50 ms for at most `limit`; panics with `what` if it never holds.
async fn wait_for<F, Fut>(limit: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = support::wait_until_async(limit, Duration::from_millis(50), cond).await;
    assert!(held, "timed out waiting for {what}");
}

/// What a counting handler does after its effect.
#[derive(Clone)]
enum Then {
    Succeed,
    /// Never returns: its worker is gone before the completion is recorded.
    Hang,
    /// Succeeds once the value is true.
    WaitFor(tokio::sync::watch::Receiver<bool>),
}

/// A handler that counts its effect in Redis key `counter`, then succeeds, or never returns
/// (`lost`).
fn effect(counter: &str, lost: bool) -> Registry {
    let then = if lost { Then::Hang } else { Then::Succeed };
    effect_on(Registry::new(), "effect", counter, then)
}

/// A handler for jobs of `kind`, added to `reg`, that counts its effect in `counter`, then
/// does `then`.
fn effect_on(reg: Registry, kind: &str, counter: &str, then: Then) -> Registry {
    let c = counter.to_string();
    reg.on("batch", kind, move |ctx: JobContext| {
        let (c, then) = (c.clone(), then.clone());
        async move {
            let mut conn = ctx.queue.connection();
            let _: i64 = conn
                .incr(&c, 1)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            match then {
                Then::Succeed => {}
                Then::Hang => std::future::pending::<()>().await,
                Then::WaitFor(mut open) => {
                    let _ = open.wait_for(|o| *o).await;
                }
            }
            Ok(None)
        }
    })
}

/// Script calls (EVALSHA and EVAL) redis-server ran so far.
fn script_calls(r: &support::RedisServer) -> u64 {
    r.cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split(['=', ','])
                .nth(1)
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_repeated_within_one_batch_makes_one_job() {
    let r = support::RedisServer::start();
    let q = Queue::connect(&r.url(), settings()).await.unwrap();
    // 40 concurrent enqueues, two keys interleaved and jobs without a key: they queue up
    // behind each other's calls and are coalesced.
    let calls0 = script_calls(&r);
    let answers = futures::future::join_all((0..60).map(|i| {
        let q = q.clone();
        async move {
            let job = NewJob::new("batch", "noop", json!({ "i": i }));
            let job = match i % 3 {
                0 => job.idempotency_key("key-a"),
                1 => job.idempotency_key("key-b"),
                _ => job,
            };
            (i, q.enqueue(job).await.expect("enqueue"))
        }
    }))
    .await;
    let calls = script_calls(&r) - calls0;
    assert!(
        calls < 60,
        "60 concurrent enqueues took {calls} script calls: they were not coalesced"
    );
    for key in 0..2 {
        let of_key: Vec<_> = answers.iter().filter(|(i, _)| i % 3 == key).collect();
        let created: Vec<_> = of_key.iter().filter(|(_, e)| e.created).collect();
        assert_eq!(created.len(), 1, "key {key}: exactly one job created");
        assert!(
            of_key.iter().all(|(_, e)| e.id == created[0].1.id),
            "key {key}: every enqueue names the first job"
        );
    }
    let keyless = answers.iter().filter(|(i, _)| i % 3 == 2);
    assert!(keyless.clone().all(|(_, e)| e.created));
    // 2 keyed jobs + 20 without a key, each with its own payload.
    assert_eq!(q.stats("batch").await.unwrap().length, 22);
    for (i, e) in answers.iter().filter(|(i, _)| i % 3 == 2) {
        let job = q.get(&e.id).await.unwrap().expect("job");
        assert_eq!(job.payload, json!({ "i": i }));
        assert_eq!(job.state, JobState::Queued);
    }
}

async fn mixed(ctx: JobContext) -> Result<JobOutput, JobError> {
    let i = ctx.payload["i"].as_u64().unwrap_or(0);
    match i % 4 {
        // Fails for good: dead at once.
        0 => Err(JobError::Permanent(format!("job {i} refuses"))),
        // Fails its first attempt, then succeeds.
        1 if ctx.attempt == 1 => Err(JobError::Retry(format!("job {i} not yet"))),
        _ => Ok(Some(json!({ "i": i, "attempt": ctx.attempt }))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_in_a_batch_leave_the_others_completed() {
    let r = support::RedisServer::start();
    let q = Queue::connect(&r.url(), settings()).await.unwrap();
    q.ensure_group("batch").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..64u64 {
        ids.push(
            q.enqueue(NewJob::new("batch", "mixed", json!({ "i": i })))
                .await
                .unwrap()
                .id,
        );
    }
    let calls0 = script_calls(&r);
    // Every entry is there before the pool starts: its first read returns all 64 (64
    // permits) and one START call starts them.
    let pool = WorkerPool::start(q.clone(), Registry::new().on("batch", "mixed", mixed))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "every job to end", || {
        let (q, ids) = (q.clone(), ids.clone());
        async move {
            for id in &ids {
                let st = q.get(id).await.unwrap().expect("job").state;
                if st != JobState::Succeeded && st != JobState::Dead {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let report = pool.shutdown().await;
    assert!(report.drained);
    let calls = script_calls(&r) - calls0;
    // Unbatched: START + COMPLETE or FAIL per attempt, 80 attempts: 160 calls, plus the
    // mover's. Batched: one START for the 64, coalesced COMPLETEs, one FAIL per failure (32),
    // the 16 retries started and completed in a few calls.
    assert!(
        calls < 110,
        "64 jobs took {calls} script calls: START/COMPLETE were not batched"
    );
    for (i, id) in ids.iter().enumerate() {
        let job = q.get(id).await.unwrap().expect("job");
        let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
        match i % 4 {
            0 => {
                assert_eq!(job.state, JobState::Dead, "job {i}");
                assert_eq!(outcomes, ["failed"], "job {i}");
                assert_eq!(
                    job.last_error.as_deref(),
                    Some(&*format!("job {i} refuses"))
                );
            }
            1 => {
                assert_eq!(job.state, JobState::Succeeded, "job {i}");
                assert_eq!(outcomes, ["failed", "succeeded"], "job {i}");
                assert_eq!(job.attempts, 2);
                assert_eq!(job.last_error, None, "job {i}: a success clears the error");
                assert_eq!(job.result, Some(json!({ "i": i, "attempt": 2 })));
            }
            _ => {
                assert_eq!(job.state, JobState::Succeeded, "job {i}");
                assert_eq!(outcomes, ["succeeded"], "job {i}");
                assert_eq!(job.result, Some(json!({ "i": i, "attempt": 1 })));
            }
        }
    }
    let st = q.stats("batch").await.unwrap();
    assert_eq!((st.length, st.pending, st.delayed, st.dead), (0, 0, 0, 16));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_after_the_effect_before_its_completion_runs_the_job_again() {
    let r = support::RedisServer::start();
    let q = Queue::connect(&r.url(), settings()).await.unwrap();
    q.ensure_group("batch").await.unwrap();
    let counter = format!("{}:effects", q.settings().key_prefix);
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..8 {
            v.push(
                q.enqueue(NewJob::new("batch", "effect", json!({ "i": i })))
                    .await
                    .unwrap()
                    .id,
            );
        }
        v
    };
    // The first pool's handler does its effect, then its worker is lost before the
    // completion is recorded (it never returns, and the pool is dropped, as a killed
    // process would be).
    let lost = effect(&counter, true);
    let first = WorkerPool::start(q.clone(), lost).await.unwrap();
    wait_for(Duration::from_secs(20), "the first pool's effects", || {
        let (q, counter) = (q.clone(), counter.clone());
        async move {
            let n: Option<u64> = q.connection().get(&counter).await.unwrap();
            n == Some(8)
        }
    })
    .await;
    drop(first);
    for id in &ids {
        let job = q.get(id).await.unwrap().expect("job");
        assert_eq!(job.state, JobState::Running, "no completion was recorded");
    }
    // A second pool takes the entries over after claim_idle_ms and runs the jobs again.
    let again = effect(&counter, false);
    let second = WorkerPool::start(q.clone(), again).await.unwrap();
    wait_for(Duration::from_secs(30), "the jobs to run again", || {
        let (q, ids) = (q.clone(), ids.clone());
        async move {
            for id in &ids {
                if q.get(id).await.unwrap().expect("job").state != JobState::Succeeded {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(second.shutdown().await.drained);
    let n: u64 = q.connection().get(&counter).await.unwrap();
    assert_eq!(
        n, 16,
        "each job's effect ran twice: at least once, never lost"
    );
    for id in &ids {
        let job = q.get(id).await.unwrap().expect("job");
        let outcomes: Vec<&str> = job.history.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["reclaimed", "succeeded"], "job {id}");
        assert_eq!(job.attempts, 2);
    }
    let st = q.stats("batch").await.unwrap();
    assert_eq!((st.length, st.pending), (0, 0));
}

/// `rejected_calls` of one command in `INFO commandstats` (commands refused inside scripts
/// count there too).
fn rejected(r: &support::RedisServer, cmd: &str) -> u64 {
    r.cli(&["INFO", "commandstats"])
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("rejected_calls=")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A redis-server and a queue with one job in flight per pool: a completed job's permit can
/// only pass to the entry its COMPLETE call read (the fetch loop never gets it while the
/// stream has entries).
async fn one_at_a_time() -> (support::RedisServer, Queue) {
    let r = support::RedisServer::start();
    let s = QueueSettings {
        default_concurrency: 1,
        ..support::fast_queue_settings()
    };
    let q = Queue::connect(&r.url(), s).await.unwrap();
    q.ensure_group("batch").await.unwrap();
    (r, q)
}

async fn wait_state(q: &Queue, id: &str, state: JobState) {
    wait_for(
        Duration::from_secs(30),
        &format!("job {id} {state:?}"),
        || {
            let (q, id) = (q.clone(), id.to_string());
            async move { q.get(&id).await.unwrap().map(|j| j.state) == Some(state) }
        },
    )
    .await;
}

async fn wait_count(q: &Queue, key: &str, n: u64) {
    wait_for(Duration::from_secs(30), &format!("{key} = {n}"), || {
        let (q, key) = (q.clone(), key.to_string());
        async move { q.connection().get::<_, Option<u64>>(&key).await.unwrap() == Some(n) }
    })
    .await;
}

/// Enqueues job A (kind `gate`), waits until its handler runs (`a_runs` = 1), then enqueues
/// job B (kind `next`): B waits in the stream while A holds the pool's only permit.
async fn a_running_then_b(q: &Queue, a_runs: &str) -> (String, String) {
    let a = q
        .enqueue(NewJob::new("batch", "gate", json!({})))
        .await
        .unwrap()
        .id;
    wait_count(q, a_runs, 1).await;
    let b = q
        .enqueue(NewJob::new("batch", "next", json!({})))
        .await
        .unwrap()
        .id;
    (a, b)
}

fn outcomes(j: &app::queue::JobRecord) -> Vec<&str> {
    j.history.iter().map(|a| a.outcome.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_read_by_a_completion_is_redelivered_when_its_worker_dies_before_its_handler() {
    let (_r, q) = one_at_a_time().await;
    let (a_runs, b_runs) = ("t:a-runs", "t:b-runs");
    let (open, gate) = tokio::sync::watch::channel(false);
    // The first pool's worker dies before B's handler does anything (it never returns).
    let first_reg = effect_on(Registry::new(), "gate", a_runs, Then::WaitFor(gate)).on(
        "batch",
        "next",
        |_ctx: JobContext| async {
            std::future::pending::<()>().await;
            Ok(None)
        },
    );
    let first = WorkerPool::start(q.clone(), first_reg).await.unwrap();
    // B waits in the stream while A runs; A's completion reads and starts it.
    let (a, b) = a_running_then_b(&q, a_runs).await;
    open.send(true).unwrap();
    wait_state(&q, &a, JobState::Succeeded).await;
    wait_state(&q, &b, JobState::Running).await;
    let owner: String = q
        .connection()
        .hget(q.keys().job(&b), "owner")
        .await
        .unwrap();
    assert!(
        owner.starts_with(&format!("{}#", first.consumer())) && owner.contains('.'),
        "B was started by A's COMPLETE call (owner {owner})"
    );
    drop(first);
    // Its entry stays pending: another pool takes it over after claim_idle_ms.
    let second_reg = effect_on(Registry::new(), "next", b_runs, Then::Succeed);
    let second = WorkerPool::start(q.clone(), second_reg).await.unwrap();
    wait_state(&q, &b, JobState::Succeeded).await;
    assert!(second.shutdown().await.drained);
    let n: u64 = q.connection().get(b_runs).await.unwrap();
    assert_eq!(n, 1, "B's handler ran once, on the second pool");
    let jb = q.get(&b).await.unwrap().expect("B");
    assert_eq!(outcomes(&jb), ["reclaimed", "succeeded"]);
    assert_eq!(jb.attempts, 2);
    let ja = q.get(&a).await.unwrap().expect("A");
    assert_eq!(outcomes(&ja), ["succeeded"], "A completed once");
    let st = q.stats("batch").await.unwrap();
    assert_eq!((st.length, st.pending), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fused_call_whose_completion_fails_loses_no_job() {
    let (r, q) = one_at_a_time().await;
    let (a_runs, b_runs) = ("t:a-runs", "t:b-runs");
    let (open, gate) = tokio::sync::watch::channel(false);
    let reg = effect_on(
        effect_on(Registry::new(), "gate", a_runs, Then::WaitFor(gate)),
        "next",
        b_runs,
        Then::Succeed,
    );
    let pool = WorkerPool::start(q.clone(), reg).await.unwrap();
    let (a, b) = a_running_then_b(&q, a_runs).await;
    // Redis refuses writes: A's COMPLETE (which would also read B) fails at its first HSET.
    let hset0 = rejected(&r, "hset");
    r.cli(&["CONFIG", "SET", "min-replicas-to-write", "1"]);
    open.send(true).unwrap();
    wait_for(
        Duration::from_secs(30),
        "A's completion to be refused",
        || {
            let r = &r;
            async move { rejected(r, "hset") > hset0 }
        },
    )
    .await;
    let ja = q.get(&a).await.unwrap().expect("A");
    assert_eq!(ja.state, JobState::Running, "no completion was recorded");
    assert_eq!(q.get(&b).await.unwrap().expect("B").state, JobState::Queued);
    r.cli(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    // A's entry stayed pending: reclaimed, run again; B is read as usual.
    wait_state(&q, &a, JobState::Succeeded).await;
    wait_state(&q, &b, JobState::Succeeded).await;
    assert!(pool.shutdown().await.drained);
    let runs: (u64, u64) = (
        q.connection().get(a_runs).await.unwrap(),
        q.connection().get(b_runs).await.unwrap(),
    );
    assert_eq!(
        runs,
        (2, 1),
        "A ran again (its completion was lost), B once"
    );
    let ja = q.get(&a).await.unwrap().expect("A");
    assert_eq!(outcomes(&ja), ["reclaimed", "succeeded"]);
    let st = q.stats("batch").await.unwrap();
    assert_eq!((st.length, st.pending), (0, 0));
}
