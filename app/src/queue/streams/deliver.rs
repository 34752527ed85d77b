//! One delivery of one stream entry: rate permit, START, handler, then COMPLETE or FAIL,
//! with a heartbeat that keeps the entry from being reclaimed while it runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use redis::ScriptInvocation;
use tokio::sync::OwnedSemaphorePermit;

use super::scripts;
use crate::queue::process::{Outcome, Run, failure_args, record, run_attempt};
use crate::queue::worker::{PoolStats, Shared};
use crate::queue::{Queue, QueueError, rate, retry};

/// One entry read from the stream of `queue` in partition `tag`.
pub(super) struct Delivery {
    pub queue: Arc<str>,
    pub tag: Arc<str>,
    pub entry: String,
    pub job_id: String,
}

/// Runs one delivery to its end, or leaves it un-acknowledged when the pool aborts.
pub(super) async fn run(sh: Arc<Shared>, d: Delivery, _permit: OwnedSemaphorePermit) {
    tokio::select! {
        biased;
        _ = sh.abort.cancelled() => {
            PoolStats::inc(&sh.stats.abandoned);
            tracing::warn!(queue = %d.queue, job = %d.job_id, "job abandoned at shutdown; another worker will reclaim it");
        }
        r = deliver(&sh, &d) => {
            if let Err(e) = r {
                // The entry is still pending: it is reclaimed and the job runs again.
                tracing::warn!(queue = %d.queue, job = %d.job_id, error = %e, "job bookkeeping failed");
            }
        }
        _ = heartbeat(&sh, &d) => {}
    }
}

/// Resets the entry's idle time every quarter of `claim_idle_ms` while this consumer owns it.
async fn heartbeat(sh: &Shared, d: &Delivery) -> Infallible {
    let every = Duration::from_millis((sh.queue.settings().claim_idle_ms / 4).max(50));
    let stream = sh.queue.keys().stream(&d.tag, &d.queue);
    let mut conn = sh.queue.connection();
    loop {
        tokio::time::sleep(every).await;
        let r: redis::RedisResult<i64> = scripts::HEARTBEAT_S
            .key(&stream)
            .arg(&sh.queue.settings().group)
            .arg(&sh.consumer)
            .arg(&d.entry)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::debug!(entry = %d.entry, error = %e, "heartbeat failed");
        }
    }
}

/// The notification job a job creates when it ends: its id (the job's, with the run), its
/// hash, and the stream of its queue in the job's partition. Scripts declare both keys.
struct Notify {
    id: String,
    key: String,
    stream: String,
}

impl Notify {
    /// From START's `notify_queue` and `replays` (None when the job notifies no queue).
    fn of(q: &Queue, d: &Delivery, queue: &str, replays: &str) -> Option<Self> {
        if queue.is_empty() {
            return None;
        }
        let id = format!("{}.n{replays}", d.job_id);
        Some(Self {
            key: q.keys().job(&id),
            stream: q.keys().stream(&d.tag, queue),
            id,
        })
    }

    /// Appends the notification keys to a script's KEYS and returns its id for ARGV.
    fn declare(n: &Option<Self>, inv: &mut ScriptInvocation<'_>) -> String {
        match n {
            Some(n) => {
                inv.key(&n.key).key(&n.stream);
                n.id.clone()
            }
            None => String::new(),
        }
    }
}

/// Runs a script invocation through a failover (see `retry`).
async fn invoke<T: redis::FromRedisValue>(
    q: &Queue,
    op: &'static str,
    inv: &ScriptInvocation<'_>,
) -> Result<T, QueueError> {
    retry::redis(q, op, |mut c| async move { inv.invoke_async(&mut c).await }).await
}

async fn deliver(sh: &Arc<Shared>, d: &Delivery) -> Result<(), QueueError> {
    let q = &sh.queue;
    let s = q.settings();
    let k = q.keys();
    let queue = &d.queue;
    let (job_key, stream) = (k.job(&d.job_id), k.stream(&d.tag, queue));

    let rate_window = match s.rate_limit(queue) {
        Some(limit) => Some(rate::permit(q, queue, limit).await?),
        None => None,
    };
    let owner = format!("{}#{:08x}", sh.consumer, rand::random::<u32>());
    let mut start = scripts::START_S.key(&job_key);
    start
        .key(&stream)
        .arg(&d.entry)
        .arg(&s.group)
        .arg(&sh.consumer)
        .arg(&owner);
    let r: Vec<String> = invoke(q, "start", &start).await?;
    let (run, notify) = match r.as_slice() {
        [tag, a, m, kind, payload, nq, replays] if tag == "run" => (
            Run::from_reply(a, m, kind, payload),
            Notify::of(q, d, nq, replays),
        ),
        [tag, nq, replays] if tag == "lost" => {
            let notify = Notify::of(q, d, nq, replays);
            let mut bury = scripts::BURY_LOST_S.key(&job_key);
            bury.key(&stream).key(k.dlq(&d.tag, queue));
            let nid = Notify::declare(&notify, &mut bury);
            bury.arg(&d.entry).arg(&s.group).arg(nid);
            let r: String = invoke(q, "bury", &bury).await?;
            if r == "dead" {
                record(sh, queue, Outcome::Dead, None);
                tracing::warn!(queue = %queue, job = %d.job_id, "job dead: its workers kept vanishing");
            } else {
                PoolStats::inc(&sh.stats.stale);
            }
            return Ok(());
        }
        _ => {
            PoolStats::inc(&sh.stats.stale);
            return Ok(());
        }
    };
    let attempt = run.attempt;
    let (result, took) = run_attempt(sh, queue, &d.job_id, run, rate_window).await;
    match result {
        Ok(out) => {
            let mut complete = scripts::COMPLETE_S.key(&job_key);
            complete.key(&stream);
            let nid = Notify::declare(&notify, &mut complete);
            complete
                .arg(&d.entry)
                .arg(&s.group)
                .arg(out)
                .arg(&sh.consumer)
                .arg(s.retention_s)
                .arg(nid);
            let r: String = invoke(q, "complete", &complete).await?;
            let outcome = if r == "ok" {
                Outcome::Succeeded
            } else {
                Outcome::Stale
            };
            record(sh, queue, outcome, took);
        }
        Err(e) => {
            let (delay_ms, permanent) = failure_args(sh, attempt, &e);
            let mut fail = scripts::FAIL_S.key(&job_key);
            fail.key(&stream)
                .key(k.delayed(&d.tag, queue))
                .key(k.dlq(&d.tag, queue));
            let nid = Notify::declare(&notify, &mut fail);
            fail.arg(&d.entry)
                .arg(&s.group)
                .arg(e.to_string())
                .arg(delay_ms)
                .arg(permanent)
                .arg(&sh.consumer)
                .arg(nid);
            let r: Vec<String> = invoke(q, "fail", &fail).await?;
            match r.first().map(String::as_str) {
                Some("retry") => {
                    record(sh, queue, Outcome::Retried, took);
                    tracing::debug!(queue = %queue, job = %d.job_id, attempt, error = %e, "attempt failed; retry scheduled");
                }
                Some("dead") => {
                    record(sh, queue, Outcome::Dead, took);
                    tracing::info!(queue = %queue, job = %d.job_id, attempt, error = %e, "job moved to the dead-letter stream");
                }
                _ => {
                    record(sh, queue, Outcome::Stale, took);
                }
            }
        }
    }
    Ok(())
}
