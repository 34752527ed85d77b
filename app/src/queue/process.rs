//! The part of a delivery every transport shares: running a granted attempt (its handler in
//! a task of its own, counted and timed) and recording its outcome. Each transport wraps it
//! in its own START, COMPLETE and FAIL scripts (`streams::deliver`, `rabbit::deliver`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::handler::{JobContext, JobError};
use super::worker::{PoolStats, Shared};

/// Aborts the handler task if the delivery is given up (shutdown after the grace period).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
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

/// What an attempt (or a delivery that found its job's workers gone) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    /// Failed with attempts left: a retry is scheduled.
    Retried,
    /// Moved to the dead letters.
    Dead,
    /// The job had moved on meanwhile (finished elsewhere, replaced, purged).
    Stale,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Retried => "retried",
            Outcome::Dead => "dead",
            Outcome::Stale => "stale",
        }
    }
}

/// The retry delay (ms) after attempt `attempt` failed with `e`, and whether the failure is
/// permanent ("1") or may be retried ("0"): the arguments the FAIL scripts take.
pub(crate) fn failure_args(sh: &Shared, attempt: u32, e: &JobError) -> (u64, &'static str) {
    let delay = sh.backoff.delay(attempt).as_millis() as u64;
    let permanent = matches!(e, JobError::Permanent(_));
    (delay, if permanent { "1" } else { "0" })
}

/// Counts an outcome in the pool's stats and the queue's metrics.
pub(crate) fn record(sh: &Shared, queue: &str, outcome: Outcome, took: Option<Duration>) {
    let stats = &sh.stats;
    PoolStats::inc(match outcome {
        Outcome::Succeeded => &stats.succeeded,
        Outcome::Retried => &stats.retried,
        Outcome::Dead => &stats.dead,
        Outcome::Stale => &stats.stale,
    });
    if let Some(m) = sh.queue.metrics() {
        m.outcome(queue, outcome.as_str(), took);
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
