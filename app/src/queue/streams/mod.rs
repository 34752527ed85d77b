//! The Redis Streams transport (`queue.backend = "redis"`, the default): one stream per
//! queue read by one consumer group shared by every instance, a sorted set of delayed jobs
//! and retries moved into the stream when due, a dead-letter stream per queue. Job state and
//! stream bookkeeping change together in one Lua script (see `scripts`).

mod deliver;
mod dlq;
mod loops;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use tokio::sync::Semaphore;

use super::client::QueueStats;
use super::transport::{Prepared, Transport, Workers};
use super::worker::Shared;
use super::{DeadLetter, Enqueued, Queue, QueueError};

/// The transport itself holds nothing: the stream, the group and the schedule live in the
/// queue's Redis.
pub(crate) struct Streams;

#[async_trait]
impl Transport for Streams {
    async fn connect(&self) -> Result<(), QueueError> {
        // The queue's Redis connection, already open, is all this transport needs.
        Ok(())
    }

    async fn enqueue(&self, q: &Queue, job: Prepared<'_>) -> Result<Enqueued, QueueError> {
        let k = q.keys();
        let mut conn = q.connection();
        let (id, created): (String, i64) = scripts::ENQUEUE_S
            .key(k.job(&job.id))
            .key(k.stream(job.queue))
            .key(k.delayed(job.queue))
            .key(k.idempotency(job.queue, job.idem))
            .arg(&job.id)
            .arg(job.queue)
            .arg(job.kind)
            .arg(job.payload)
            .arg(job.max_attempts)
            .arg(job.at_ms)
            .arg(job.after_ms)
            .arg(if job.idem.is_empty() { "0" } else { "1" })
            .arg(q.settings().idempotency_ttl_s)
            .arg(job.notify_queue)
            .arg(job.notify_attempts)
            .invoke_async(&mut conn)
            .await?;
        Ok(Enqueued {
            id,
            created: created == 1,
        })
    }

    /// Creates the consumer group (and the stream) if missing. It starts at the beginning of
    /// the stream, so jobs enqueued before any worker existed are delivered.
    async fn ensure_queue(&self, q: &Queue, queue: &str) -> Result<(), QueueError> {
        let mut conn = q.connection();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(q.keys().stream(queue))
            .arg(&q.settings().group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn stats(&self, q: &Queue, queue: &str) -> Result<QueueStats, QueueError> {
        let k = q.keys();
        let mut conn = q.connection();
        let (length, delayed, dead): (u64, u64, u64) = redis::pipe()
            .xlen(k.stream(queue))
            .zcard(k.delayed(queue))
            .xlen(k.dlq(queue))
            .query_async(&mut conn)
            .await?;
        let pending = if length == 0 {
            0
        } else {
            let r: redis::RedisResult<redis::streams::StreamPendingReply> =
                conn.xpending(k.stream(queue), &q.settings().group).await;
            match r {
                Ok(p) => p.count() as u64,
                // No group yet: nothing was delivered.
                Err(e) if e.code() == Some("NOGROUP") => 0,
                Err(e) => return Err(e.into()),
            }
        };
        // Acknowledged entries are deleted, so the stream holds only waiting + pending ones.
        Ok(QueueStats {
            queue: queue.to_string(),
            length,
            pending,
            lag: length.saturating_sub(pending),
            delayed,
            dead,
        })
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

    /// Per queue a fetch loop (XREADGROUP on a connection of its own), a reclaim loop
    /// (XAUTOCLAIM) and a mover loop (due jobs into the stream).
    async fn start_workers(
        &self,
        sh: &Arc<Shared>,
        queues: &[String],
    ) -> Result<Workers, QueueError> {
        let q = &sh.queue;
        let s = q.settings();
        let mut loops = Vec::new();
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
            )));
            loops.push(tokio::spawn(loops::reclaim(
                sh.clone(),
                name.clone(),
                permits,
            )));
            loops.push(tokio::spawn(loops::mover(sh.clone(), name)));
        }
        Ok(Workers { loops, held: None })
    }

    async fn close(&self) {}
}
