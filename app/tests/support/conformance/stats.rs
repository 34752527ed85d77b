//! Queue sizes while jobs are in flight: the same numbers on both backends.

use std::time::Duration;

use app::queue::{JobError, JobState, NewJob, Queue, QueueOverride, Registry, WorkerPool};
use redis::AsyncCommands;
use serde_json::json;

use super::{EVENTUALLY, Env, state, wait_all};
use crate::support::wait_until_async;

/// A handler that holds its job until the test sets the `gate` key (bounded, so a broken
/// test cannot leave a job running for ever).
pub fn holder() -> Registry {
    Registry::new().on("conf", "hold", |ctx: app::queue::JobContext| async move {
        let mut c = ctx.queue.connection();
        let gate = ctx.queue.keys().scoped("gate");
        let open = wait_until_async(EVENTUALLY * 2, Duration::from_millis(20), || {
            let (mut c, gate) = (c.clone(), gate.clone());
            async move { c.exists::<_, bool>(&gate).await.unwrap_or(false) }
        })
        .await;
        let _: i64 = c.incr(ctx.queue.keys().scoped("held"), 1).await?;
        if open {
            Ok(None)
        } else {
            Err(JobError::permanent("the test never opened the gate"))
        }
    })
}

/// (length, pending, lag) of `queue`, waited for until it matches (bounded).
pub async fn expect_sizes(q: &Queue, queue: &str, want: (u64, u64, u64), what: &str) {
    let sizes = || async {
        let s = q.stats(queue).await.expect("stats");
        assert_eq!((s.delayed, s.dead), (0, 0), "{what}: {s:?}");
        (s.length, s.pending, s.lag)
    };
    let ok = wait_until_async(EVENTUALLY, Duration::from_millis(50), || async {
        sizes().await == want
    })
    .await;
    let got = sizes().await;
    assert!(
        ok,
        "{what}: (length, pending, lag) is {got:?}, expected {want:?}"
    );
}

async fn count_in(q: &Queue, ids: &[String], want: JobState) -> usize {
    let mut n = 0;
    for id in ids {
        if state(q, id).await == Some(want) {
            n += 1;
        }
    }
    n
}

/// Jobs held by their handlers count as pending (as many as the pool's concurrency, which
/// is also RabbitMQ's prefetch), the rest as lag; when they finish every size is 0.
pub async fn stats_count_jobs_in_flight(env: &Env) {
    const JOBS: u64 = 8;
    const CONCURRENCY: u64 = 3;
    let mut s = env.settings();
    s.queues.insert(
        "conf".into(),
        QueueOverride {
            concurrency: Some(CONCURRENCY as usize),
            ..Default::default()
        },
    );
    let q = env.queue(s).await;
    q.ensure_group("conf").await.expect("declare");
    let mut ids = Vec::new();
    for seq in 0..JOBS {
        let e = q
            .enqueue(NewJob::new("conf", "hold", json!({ "seq": seq })))
            .await
            .expect("enqueue");
        ids.push(e.id);
    }
    expect_sizes(&q, "conf", (JOBS, 0, JOBS), "before any worker").await;

    let pool = WorkerPool::start(q.clone(), holder()).await.expect("pool");
    expect_sizes(
        &q,
        "conf",
        (JOBS, CONCURRENCY, JOBS - CONCURRENCY),
        "while the pool holds a full load",
    )
    .await;
    // The pending ones are exactly the jobs whose records say running. A worker marks the
    // record after the delivery that made the job pending, so the records catch up.
    let records = || async {
        (
            count_in(&q, &ids, JobState::Running).await as u64,
            count_in(&q, &ids, JobState::Queued).await as u64,
        )
    };
    let want = (CONCURRENCY, JOBS - CONCURRENCY);
    wait_until_async(EVENTUALLY, Duration::from_millis(50), || async {
        records().await == want
    })
    .await;
    assert_eq!(records().await, want, "(running, queued) job records");

    let mut c = q.connection();
    let _: () = c.set(q.keys().scoped("gate"), 1).await.expect("open gate");
    wait_all(&q, &ids, JobState::Succeeded).await;
    expect_sizes(&q, "conf", (0, 0, 0), "after every job succeeded").await;
    let held: u64 = c.get(q.keys().scoped("held")).await.expect("held count");
    assert_eq!(held, JOBS, "each job ran once");
    assert!(pool.shutdown().await.drained);
}
