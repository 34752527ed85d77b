//! The Redis Streams queue's batching edge cases, against a real redis-server: concurrent
//! enqueues coalesced into one ENQUEUE call (an idempotency key repeated within one batch),
//! entries started by one START call and completions coalesced into one COMPLETE call while
//! jobs of the same batch fail, retry and go dead, and a worker that dies after its handler's
//! effect but before the completion is recorded (the job runs again: at least once).

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

/// A handler that counts its effect in Redis key `counter`, then succeeds, or never returns
/// (`lost`: its worker is gone before the completion is recorded).
fn effect(counter: &str, lost: bool) -> Registry {
    let c = counter.to_string();
    Registry::new().on("batch", "effect", move |ctx: JobContext| {
        let c = c.clone();
        async move {
            let mut conn = ctx.queue.connection();
            let _: i64 = conn
                .incr(&c, 1)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            if lost {
                std::future::pending::<()>().await;
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
