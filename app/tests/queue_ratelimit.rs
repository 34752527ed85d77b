//! The global rate limit holds across two instances: counted per Redis-clock window, not
//! timed against the wall clock.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use app::queue::{
    JobContext, JobError, JobOutput, NewJob, PoolStats, Queue, QueueOverride, QueueSettings,
    Registry, WorkerPool,
};
use redis::AsyncCommands;
use serde_json::json;

const LIMIT: u32 = 20;
const JOBS: u64 = 120;

fn settings() -> QueueSettings {
    let mut s = QueueSettings {
        block_ms: 200,
        mover_interval_ms: 50,
        default_concurrency: 16,
        ..Default::default()
    };
    s.queues.insert(
        "limited".into(),
        QueueOverride {
            rate_limit_per_s: Some(LIMIT),
            ..Default::default()
        },
    );
    s
}

/// Counts each run under the window that granted it.
async fn record(ctx: JobContext) -> Result<JobOutput, JobError> {
    let window = ctx
        .rate_window
        .ok_or_else(|| JobError::permanent("rate-limited queue without a window"))?;
    let mut conn = ctx.queue.connection();
    let _: i64 = conn.hincr("windows", window, 1).await?;
    Ok(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_across_two_instances() {
    let r = support::RedisServer::start();
    // Two instances: separate connections and consumers, one Redis.
    let qa = Queue::connect(&r.url(), settings()).await.unwrap();
    let qb = Queue::connect(&r.url(), settings()).await.unwrap();
    for i in 0..JOBS {
        qa.enqueue(NewJob::new("limited", "record", json!({ "i": i })))
            .await
            .unwrap();
    }
    let reg = || Registry::new().on("limited", "record", record);
    let a = WorkerPool::start(qa.clone(), reg()).await.unwrap();
    let b = WorkerPool::start(qb.clone(), reg()).await.unwrap();

    let done = || PoolStats::get(&a.stats().succeeded) + PoolStats::get(&b.stats().succeeded);
    let finished = support::wait_until_async(
        Duration::from_secs(120),
        Duration::from_millis(100),
        || async { done() >= JOBS },
    )
    .await;
    assert!(finished, "only {} of {JOBS} jobs ran", done());

    let mut conn = qa.connection();
    let windows: HashMap<u64, u64> = conn.hgetall("windows").await.unwrap();
    let total: u64 = windows.values().sum();
    assert_eq!(total, JOBS, "every job counted once");
    for (w, n) in &windows {
        assert!(
            *n <= u64::from(LIMIT),
            "window {w} ran {n} jobs > limit {LIMIT}"
        );
    }
    // 120 jobs at 20 per window need at least 6 windows.
    assert!(
        windows.len() as u64 >= JOBS.div_ceil(u64::from(LIMIT)),
        "{windows:?}"
    );
    // Both instances took part.
    assert!(PoolStats::get(&a.stats().succeeded) > 0);
    assert!(PoolStats::get(&b.stats().succeeded) > 0);
    a.shutdown().await;
    b.shutdown().await;
}
