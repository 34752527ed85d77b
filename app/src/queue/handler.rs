//! What a job handler is, what it gets, and how handlers are registered per queue and kind.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Queue, QueueError};

/// A successful handler's result, stored in the job as JSON (`None`: no result).
pub type JobOutput = Option<serde_json::Value>;

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<JobOutput, JobError>> + Send>>;

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (after a backoff), while attempts remain.
    #[error("{0}")]
    Retry(String),
    /// Retrying cannot help: the job goes to the dead-letter stream now.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    pub fn retry(e: impl std::fmt::Display) -> Self {
        JobError::Retry(e.to_string())
    }

    pub fn permanent(e: impl std::fmt::Display) -> Self {
        JobError::Permanent(e.to_string())
    }
}

impl From<redis::RedisError> for JobError {
    fn from(e: redis::RedisError) -> Self {
        JobError::Retry(format!("redis: {e}"))
    }
}

impl From<QueueError> for JobError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Invalid(m) => JobError::Permanent(m),
            other => JobError::Retry(other.to_string()),
        }
    }
}

/// Everything a handler knows about the job it runs.
#[derive(Clone)]
pub struct JobContext {
    pub id: String,
    pub queue_name: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// 1 for the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The rate-limit window (Unix second, Redis clock) that granted this run, if the queue
    /// is rate limited.
    pub rate_window: Option<u64>,
    /// The queue, for progress, follow-up jobs and the shared Redis connection.
    pub queue: Queue,
}

impl JobContext {
    /// True on the last attempt the job will get: a failure now is final.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    pub async fn progress(&self, percent: u8) -> Result<(), QueueError> {
        self.queue.set_progress(&self.id, percent).await
    }
}

/// A job handler. Handlers must be idempotent: a job can run again after a crash.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, ctx: JobContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<JobOutput, JobError>> + Send + 'static,
{
    fn handle(&self, ctx: JobContext) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// Handlers by queue and kind. The queues a pool serves are the queues registered here.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, HashMap<String, Arc<dyn Handler>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for jobs of `kind` on `queue` (replacing an earlier one).
    pub fn on(mut self, queue: &str, kind: &str, handler: impl Handler) -> Self {
        self.handlers
            .entry(queue.to_string())
            .or_default()
            .insert(kind.to_string(), Arc::new(handler));
        self
    }

    /// Adds every handler of `other`.
    pub fn merge(mut self, other: Registry) -> Self {
        for (q, kinds) in other.handlers {
            self.handlers.entry(q).or_default().extend(kinds);
        }
        self
    }

    pub fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = self.handlers.keys().cloned().collect();
        q.sort();
        q
    }

    pub fn has_kind(&self, queue: &str, kind: &str) -> bool {
        self.get(queue, kind).is_some()
    }

    pub(super) fn get(&self, queue: &str, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(queue)?.get(kind).cloned()
    }
}
