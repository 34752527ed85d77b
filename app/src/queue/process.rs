//! One delivery of one job: rate permit, START, handler, then COMPLETE or FAIL, with a
//! heartbeat that keeps the entry from being reclaimed while it runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::QueueError;
use super::handler::{JobContext, JobError};
use super::worker::{PoolStats, Shared};

/// Aborts the handler task if the delivery is given up (shutdown after the grace period).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

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
        let r: redis::RedisResult<i64> = sh
            .queue
            .inner
            .scripts
            .heartbeat
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

/// Waits for a permit of the queue's global rate limit; returns the granting window.
pub(crate) async fn rate_permit(sh: &Shared, queue: &str, limit: u32) -> Result<u64, QueueError> {
    let prefix = sh.queue.keys().rate_prefix(queue);
    let mut conn = sh.queue.connection();
    loop {
        let (granted, v): (i64, u64) = sh
            .queue
            .inner
            .scripts
            .rate
            .arg(&prefix)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        if granted == 1 {
            return Ok(v);
        }
        // Wait for the next window, spread a little so instances do not all wake at once.
        let jitter = rand::random::<u64>() % 20;
        tokio::time::sleep(Duration::from_millis(v.min(1_000) + jitter)).await;
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
    let scripts = &sh.queue.inner.scripts;
    let mut conn = sh.queue.connection();
    let (job_key, stream, dlq) = (k.job(job_id), k.stream(queue), k.dlq(queue));

    let rate_window = match s.rate_limit(queue) {
        Some(limit) => Some(rate_permit(sh, queue, limit).await?),
        None => None,
    };
    let r: Vec<String> = scripts
        .start
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
            PoolStats::inc(&sh.stats.dead);
            record(sh, queue, "dead", None);
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
            let r: String = scripts
                .complete
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
            if r == "ok" {
                PoolStats::inc(&sh.stats.succeeded);
                record(sh, queue, "succeeded", took);
            } else {
                PoolStats::inc(&sh.stats.stale);
                record(sh, queue, "stale", took);
            }
        }
        Err(e) => {
            let permanent = matches!(e, JobError::Permanent(_));
            let delay = sh.backoff.delay(attempt);
            let r: Vec<String> = scripts
                .fail
                .key(&job_key)
                .key(&stream)
                .key(k.delayed(queue))
                .key(&dlq)
                .arg(entry)
                .arg(&s.group)
                .arg(e.to_string())
                .arg(delay.as_millis() as u64)
                .arg(if permanent { "1" } else { "0" })
                .arg(&sh.consumer)
                .arg(k.prefix())
                .invoke_async(&mut conn)
                .await?;
            match r.first().map(String::as_str) {
                Some("retry") => {
                    PoolStats::inc(&sh.stats.retried);
                    record(sh, queue, "retried", took);
                    tracing::debug!(queue = %queue, job = job_id, attempt, error = %e, "attempt failed; retry scheduled");
                }
                Some("dead") => {
                    PoolStats::inc(&sh.stats.dead);
                    record(sh, queue, "dead", took);
                    tracing::info!(queue = %queue, job = job_id, attempt, error = %e, "job moved to the dead-letter stream");
                }
                _ => {
                    PoolStats::inc(&sh.stats.stale);
                    record(sh, queue, "stale", took);
                }
            }
        }
    }
    Ok(())
}

/// An attempt a start script granted (its `{'run', attempt, max_attempts, kind, payload}`
/// reply, the same on both backends).
pub(crate) struct Run {
    pub attempt: u32,
    pub max_attempts: u32,
    pub kind: String,
    pub payload: String,
}

impl Run {
    pub(crate) fn from_reply(a: &str, m: &str, kind: &str, payload: &str) -> Self {
        Self {
            attempt: a.parse().unwrap_or(1),
            max_attempts: m.parse().unwrap_or(1),
            kind: kind.to_string(),
            payload: payload.to_string(),
        }
    }
}

/// Runs a granted attempt, counted and timed (`started`, the `running` gauge); returns the
/// handler's output as JSON text ('' for none) or its error, and how long it took.
pub(crate) async fn run_attempt(
    sh: &Arc<Shared>,
    queue: &Arc<str>,
    job_id: &str,
    run: Run,
    rate_window: Option<u64>,
) -> (Result<String, JobError>, Option<Duration>) {
    PoolStats::inc(&sh.stats.started);
    let started = Instant::now();
    if let Some(m) = sh.queue.metrics() {
        m.running(queue, 1);
    }
    let result = run_handler(
        sh,
        queue,
        job_id,
        run.attempt,
        run.max_attempts,
        run.kind,
        &run.payload,
        rate_window,
    )
    .await;
    if let Some(m) = sh.queue.metrics() {
        m.running(queue, -1);
    }
    let out = result.map(|output| match output {
        Some(v) => serde_json::to_string(&v).unwrap_or_default(),
        None => String::new(),
    });
    (out, Some(started.elapsed()))
}

pub(crate) fn record(sh: &Shared, queue: &str, outcome: &str, took: Option<Duration>) {
    if let Some(m) = sh.queue.metrics() {
        m.outcome(queue, outcome, took);
    }
}

/// Runs the handler in a task of its own so that a panic becomes a failed attempt.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_handler(
    sh: &Arc<Shared>,
    queue: &Arc<str>,
    job_id: &str,
    attempt: u32,
    max_attempts: u32,
    kind: String,
    payload: &str,
    rate_window: Option<u64>,
) -> Result<super::JobOutput, JobError> {
    let Some(handler) = sh.registry.get(queue, &kind) else {
        return Err(JobError::Permanent(format!(
            "no handler for kind {kind:?} on queue {queue:?}"
        )));
    };
    let payload = serde_json::from_str(payload)
        .map_err(|e| JobError::Permanent(format!("payload is not JSON: {e}")))?;
    let ctx = JobContext {
        id: job_id.to_string(),
        queue_name: queue.to_string(),
        kind,
        payload,
        attempt,
        max_attempts,
        rate_window,
        queue: sh.queue.clone(),
    };
    let mut task = AbortOnDrop(tokio::spawn(handler.handle(ctx)));
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(JobError::Retry("handler panicked".into())),
        Err(e) => Err(JobError::Retry(format!("handler task failed: {e}"))),
    }
}
