//! 10,000 jobs, random handler failures, two worker instances: every job ends succeeded or
//! dead, the counts add up, the dead ones are in the dead-letter stream, replay works.

mod support;

use std::time::Duration;

use app::queue::{
    JobContext, JobError, JobOutput, NewJob, PoolStats, Queue, QueueSettings, Registry, WorkerPool,
};
use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::json;

const JOBS: usize = 10_000;
const FAIL_RATE: f64 = 0.3;

fn settings() -> QueueSettings {
    QueueSettings {
        block_ms: 200,
        mover_interval_ms: 20,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        max_attempts: 3,
        default_concurrency: 16,
        ..Default::default()
    }
}

/// Fails at random until `no-fail` is set; the effect (SADD) happens once per job.
async fn work(ctx: JobContext) -> Result<JobOutput, JobError> {
    let mut conn = ctx.queue.connection();
    let healed: bool = conn.exists("no-fail").await?;
    if !healed && rand::random::<f64>() < FAIL_RATE {
        return Err(JobError::retry("random failure"));
    }
    let added: i64 = conn.sadd("done", &ctx.id).await?;
    if added == 1 {
        let _: i64 = conn.incr("effects", 1).await?;
    }
    Ok(None)
}

async fn states(q: &Queue, ids: &[String]) -> (usize, usize, usize) {
    let mut conn = q.connection();
    let (mut ok, mut dead, mut other) = (0, 0, 0);
    for chunk in ids.chunks(1000) {
        let mut p = redis::pipe();
        for id in chunk {
            p.hget(q.keys().job(id), "state");
        }
        let st: Vec<Option<String>> = p.query_async(&mut conn).await.unwrap();
        for s in st {
            match s.as_deref() {
                Some("succeeded") => ok += 1,
                Some("dead") => dead += 1,
                _ => other += 1,
            }
        }
    }
    (ok, dead, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_with_failures_on_two_instances() {
    let r = support::RedisServer::start();
    let qa = Queue::connect(&r.url(), settings()).await.unwrap();
    let qb = Queue::connect(&r.url(), settings()).await.unwrap();
    let reg = || Registry::new().on("bulk", "work", work);
    let a = WorkerPool::start(qa.clone(), reg()).await.unwrap();
    let b = WorkerPool::start(qb.clone(), reg()).await.unwrap();

    // Producers run while the workers consume.
    let ids: Vec<String> = futures::stream::iter(0..JOBS)
        .map(|i| {
            let q = qa.clone();
            async move {
                q.enqueue(NewJob::new("bulk", "work", json!({ "i": i })))
                    .await
                    .expect("enqueue")
                    .id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(ids.len(), JOBS);

    let ended = || {
        PoolStats::get(&a.stats().succeeded)
            + PoolStats::get(&b.stats().succeeded)
            + PoolStats::get(&a.stats().dead)
            + PoolStats::get(&b.stats().dead)
    };
    let finished = support::wait_until_async(
        Duration::from_secs(300),
        Duration::from_millis(200),
        || async { ended() >= JOBS as u64 },
    )
    .await;
    assert!(finished, "only {} of {JOBS} jobs ended", ended());
    assert_eq!(ended(), JOBS as u64, "no job ended twice");

    let (ok, dead, other) = states(&qa, &ids).await;
    assert_eq!(other, 0, "every job is succeeded or dead");
    assert_eq!(ok + dead, JOBS);
    assert!(
        dead > 0,
        "with a 30% failure rate and 3 attempts some jobs die"
    );
    assert!(
        PoolStats::get(&a.stats().retried) + PoolStats::get(&b.stats().retried) > 0,
        "retries happened"
    );
    assert!(PoolStats::get(&a.stats().succeeded) > 0 && PoolStats::get(&b.stats().succeeded) > 0);
    let mut conn = qa.connection();
    let done: usize = conn.scard("done").await.unwrap();
    let effects: usize = conn.get("effects").await.unwrap();
    assert_eq!(done, ok);
    assert_eq!(effects, ok, "one effect per succeeded job");

    let stats = qa.stats("bulk").await.unwrap();
    assert_eq!(
        stats.dead as usize, dead,
        "the dead ones are in the dead-letter stream"
    );
    assert_eq!((stats.length, stats.pending, stats.delayed), (0, 0, 0));
    let letters = qa.dlq_list("bulk", None, 1000).await.unwrap();
    assert_eq!(letters.len(), dead);
    for d in &letters {
        assert_eq!(d.attempts, 3, "{d:?}");
        assert_eq!(d.history.len(), 3);
        assert_eq!(d.error, "random failure");
    }

    // Replay after "fixing" the handler: every dead job now succeeds.
    let _: () = conn.set("no-fail", 1).await.unwrap();
    let replayed = qa.dlq_replay_all("bulk").await.unwrap();
    assert_eq!(replayed.len(), dead);
    let all_done =
        support::wait_until_async(Duration::from_secs(120), Duration::from_millis(100), || {
            let mut c = conn.clone();
            async move { c.scard::<_, usize>("done").await.unwrap_or(0) >= JOBS }
        })
        .await;
    assert!(all_done, "replayed jobs did not all succeed");
    let finished = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { states(&qa, &ids).await == (JOBS, 0, 0) },
    )
    .await;
    assert!(
        finished,
        "states after replay: {:?}",
        states(&qa, &ids).await
    );
    let effects: usize = conn.get("effects").await.unwrap();
    assert_eq!(effects, JOBS);
    assert_eq!(qa.stats("bulk").await.unwrap().dead, 0);
    a.shutdown().await;
    b.shutdown().await;
}
