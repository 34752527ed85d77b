//! The loops of a pool on Redis Streams, one of each per queue: fetch (XREADGROUP over the
//! queue's partitions), reclaim (XAUTOCLAIM) and mover (delayed schedule -> stream). Each
//! ends when the pool stops.
//!
//! Fetching takes a permit per entry before reading, so the pool never holds more entries
//! than its concurrency (pending = running). With one partition the read blocks
//! (`block_ms`) on a connection of its own. With several, a blocking read on one partition
//! would keep permits away from the others (a cluster refuses one read over several slots),
//! so the loop reads each partition without blocking, in turn, starting one further each
//! round, and pauses (up to `idle_poll_ms`) after a round that found nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use app_redis::RedisConn;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::complete::Completer;
use super::deliver::{self, Delivery};
use super::scripts;
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

/// Waits for one permit, then takes up to `max` in all; None when the pool stops.
async fn wait_permits(
    sh: &Shared,
    permits: &Arc<Semaphore>,
    max: usize,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        _ = sh.stop.cancelled() => return None,
        p = permits.clone().acquire_owned() => p.ok()?,
    };
    let mut got = take_permits(permits, max.saturating_sub(1));
    got.push(first);
    Some(got)
}

/// Hands claimed or read entries of partition `tag` to one START call (see
/// `deliver::start_all`), one permit each.
fn dispatch(
    sh: &Arc<Shared>,
    queue: &Arc<str>,
    tag: &Arc<str>,
    entries: Vec<StreamId>,
    permits: &mut Vec<OwnedSemaphorePermit>,
    done: &Completer,
) {
    let mut ds = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(permit) = permits.pop() else {
            // Cannot happen (COUNT = permits); the entry stays pending and is reclaimed.
            tracing::warn!(entry = %entry.id, "entry without a permit");
            continue;
        };
        let job_id = entry.get::<String>("job").unwrap_or_default();
        ds.push((Delivery::new(sh, queue, tag, entry.id, job_id), permit));
    }
    if !ds.is_empty() {
        sh.tracker
            .spawn(deliver::start_all(sh.clone(), ds, done.clone()));
    }
}

/// Reads new entries for this consumer while permits are free. `blocking` is a connection
/// of the loop's own, used when the queue has one partition.
pub(super) async fn fetch(
    sh: Arc<Shared>,
    queue: Arc<str>,
    permits: Arc<Semaphore>,
    mut blocking: RedisConn,
    done: Completer,
) {
    let s = sh.queue.settings().clone();
    let mut shared = sh.queue.connection();
    let mut first = 0usize;
    let mut idle = Duration::from_millis(1);
    loop {
        let Some(mut got) = wait_permits(&sh, &permits, 256).await else {
            return;
        };
        let tags = sh.partitions();
        let single = tags.len() == 1;
        let mut found = false;
        let mut failed = false;
        for i in 0..tags.len() {
            if got.is_empty() {
                break;
            }
            let tag = &tags[(first + i) % tags.len()];
            let stream = sh.queue.keys().stream(tag, &queue);
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&s.group)
                .arg(&sh.consumer)
                .arg("COUNT")
                .arg(got.len());
            // The read is never dropped half-way (that would strand delivered entries until
            // they are reclaimed): BLOCK is short and the stop flag is checked between reads.
            if single {
                read.arg("BLOCK").arg(s.block_ms);
            }
            read.arg("STREAMS").arg(&stream).arg(">");
            let conn = if single { &mut blocking } else { &mut shared };
            let reply: redis::RedisResult<Option<StreamReadReply>> = read.query_async(conn).await;
            match reply {
                Ok(Some(r)) => {
                    let entries: Vec<StreamId> = r.keys.into_iter().flat_map(|k| k.ids).collect();
                    found |= !entries.is_empty();
                    dispatch(&sh, &queue, tag, entries, &mut got, &done);
                }
                Ok(None) => {}
                Err(e) => {
                    failed = true;
                    if e.code() == Some("NOGROUP") {
                        // The stream was deleted under us (e.g. FLUSHALL): make it again.
                        if let Err(e) = super::ensure_group(&sh.queue, tag, &queue).await {
                            tracing::warn!(queue = %queue, error = %e, "cannot create group");
                        }
                    } else {
                        // Other partitions may live on masters that still answer.
                        tracing::warn!(queue = %queue, partition = %tag, error = %e, "XREADGROUP failed");
                    }
                }
            }
        }
        drop(got);
        first = (first + 1) % tags.len();
        if sh.stop.is_cancelled() {
            return;
        }
        if failed && !found {
            if !sh.pause(ERROR_PAUSE).await {
                return;
            }
        } else if found || single {
            idle = Duration::from_millis(1);
        } else {
            if !sh.pause(idle).await {
                return;
            }
            idle = (idle * 2).min(Duration::from_millis(s.idle_poll_ms));
        }
    }
}

/// Takes over entries that stayed pending longer than `claim_idle_ms` without a heartbeat:
/// their worker was killed, crashed or lost Redis.
pub(super) async fn reclaim(
    sh: Arc<Shared>,
    queue: Arc<str>,
    permits: Arc<Semaphore>,
    done: Completer,
) {
    let s = sh.queue.settings().clone();
    let every = Duration::from_millis((s.claim_idle_ms / 2).max(100));
    let mut cursors: HashMap<Arc<str>, String> = HashMap::new();
    let mut conn = sh.queue.connection();
    let mut rounds = 0u64;
    while sh.pause(every).await {
        rounds += 1;
        for tag in sh.partitions().iter() {
            let cursor = cursors
                .entry(tag.clone())
                .or_insert_with(|| "0-0".to_string());
            let stream = sh.queue.keys().stream(tag, &queue);
            if rounds.is_multiple_of(120)
                && let Err(e) = forget_idle_consumers(&sh, &stream).await
            {
                tracing::debug!(queue = %queue, error = %e, "consumer cleanup failed");
            }
            // Wait in line for a permit: the fetch loop may hold all free permits while its
            // read blocks, and the semaphore is fair, so this gets the next one released.
            let Some(mut got) = wait_permits(&sh, &permits, 100).await else {
                return;
            };
            let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(&s.group)
                .arg(&sh.consumer)
                .arg(s.claim_idle_ms)
                .arg(&*cursor)
                .arg("COUNT")
                .arg(got.len())
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(r) => {
                    *cursor = r.next_stream_id;
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
                    dispatch(&sh, &queue, tag, r.claimed, &mut got, &done);
                }
                Err(e) if e.code() == Some("NOGROUP") => *cursor = "0-0".into(),
                Err(e) => tracing::warn!(queue = %queue, error = %e, "XAUTOCLAIM failed"),
            }
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

/// Most due jobs one MOVE_DUE call looks at.
const MOVE_BATCH: isize = 200;

/// Moves due jobs (delayed jobs, retries) from each partition's schedule to its stream: reads
/// the earliest ids, then lets MOVE_DUE (which declares their keys) move those that are due.
pub(super) async fn mover(sh: Arc<Shared>, queue: Arc<str>) {
    let s = sh.queue.settings().clone();
    let mut conn = sh.queue.connection();
    while sh.pause(Duration::from_millis(s.mover_interval_ms)).await {
        for tag in sh.partitions().iter() {
            loop {
                match move_due(&sh, &mut conn, tag, &queue).await {
                    Ok(n) if n >= MOVE_BATCH as u64 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(queue = %queue, partition = %tag, error = %e, "moving due jobs failed");
                        break;
                    }
                }
            }
        }
    }
}

async fn move_due(
    sh: &Shared,
    conn: &mut RedisConn,
    tag: &str,
    queue: &str,
) -> redis::RedisResult<u64> {
    use redis::AsyncCommands;
    let k = sh.queue.keys();
    let delayed = k.delayed(tag, queue);
    let ids: Vec<String> = conn.zrange(&delayed, 0, MOVE_BATCH - 1).await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut inv = scripts::MOVE_DUE_S.key(&delayed);
    inv.key(k.stream(tag, queue));
    for id in &ids {
        inv.key(k.job_in(tag, id));
    }
    for id in &ids {
        inv.arg(id);
    }
    inv.invoke_async(conn).await
}
