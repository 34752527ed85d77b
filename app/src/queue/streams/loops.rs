//! The loops of a pool on Redis Streams: fetch (XREADGROUP), reclaim (XAUTOCLAIM) and mover
//! (delayed schedule -> stream). Each ends when the pool stops.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{deliver, scripts};
use crate::queue::worker::Shared;

/// Pause after a Redis error before the loop tries again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Takes up to `max` permits without waiting.
fn take_permits(permits: &Arc<Semaphore>, max: usize) -> Vec<OwnedSemaphorePermit> {
    let mut got = Vec::new();
    while got.len() < max {
        match permits.clone().try_acquire_owned() {
            Ok(p) => got.push(p),
            Err(_) => break,
        }
    }
    got
}

/// Hands claimed or read entries to job tasks, one permit each.
fn dispatch(
    sh: &Arc<Shared>,
    queue: &Arc<str>,
    entries: Vec<StreamId>,
    mut permits: Vec<OwnedSemaphorePermit>,
) {
    for entry in entries {
        let Some(permit) = permits.pop() else {
            // Cannot happen (COUNT = permits); the entry stays pending and is reclaimed.
            tracing::warn!(entry = %entry.id, "entry without a permit");
            continue;
        };
        let job_id = entry.get::<String>("job").unwrap_or_default();
        sh.tracker.spawn(deliver::run(
            sh.clone(),
            queue.clone(),
            entry.id,
            job_id,
            permit,
        ));
    }
}

/// Reads new entries for this consumer while permits are free.
pub(super) async fn fetch(
    sh: Arc<Shared>,
    queue: Arc<str>,
    permits: Arc<Semaphore>,
    mut conn: ConnectionManager,
) {
    let s = sh.queue.settings().clone();
    let stream = sh.queue.keys().stream(&queue);
    loop {
        let first = tokio::select! {
            _ = sh.stop.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let mut got = take_permits(&permits, 255);
        got.push(first);
        // The read is never dropped half-way (that would strand delivered entries until
        // they are reclaimed): BLOCK is short and the stop flag is checked between reads.
        let reply: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&s.group)
            .arg(&sh.consumer)
            .arg("COUNT")
            .arg(got.len())
            .arg("BLOCK")
            .arg(s.block_ms)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(Some(r)) => {
                let entries: Vec<StreamId> = r.keys.into_iter().flat_map(|k| k.ids).collect();
                dispatch(&sh, &queue, entries, got);
            }
            Ok(None) => {}
            Err(e) => {
                drop(got);
                if e.code() == Some("NOGROUP") {
                    // The stream was deleted under us (e.g. FLUSHALL): make it again.
                    if let Err(e) = sh.queue.ensure_group(&queue).await {
                        tracing::warn!(queue = %queue, error = %e, "cannot create group");
                    }
                } else {
                    tracing::warn!(queue = %queue, error = %e, "XREADGROUP failed");
                }
                if !sh.pause(ERROR_PAUSE).await {
                    return;
                }
            }
        }
        if sh.stop.is_cancelled() {
            return;
        }
    }
}

/// Takes over entries that stayed pending longer than `claim_idle_ms` without a heartbeat:
/// their worker was killed, crashed or lost Redis.
pub(super) async fn reclaim(sh: Arc<Shared>, queue: Arc<str>, permits: Arc<Semaphore>) {
    let s = sh.queue.settings().clone();
    let stream = sh.queue.keys().stream(&queue);
    let every = Duration::from_millis((s.claim_idle_ms / 2).max(100));
    let mut cursor = "0-0".to_string();
    let mut conn = sh.queue.connection();
    let mut rounds = 0u64;
    while sh.pause(every).await {
        rounds += 1;
        if rounds.is_multiple_of(120)
            && let Err(e) = forget_idle_consumers(&sh, &stream).await
        {
            tracing::debug!(queue = %queue, error = %e, "consumer cleanup failed");
        }
        // Wait in line for a permit: the fetch loop holds all free permits while its read
        // blocks, and the semaphore is fair, so this gets the next one released.
        let first = tokio::select! {
            _ = sh.stop.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let mut got = take_permits(&permits, 99);
        got.push(first);
        let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(&s.group)
            .arg(&sh.consumer)
            .arg(s.claim_idle_ms)
            .arg(&cursor)
            .arg("COUNT")
            .arg(got.len())
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(r) => {
                cursor = r.next_stream_id;
                let n = r.claimed.len() as u64;
                if n > 0 {
                    tracing::info!(queue = %queue, entries = n, "reclaimed idle entries");
                    sh.stats
                        .reclaimed
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    if let Some(m) = sh.queue.metrics() {
                        m.reclaimed(&queue, n);
                    }
                }
                dispatch(&sh, &queue, r.claimed, got);
            }
            Err(e) if e.code() == Some("NOGROUP") => cursor = "0-0".into(),
            Err(e) => tracing::warn!(queue = %queue, error = %e, "XAUTOCLAIM failed"),
        }
    }
}

/// Consumers idle at least this long with nothing pending are removed from the group
/// (killed processes leave their consumer names behind; a live one is re-created by its
/// next XREADGROUP).
const FORGET_CONSUMER_AFTER_MS: usize = 3_600_000;

/// Drops the names of long-gone consumers that hold no entries.
async fn forget_idle_consumers(sh: &Shared, stream: &str) -> redis::RedisResult<()> {
    use redis::AsyncCommands;
    let group = &sh.queue.settings().group;
    let mut conn = sh.queue.connection();
    let reply: redis::streams::StreamInfoConsumersReply =
        conn.xinfo_consumers(stream, group).await?;
    for c in reply.consumers {
        if c.pending == 0 && c.idle >= FORGET_CONSUMER_AFTER_MS && c.name != sh.consumer {
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(stream)
                .arg(group)
                .arg(&c.name)
                .query_async(&mut conn)
                .await?;
            tracing::info!(consumer = %c.name, "forgot an idle consumer");
        }
    }
    Ok(())
}

/// Moves due jobs (delayed jobs, retries) from the sorted set to the stream.
pub(super) async fn mover(sh: Arc<Shared>, queue: Arc<str>) {
    let s = sh.queue.settings().clone();
    let k = sh.queue.keys().clone();
    let (delayed, stream, job_prefix) = (k.delayed(&queue), k.stream(&queue), k.job_prefix());
    let mut conn = sh.queue.connection();
    const BATCH: u64 = 500;
    while sh.pause(Duration::from_millis(s.mover_interval_ms)).await {
        loop {
            let moved: redis::RedisResult<u64> = scripts::MOVE_DUE_S
                .key(&delayed)
                .key(&stream)
                .arg(BATCH)
                .arg(&job_prefix)
                .invoke_async(&mut conn)
                .await;
            match moved {
                Ok(n) if n >= BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "moving due jobs failed");
                    break;
                }
            }
        }
    }
}
