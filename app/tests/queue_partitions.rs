//! Partitions of a queue on one redis-server: where jobs go, and a changed
//! `queue.partitions` that leaves no job behind.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use app::queue::keys::job_tag;
use app::queue::{JobState, NewJob, Queue, QueueSettings, Registry, WorkerPool};
use serde_json::json;
use support::RedisServer;

fn settings(prefix: &str, partitions: u32) -> QueueSettings {
    QueueSettings {
        key_prefix: prefix.into(),
        partitions,
        claim_idle_ms: 1_000,
        block_ms: 200,
        mover_interval_ms: 50,
        ..Default::default()
    }
}

fn noop() -> Registry {
    Registry::new().on("p", "noop", |_ctx: app::queue::JobContext| async move {
        Ok(None)
    })
}

async fn enqueue_n(q: &Queue, n: usize, key: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut job = NewJob::new("p", "noop", json!(i));
        if let Some(k) = key {
            job = job.ordering_key(k);
        }
        ids.push(q.enqueue(job).await.expect("enqueue").id);
    }
    ids
}

async fn wait_succeeded(q: &Queue, ids: &[String]) {
    let ok = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            for id in ids {
                if q.get(id).await.expect("read").map(|j| j.state) != Some(JobState::Succeeded) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert!(ok, "not every job succeeded within 60 s");
}

/// Jobs without a key go round robin over every partition; jobs of one ordering key, and
/// of one idempotency key, stay in one partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_and_keys_stay_together() {
    let r = RedisServer::start();
    let q = Queue::connect(&r.url(), settings("spread", 4))
        .await
        .expect("queue");
    let tags_of = |ids: &[String]| -> BTreeSet<String> {
        ids.iter()
            .map(|id| {
                job_tag(id)
                    .expect("a job id carries its partition")
                    .to_string()
            })
            .collect()
    };
    let all: BTreeSet<String> = q.keys().partitions().map(|p| p.tag.to_string()).collect();
    assert_eq!(all.len(), 4);
    let spread = enqueue_n(&q, 8, None).await;
    assert_eq!(tags_of(&spread), all);
    let keyed = enqueue_n(&q, 8, Some("k1")).await;
    assert_eq!(tags_of(&keyed).len(), 1);
    let mut idem = Vec::new();
    for i in 0..8 {
        let e = q
            .enqueue(NewJob::new("p", "noop", json!(i)).idempotency_key(format!("same-{}", i % 2)))
            .await
            .expect("enqueue");
        idem.push(e.id);
    }
    assert_eq!(
        tags_of(&idem).len(),
        2,
        "two idempotency keys, two jobs: {idem:?}"
    );
    let pool = WorkerPool::start(q.clone(), noop()).await.expect("pool");
    for ids in [&spread, &keyed, &idem] {
        wait_succeeded(&q, ids).await;
    }
    assert!(pool.shutdown().await.drained);
}

/// Jobs enqueued by an instance with one partition count are run by pools started with
/// another, in both directions, and the sizes count them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_partition_count_strands_no_job() {
    let r = RedisServer::start();
    // Counts whose partitions share no tag, so the old jobs are only where the new
    // instance's own partitions are not.
    for (before, after) in [(3, 4), (4, 1)] {
        let prefix = format!("change{before}to{after}");
        let old = Queue::connect(&r.url(), settings(&prefix, before))
            .await
            .expect("queue");
        let ids = enqueue_n(&old, 30, None).await;
        let new = Queue::connect(&r.url(), settings(&prefix, after))
            .await
            .expect("queue");
        // The new instance counts the jobs of the old partitions too.
        assert_eq!(new.stats("p").await.expect("stats").length, 30);
        let pool = WorkerPool::start(new.clone(), noop()).await.expect("pool");
        wait_succeeded(&new, &ids).await;
        let more = enqueue_n(&new, 10, None).await;
        wait_succeeded(&new, &more).await;
        let st = new.stats("p").await.expect("stats");
        assert_eq!((st.length, st.pending, st.delayed), (0, 0, 0), "{st:?}");
        assert!(pool.shutdown().await.drained);
    }
}
