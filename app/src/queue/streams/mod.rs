//! The Redis Streams transport (`queue.backend = "redis"`, the default): per queue and
//! partition (see `super::keys`) one stream read by one consumer group shared by every
//! instance, a sorted set of delayed jobs and retries moved into the stream when due, and a
//! dead-letter stream. Every pool reads every partition. Job state and stream bookkeeping
//! change together in one Lua script (see `scripts`).

mod complete;
mod deliver;
mod dlq;
mod loops;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use tokio::sync::Semaphore;

use super::batch;
use super::client::QueueStats;
use super::transport::{Prepared, Transport, Workers};
use super::worker::Shared;
use super::{DeadLetter, Enqueued, Queue, QueueError, retry};

/// Creates the consumer group (and the stream) of `queue` in partition `tag` if missing.
pub(super) async fn ensure_group(q: &Queue, tag: &str, queue: &str) -> Result<(), QueueError> {
    let stream = q.keys().stream(tag, queue);
    let r: Result<(), QueueError> = retry::redis(q, "group", |mut c| {
        let stream = &stream;
        async move {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(&q.settings().group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await
        }
    })
    .await;
    match r {
        Err(QueueError::Redis(e)) if e.code() == Some("BUSYGROUP") => Ok(()),
        r => r,
    }
}

/// (length, pending, delayed, dead) of one partition.
async fn partition_sizes(
    q: &Queue,
    tag: &str,
    queue: &str,
) -> Result<(u64, u64, u64, u64), QueueError> {
    let k = q.keys();
    let (stream, delayed, dlq) = (
        k.stream(tag, queue),
        k.delayed(tag, queue),
        k.dlq(tag, queue),
    );
    retry::redis(q, "stats", |mut c| {
        let (stream, delayed, dlq) = (&stream, &delayed, &dlq);
        async move {
            // The three keys share the partition's slot: one pipeline, one node.
            let (length, delayed, dead): (u64, u64, u64) = redis::pipe()
                .xlen(stream)
                .zcard(delayed)
                .xlen(dlq)
                .query_async(&mut c)
                .await?;
            let pending = if length == 0 {
                0
            } else {
                let r: redis::RedisResult<redis::streams::StreamPendingReply> =
                    c.xpending(stream, &q.settings().group).await;
                match r {
                    Ok(p) => p.count() as u64,
                    // No group yet: nothing was delivered.
                    Err(e) if e.code() == Some("NOGROUP") => 0,
                    Err(e) => return Err(e),
                }
            };
            Ok((length, pending, delayed, dead))
        }
    })
    .await
}

/// The stream, the group and the schedule live in the queue's Redis; the transport holds
/// only the batcher that coalesces this process's concurrent enqueues.
pub(crate) struct Streams {
    enqueues: batch::Lazy<batch::Item, (String, i64)>,
}

impl Streams {
    pub(crate) fn new() -> Self {
        Self {
            enqueues: batch::Lazy::new(|items| {
                Box::pin(batch::call(&scripts::ENQUEUE_S, "enqueue", items))
            }),
        }
    }
}

#[async_trait]
impl Transport for Streams {
    async fn connect(&self) -> Result<(), QueueError> {
        // The queue's Redis connection, already open, is all this transport needs.
        Ok(())
    }

    async fn enqueue(&self, q: &Queue, job: Prepared<'_>) -> Result<Enqueued, QueueError> {
        let k = q.keys();
        let args = job.args(q.settings().idempotency_ttl_s);
        debug_assert_eq!(args.len(), scripts::ENQUEUE_ARGS);
        let item = batch::Item {
            q: q.clone(),
            tag: job.tag.to_string(),
            keys: vec![
                k.job(&job.id),
                k.stream(job.tag, job.queue),
                k.delayed(job.tag, job.queue),
                k.idempotency(job.tag, job.queue, job.idem),
            ],
            args,
        };
        let (id, created) = self.enqueues.submit(item).await?;
        Ok(Enqueued {
            id,
            created: created == 1,
        })
    }

    /// Creates the consumer group (and the stream) of every partition if missing. It starts
    /// at the beginning of the stream, so jobs enqueued before any worker existed are
    /// delivered.
    async fn ensure_queue(&self, q: &Queue, queue: &str) -> Result<(), QueueError> {
        for tag in q.partition_tags().await? {
            ensure_group(q, &tag, queue).await?;
        }
        Ok(())
    }

    /// Sums the partitions. Acknowledged entries are deleted, so a stream holds only waiting
    /// and pending entries.
    async fn stats(&self, q: &Queue, queue: &str) -> Result<QueueStats, QueueError> {
        let mut total = QueueStats {
            queue: queue.to_string(),
            ..Default::default()
        };
        for tag in q.partition_tags().await? {
            let (length, pending, delayed, dead) = partition_sizes(q, &tag, queue).await?;
            total.length += length;
            total.pending += pending;
            total.delayed += delayed;
            total.dead += dead;
        }
        total.lag = total.length.saturating_sub(total.pending);
        Ok(total)
    }

    async fn dlq_list(
        &self,
        q: &Queue,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        dlq::list(q, queue, after, count).await
    }

    async fn dlq_replay(
        &self,
        q: &Queue,
        queue: &str,
        entry: &str,
    ) -> Result<Option<String>, QueueError> {
        dlq::replay(q, queue, entry).await
    }

    async fn dlq_replay_all(&self, q: &Queue, queue: &str) -> Result<Vec<String>, QueueError> {
        dlq::replay_all(q, queue).await
    }

    async fn dlq_purge(&self, q: &Queue, queue: &str) -> Result<u64, QueueError> {
        dlq::purge(q, queue).await
    }

    /// Per queue a fetch loop (over the partitions; with one partition, blocking on a
    /// connection of its own), a reclaim loop (XAUTOCLAIM) and a mover loop (due jobs into
    /// the streams).
    async fn start_workers(
        &self,
        sh: &Arc<Shared>,
        queues: &[String],
    ) -> Result<Workers, QueueError> {
        let q = &sh.queue;
        let s = q.settings();
        let mut loops = Vec::new();
        // One completion batcher for the pool: it ends when the loops and job tasks holding
        // it have ended and its last completions are recorded.
        let done = complete::completer(sh);
        for name in queues {
            // Redis may be down at start: the fetch loop creates the group once it is back.
            if let Err(e) = self.ensure_queue(q, name).await {
                tracing::warn!(queue = %name, error = %e, "cannot create the consumer group yet");
            }
            let name: Arc<str> = Arc::from(name.as_str());
            let permits = Arc::new(Semaphore::new(s.concurrency(&name)));
            let read_conn = q.blocking_connection(Duration::from_millis(s.block_ms + 5_000))?;
            loops.push(tokio::spawn(loops::fetch(
                sh.clone(),
                name.clone(),
                permits.clone(),
                read_conn,
                done.clone(),
            )));
            loops.push(tokio::spawn(loops::reclaim(
                sh.clone(),
                name.clone(),
                permits,
                done.clone(),
            )));
            loops.push(tokio::spawn(loops::mover(sh.clone(), name)));
        }
        Ok(Workers { loops, held: None })
    }

    async fn close(&self) {}
}
