//! RabbitMQ killed (SIGKILL) and started again in the middle of a load of 5,000 jobs:
//! producers and consumers reconnect by themselves, every job whose enqueue returned Ok
//! (the broker confirmed it) completes, and none has its effect twice.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use app::queue::{
    JobContext, JobState, NewJob, Queue, QueueBackend, QueueSettings, Registry, WorkerPool,
};
use redis::AsyncCommands;
use serde_json::json;

const JOBS: usize = 5_000;
const PRODUCERS: usize = 8;

/// The effect: a fence per job id decides whether this run counts, so a redelivered job
/// (its first run's ack was lost with the broker) adds nothing. `runs` counts every run.
const EFFECT: &str = r#"
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
if redis.call('HSETNX', KEYS[1], ARGV[1], 1) == 1 then
  return redis.call('INCR', KEYS[2])
end
return 0
"#;

fn registry() -> Registry {
    Registry::new().on("load", "effect", |ctx: JobContext| async move {
        // Some work time, so that jobs are in flight when the broker dies.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let k = ctx.queue.keys();
        let mut c = ctx.queue.connection();
        let _: i64 = redis::Script::new(EFFECT)
            .key(k.scoped("fence"))
            .key(k.scoped("effects"))
            .key(k.scoped("runs"))
            .arg(&ctx.id)
            .invoke_async(&mut c)
            .await?;
        Ok(None)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_no_confirmed_job_and_doubles_no_effect() {
    let mut rabbit = support::rabbit::RabbitServer::start();
    let redis = support::RedisServer::start();
    let settings = QueueSettings {
        backend: QueueBackend::Rabbitmq,
        rabbitmq_url: rabbit.url(),
        claim_idle_ms: 2_000,
        default_concurrency: 32,
        ..Default::default()
    };
    let q = Queue::connect(&redis.url(), settings.clone())
        .await
        .expect("queue");
    q.ensure_group("load").await.expect("declare");
    let pool = WorkerPool::start(q.clone(), registry())
        .await
        .expect("pool");

    let confirmed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let (q, confirmed, failed, next) =
            (q.clone(), confirmed.clone(), failed.clone(), next.clone());
        producers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= JOBS {
                    return;
                }
                let job = NewJob::new("load", "effect", json!({ "i": i }));
                match q.enqueue(job).await {
                    Ok(e) => confirmed.lock().unwrap().push(e.id),
                    // Not confirmed: the caller would retry; we only count it.
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // Restart the broker once a quarter of the load is in.
    let quarter = support::wait_until_async(
        Duration::from_secs(120),
        Duration::from_millis(10),
        || async { confirmed.lock().unwrap().len() >= JOBS / 4 },
    )
    .await;
    assert!(quarter, "the producers did not get going");
    let mut c = q.connection();
    let runs_before: usize = c.hlen(q.keys().scoped("runs")).await.unwrap();
    // Off the runtime's threads: the restart waits for the broker to boot.
    rabbit = tokio::task::spawn_blocking(move || {
        rabbit.restart();
        rabbit
    })
    .await
    .expect("restart");
    for p in producers {
        p.await.expect("producer task");
    }
    let confirmed = confirmed.lock().unwrap().clone();
    let failed = failed.load(Ordering::SeqCst);
    eprintln!(
        "confirmed {} enqueues, {failed} failed during the restart; {runs_before} jobs had run before it",
        confirmed.len()
    );
    assert!(confirmed.len() + failed == JOBS);
    assert!(confirmed.len() > JOBS / 2, "too few confirmed enqueues");

    // Every confirmed job completes.
    let all = support::wait_until_async(
        Duration::from_secs(240),
        Duration::from_millis(250),
        || async {
            let mut p = redis::pipe();
            for id in &confirmed {
                p.hget(q.keys().job(id), "state");
            }
            let mut c = q.connection();
            let states: Vec<Option<String>> = match p.query_async(&mut c).await {
                Ok(s) => s,
                Err(_) => return false,
            };
            states.iter().all(|s| s.as_deref() == Some("succeeded"))
        },
    )
    .await;
    let mut missing = Vec::new();
    for id in &confirmed {
        let st = q.get(id).await.unwrap().map(|j| j.state);
        if st != Some(JobState::Succeeded) {
            missing.push((id.clone(), st));
        }
    }
    assert!(
        all && missing.is_empty(),
        "{} confirmed jobs did not complete: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // None twice in effect: one effect per job that ran, however often it was delivered.
    let mut c = q.connection();
    let effects: i64 = c.get(q.keys().scoped("effects")).await.unwrap();
    let fenced: i64 = c.hlen(q.keys().scoped("fence")).await.unwrap();
    let runs: std::collections::HashMap<String, i64> =
        c.hgetall(q.keys().scoped("runs")).await.unwrap();
    let total_runs: i64 = runs.values().sum();
    eprintln!(
        "{effects} effects, {total_runs} runs of {} distinct jobs",
        runs.len()
    );
    assert_eq!(effects, fenced);
    assert_eq!(effects as usize, runs.len());
    assert!(effects as usize >= confirmed.len());
    assert!(effects as usize <= JOBS);
    // A job's record says succeeded once: its history ends with exactly one success.
    for id in confirmed.iter().take(500) {
        let j = q.get(id).await.unwrap().unwrap();
        assert_eq!(support::successes(&j), 1, "job {id}: {:?}", j.history);
    }
    let ps = pool.stats();
    eprintln!(
        "pool: {} attempts started, {} deliveries found their job already done (redelivered after the restart)",
        app::queue::PoolStats::get(&ps.started),
        app::queue::PoolStats::get(&ps.stale)
    );
    assert!(pool.shutdown().await.drained);
    q.close().await;
    drop(rabbit);
}
