//! Durable job queue: job records in Redis, jobs carried by Redis Streams (default) or
//! RabbitMQ.
//!
//! - [`Queue`] enqueues jobs (now, at a time, after a delay; with an idempotency key) and reads
//!   their state; it also lists, replays and purges dead letters.
//! - [`WorkerPool`] runs handlers: redelivery of jobs whose worker vanished, retries with
//!   backoff, dead letters, per-queue concurrency, a global rate limit and graceful shutdown.
//!
//! What depends on the broker is behind one seam, `transport::Transport`, implemented by
//! `streams` (Redis Streams with one consumer group shared by every instance) and `rabbit`
//! (`queue.backend = "rabbitmq"`); `transport::for_settings` picks one. Tasks, callbacks and
//! the order saga do not know which broker carries their jobs. Every job state change is a
//! Lua script, so acknowledging a delivery and recording what happened to its job are one
//! atomic step. The design is in `app/docs/queue.md`.
//!
//! Redis is one server, a Sentinel set or a Redis Cluster (`app_redis`). Each queue is split
//! over `queue.partitions` partitions, each under one cluster hash tag (see `keys`), so every
//! script touches one hash slot and the partitions spread over the masters. Commands that
//! fail while a master fails over are repeated (`retry`).
//!
//! This module depends on no other module of the crate; `crate::wiring` connects it to the
//! configuration, the services built on it and the server.

pub use config::QueueBackend;
mod backoff;
mod batch;
pub mod cli;
pub(crate) mod client;
mod config;
mod dlq;
mod handler;
mod job;
pub mod keys;
pub(crate) mod lua;
mod metrics;
mod process;
mod rabbit;
mod rate;
mod retry;
mod streams;
mod transport;
mod worker;

pub use backoff::Backoff;
pub use client::{Queue, QueueStats};
pub use config::{QueueOverride, QueueSettings};
pub use dlq::DeadLetter;
pub use handler::{Handler, HandlerFuture, JobContext, JobError, JobOutput, Registry};
pub use job::{
    Attempt, Enqueued, JobRecord, JobState, MAX_ATTEMPTS, MAX_DELAY_MS, MAX_RUN_AT_MS, NewJob,
    Schedule,
};
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
