//! Durable job queue on Redis Streams with one consumer group shared by every instance.
//!
//! - [`Queue`] enqueues jobs (now, at a time, after a delay; with an idempotency key) and reads
//!   their state; it also lists, replays and purges dead letters.
//! - [`WorkerPool`] runs handlers: XREADGROUP, XAUTOCLAIM of entries whose worker vanished,
//!   retries through a delayed sorted set, dead letters, per-queue concurrency, a global rate
//!   limit and graceful shutdown.
//!
//! Every job state change is a Lua script (see `scripts`), so acknowledging an entry and
//! recording what happened to its job are one atomic step. The design is in `app/docs/queue.md`.
//!
//! The same interface (`Queue`, `WorkerPool`, `Registry`) runs on RabbitMQ instead when
//! `queue.backend = "rabbitmq"` (see `rabbit`): tasks, callbacks and the order saga do not
//! know which broker carries their jobs.

pub mod api;
pub(crate) mod api_error;
pub use config::QueueBackend;
mod backoff;
pub mod cli;
pub(crate) mod client;
mod config;
mod dlq;
mod handler;
mod job;
pub mod keys;
pub mod local_rabbit;
pub mod local_redis;
mod loops;
pub(crate) mod lua;
mod metrics;
pub(crate) mod process;
mod rabbit;
pub mod runtime;
mod scripts;
pub(crate) mod worker;

pub use api::routes;
pub use api_error::ApiError;
pub use backoff::Backoff;
pub use client::{Queue, QueueStats};
pub use config::{QueueOverride, QueueSettings};
pub use dlq::DeadLetter;
pub use handler::{Handler, HandlerFuture, JobContext, JobError, JobOutput, Registry};
pub use job::{Attempt, Enqueued, JobRecord, JobState, NewJob, Schedule};
pub use metrics::QueueMetrics;
pub use worker::{PoolStats, ShutdownReport, WorkerPool};

/// Errors of the queue library.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("rabbitmq: {0}")]
    Broker(String),
    #[error("config field `{field}`: {reason}")]
    Config { field: String, reason: String },
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("unexpected data in redis: {0}")]
    Decode(String),
}

impl QueueError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        QueueError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Validates the `[queue]`, `[tasks]` and `[orders]` tables; the error is (field, reason).
pub fn validate_settings(
    queue: &QueueSettings,
    tasks: &crate::tasks::TaskSettings,
    orders: &crate::orders::OrderSettings,
) -> Result<(), (String, String)> {
    let parts = |e: QueueError| match e {
        QueueError::Config { field, reason } => (field, reason),
        other => ("queue".to_string(), other.to_string()),
    };
    queue.validate().map_err(parts)?;
    tasks.validate().map_err(parts)?;
    orders.validate().map_err(parts)
}
