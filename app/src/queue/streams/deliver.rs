//! One delivery of one stream entry: rate permit, START, handler, then COMPLETE or FAIL,
//! with a heartbeat that keeps the entry from being reclaimed while it runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::scripts;
use crate::queue::QueueError;
use crate::queue::process::{Outcome, Run, failure_args, record, run_attempt};
use crate::queue::rate;
use crate::queue::worker::{PoolStats, Shared};

/// Runs one delivery to its end, or leaves it un-acknowledged when the pool aborts.
pub(super) async fn run(
    sh: Arc<Shared>,
    queue: Arc<str>,
    entry: String,
    job_id: String,
    _permit: OwnedSemaphorePermit,
) {
    tokio::select! {
        biased;
        _ = sh.abort.cancelled() => {
            PoolStats::inc(&sh.stats.abandoned);
            tracing::warn!(queue = %queue, job = %job_id, "job abandoned at shutdown; another worker will reclaim it");
        }
        r = deliver(&sh, &queue, &entry, &job_id) => {
            if let Err(e) = r {
                // The entry is still pending: it is reclaimed and the job runs again.
                tracing::warn!(queue = %queue, job = %job_id, error = %e, "job bookkeeping failed");
            }
        }
        _ = heartbeat(&sh, &queue, &entry) => {}
    }
}

/// Resets the entry's idle time every quarter of `claim_idle_ms` while this consumer owns it.
async fn heartbeat(sh: &Shared, queue: &str, entry: &str) -> Infallible {
    let every = Duration::from_millis((sh.queue.settings().claim_idle_ms / 4).max(50));
    let stream = sh.queue.keys().stream(queue);
    let mut conn = sh.queue.connection();
    loop {
        tokio::time::sleep(every).await;
        let r: redis::RedisResult<i64> = scripts::HEARTBEAT_S
            .key(&stream)
            .arg(&sh.queue.settings().group)
            .arg(&sh.consumer)
            .arg(entry)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::debug!(entry, error = %e, "heartbeat failed");
        }
    }
}

async fn deliver(
    sh: &Arc<Shared>,
    queue: &Arc<str>,
    entry: &str,
    job_id: &str,
) -> Result<(), QueueError> {
    let s = sh.queue.settings();
    let k = sh.queue.keys();
    let mut conn = sh.queue.connection();
    let (job_key, stream, dlq) = (k.job(job_id), k.stream(queue), k.dlq(queue));

    let rate_window = match s.rate_limit(queue) {
        Some(limit) => Some(rate::permit(&sh.queue, queue, limit).await?),
        None => None,
    };
    let r: Vec<String> = scripts::START_S
        .key(&job_key)
        .key(&stream)
        .key(&dlq)
        .arg(entry)
        .arg(&s.group)
        .arg(&sh.consumer)
        .arg(k.prefix())
        .invoke_async(&mut conn)
        .await?;
    let run = match r.as_slice() {
        [tag, a, m, kind, payload] if tag == "run" => Run::from_reply(a, m, kind, payload),
        [tag] if tag == "dead" => {
            record(sh, queue, Outcome::Dead, None);
            tracing::warn!(queue = %queue, job = job_id, "job dead: its workers kept vanishing");
            return Ok(());
        }
        _ => {
            PoolStats::inc(&sh.stats.stale);
            return Ok(());
        }
    };
    let attempt = run.attempt;
    let (result, took) = run_attempt(sh, queue, job_id, run, rate_window).await;
    match result {
        Ok(out) => {
            let r: String = scripts::COMPLETE_S
                .key(&job_key)
                .key(&stream)
                .arg(entry)
                .arg(&s.group)
                .arg(out)
                .arg(&sh.consumer)
                .arg(k.prefix())
                .arg(s.retention_s)
                .invoke_async(&mut conn)
                .await?;
            let outcome = if r == "ok" {
                Outcome::Succeeded
            } else {
                Outcome::Stale
            };
            record(sh, queue, outcome, took);
        }
        Err(e) => {
            let (delay_ms, permanent) = failure_args(sh, attempt, &e);
            let r: Vec<String> = scripts::FAIL_S
                .key(&job_key)
                .key(&stream)
                .key(k.delayed(queue))
                .key(&dlq)
                .arg(entry)
                .arg(&s.group)
                .arg(e.to_string())
                .arg(delay_ms)
                .arg(permanent)
                .arg(&sh.consumer)
                .arg(k.prefix())
                .invoke_async(&mut conn)
                .await?;
            match r.first().map(String::as_str) {
                Some("retry") => {
                    record(sh, queue, Outcome::Retried, took);
                    tracing::debug!(queue = %queue, job = job_id, attempt, error = %e, "attempt failed; retry scheduled");
                }
                Some("dead") => {
                    record(sh, queue, Outcome::Dead, took);
                    tracing::info!(queue = %queue, job = job_id, attempt, error = %e, "job moved to the dead-letter stream");
                }
                _ => {
                    record(sh, queue, Outcome::Stale, took);
                }
            }
        }
    }
    Ok(())
}
