//! Queue behaviour against a real redis-server: idempotent enqueue, delayed jobs, retries,
//! dead letters and replay, graceful shutdown and reclaiming abandoned work.

use std::future::Future;
use std::time::Duration;

mod support;

use app::queue::{
    JobContext, JobError, JobOutput, JobState, NewJob, Queue, QueueSettings, Registry, Schedule,
    WorkerPool,
};
use redis::AsyncCommands;
use serde_json::json;

fn settings() -> QueueSettings {
    support::fast_queue_settings()
}

fn redis() -> support::RedisServer {
    support::RedisServer::start()
}

/// Polls `cond` every 50 ms for at most `limit`; panics with `what` if it never holds.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn state(q: &Queue, id: &str) -> JobState {
    q.get(id).await.expect("get").expect("job exists").state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_enqueue_returns_the_first_job() {
    let r = redis();
    let q = Queue::connect(&r.url(), settings()).await.unwrap();
    let job = || NewJob::new("basic", "noop", json!({"n": 1})).idempotency_key("order-42");
    let a = q.enqueue(job()).await.unwrap();
    let b = q.enqueue(job()).await.unwrap();
    assert!(a.created);
    assert!(!b.created);
    assert_eq!(a.id, b.id);
    // A different key is a different job.
    let c = q
        .enqueue(NewJob::new("basic", "noop", json!({})).idempotency_key("order-43"))
        .await
        .unwrap();
    assert_ne!(c.id, a.id);
    assert_eq!(q.stats("basic").await.unwrap().length, 2);

    // Bad input is refused with a clear error.
    let e = q
        .enqueue(NewJob::new("bad queue", "noop", json!({})))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("queue name"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_job_does_not_run_early() {
    let r = redis();
    let q = Queue::connect(&r.url(), settings()).await.unwrap();
    // The handler stamps the Redis clock when it runs; the job's created_ms is the same clock.
    let reg = Registry::new().on("delayed", "stamp", |ctx: JobContext| async move {
        let mut conn = ctx.queue.connection();
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok::<JobOutput, JobError>(Some(json!(s * 1000 + us / 1000)))
    });
    let pool = WorkerPool::start(q.clone(), reg).await.unwrap();
    let e = q
        .enqueue(NewJob::new("delayed", "stamp", json!({})).schedule(Schedule::After(3_000)))
        .await
        .unwrap();
    let now_job = q
        .enqueue(NewJob::new("delayed", "stamp", json!({})))
        .await
        .unwrap();
    assert_eq!(state(&q, &e.id).await, JobState::Scheduled);
    wait_for(Duration::from_secs(30), "the immediate job", || async {
        state(&q, &now_job.id).await == JobState::Succeeded
    })
    .await;
    wait_for(Duration::from_secs(30), "the delayed job", || async {
        state(&q, &e.id).await == JobState::Succeeded
    })
    .await;
    let job = q.get(&e.id).await.unwrap().unwrap();
    let ran_at = job.result.unwrap().as_u64().unwrap();
    assert!(
        ran_at >= job.created_ms + 3_000,
        "ran at {ran_at}, created {}, delay 3000",
        job.created_ms
    );
    // run_at in the past runs at once; in the future waits.
    let past = q
        .enqueue(NewJob::new("delayed", "stamp", json!({})).schedule(Schedule::At(1)))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the run-at-past job", || async {
        state(&q, &past.id).await == JobState::Succeeded
    })
    .await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_dead_letters_and_replay() {
    let r = redis();
    let q = Queue::connect(&r.url(), settings()).await.unwrap();
    // Fails until the flag key exists, then succeeds.
    let reg = Registry::new()
        .on("retry", "until_flag", |ctx: JobContext| async move {
            let mut conn = ctx.queue.connection();
            let ok: bool = conn.exists("flag").await?;
            if ok {
                Ok(Some(json!("done")))
            } else {
                Err(JobError::retry(format!(
                    "no flag at attempt {}",
                    ctx.attempt
                )))
            }
        })
        .on("retry", "permanent", |_ctx: JobContext| async move {
            Err::<JobOutput, _>(JobError::permanent("cannot ever work"))
        });
    let pool = WorkerPool::start(q.clone(), reg).await.unwrap();
    let a = q
        .enqueue(NewJob::new("retry", "until_flag", json!({})))
        .await
        .unwrap();
    let p = q
        .enqueue(NewJob::new("retry", "permanent", json!({})))
        .await
        .unwrap();
    let unknown = q
        .enqueue(NewJob::new("retry", "no_such_kind", json!({})))
        .await
        .unwrap();
    for id in [&a.id, &p.id, &unknown.id] {
        wait_for(Duration::from_secs(30), "a dead job", || async {
            state(&q, id).await == JobState::Dead
        })
        .await;
    }
    let ja = q.get(&a.id).await.unwrap().unwrap();
    assert_eq!(ja.attempts, 3, "all attempts used");
    assert_eq!(ja.history.len(), 3);
    assert!(ja.history.iter().all(|h| h.outcome == "failed"));
    assert_eq!(ja.last_error.as_deref(), Some("no flag at attempt 3"));
    let jp = q.get(&p.id).await.unwrap().unwrap();
    assert_eq!(jp.attempts, 1, "a permanent failure is not retried");

    let dead = q.dlq_list("retry", None, 100).await.unwrap();
    assert_eq!(dead.len(), 3);
    let da = dead.iter().find(|d| d.job_id == a.id).expect("a in dlq");
    assert_eq!(da.attempts, 3);
    assert_eq!(da.history.len(), 3);
    assert!(
        dead.iter()
            .any(|d| d.job_id == unknown.id && d.error.contains("no handler")),
        "{dead:?}"
    );

    // Replay one entry after fixing the cause: it runs again and succeeds.
    let mut conn = q.connection();
    let _: () = conn.set("flag", 1).await.unwrap();
    let replayed = q.dlq_replay("retry", &da.entry).await.unwrap();
    assert_eq!(replayed.as_deref(), Some(a.id.as_str()));
    assert_eq!(
        q.dlq_replay("retry", &da.entry).await.unwrap(),
        None,
        "only once"
    );
    wait_for(Duration::from_secs(30), "the replayed job", || async {
        state(&q, &a.id).await == JobState::Succeeded
    })
    .await;
    let ja = q.get(&a.id).await.unwrap().unwrap();
    assert!(ja.history.iter().any(|h| h.outcome == "replayed"));
    assert_eq!(q.dlq_list("retry", None, 100).await.unwrap().len(), 2);

    // Purge removes the rest and their records.
    assert_eq!(q.dlq_purge("retry").await.unwrap(), 2);
    assert!(q.get(&p.id).await.unwrap().is_none());
    assert_eq!(q.stats("retry").await.unwrap().dead, 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_jobs_or_leaves_them_for_others() {
    let r = redis();
    let slow = |ms: u64| {
        move |_ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<JobOutput, JobError>(None)
        }
    };
    let mut s = settings();
    s.default_concurrency = 2;
    let q = Queue::connect(&r.url(), s.clone()).await.unwrap();

    // 1. Short jobs within the grace period: all finish and are acknowledged.
    // Both are enqueued first so that one read delivers them together.
    let a = q
        .enqueue(NewJob::new("shut", "slow", json!({})))
        .await
        .unwrap();
    let b = q
        .enqueue(NewJob::new("shut", "slow", json!({})))
        .await
        .unwrap();
    let pool = WorkerPool::start(q.clone(), Registry::new().on("shut", "slow", slow(1_500)))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "both running", || async {
        state(&q, &a.id).await == JobState::Running && state(&q, &b.id).await == JobState::Running
    })
    .await;
    let report = pool.shutdown().await;
    assert!(report.drained);
    assert_eq!(state(&q, &a.id).await, JobState::Succeeded);
    assert_eq!(state(&q, &b.id).await, JobState::Succeeded);
    assert_eq!(q.stats("shut").await.unwrap().pending, 0);

    // 2. A job longer than the grace period: abandoned, NOT acknowledged, then reclaimed
    //    and finished by another instance.
    let mut short_grace = s.clone();
    short_grace.shutdown_grace_ms = 100;
    let q2 = Queue::connect(&r.url(), short_grace).await.unwrap();
    let pool = WorkerPool::start(q2.clone(), Registry::new().on("shut", "slow", slow(60_000)))
        .await
        .unwrap();
    let c = q
        .enqueue(NewJob::new("shut", "slow", json!({})))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "c running", || async {
        state(&q, &c.id).await == JobState::Running
    })
    .await;
    let report = pool.shutdown().await;
    assert!(!report.drained);
    assert_eq!(report.abandoned, 1);
    assert_eq!(state(&q, &c.id).await, JobState::Running, "not marked done");
    assert_eq!(
        q.stats("shut").await.unwrap().pending,
        1,
        "not acknowledged"
    );

    let other = WorkerPool::start(q.clone(), Registry::new().on("shut", "slow", slow(10)))
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "c reclaimed and done", || async {
        state(&q, &c.id).await == JobState::Succeeded
    })
    .await;
    let jc = q.get(&c.id).await.unwrap().unwrap();
    assert_eq!(jc.attempts, 2);
    assert_eq!(jc.history[0].outcome, "reclaimed");
    assert!(app::queue::PoolStats::get(&other.stats().reclaimed) >= 1);
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down_and_works_once_it_is_back() {
    let mut r = redis();
    r.kill();
    let q = Queue::connect_lazy(&r.url(), settings(), None).expect("lazy queue");
    let reg = Registry::new().on("late", "noop", |_ctx: JobContext| async move {
        Ok::<JobOutput, JobError>(None)
    });
    let pool = WorkerPool::start(q.clone(), reg)
        .await
        .expect("a pool starts without Redis");
    let e = q.enqueue(NewJob::new("late", "noop", json!({}))).await;
    assert!(matches!(e, Err(app::queue::QueueError::Redis(_))), "{e:?}");

    r.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        match q.enqueue(NewJob::new("late", "noop", json!({}))).await {
            Ok(e) => break e.id,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "enqueue never worked after Redis came back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_for(
        Duration::from_secs(60),
        "the job after Redis came back",
        || async { q.get(&id).await.ok().flatten().map(|j| j.state) == Some(JobState::Succeeded) },
    )
    .await;
    pool.shutdown().await;
}
