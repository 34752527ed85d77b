//! The seam between the queue's API and the broker that carries its jobs.
//!
//! [`Queue`] validates and builds jobs, reads job records and runs handlers; a [`Transport`]
//! moves jobs from producers to workers and keeps the dead letters. Two implement it:
//! Redis Streams (`super::streams`) and RabbitMQ (`super::rabbit`). [`for_settings`] is the
//! one place that picks one, from `queue.backend`. Both keep the job records (state,
//! attempts, history, result) as the same Redis hashes and change them with Lua scripts,
//! so a transport gets the [`Queue`] (its Redis connection, keys, settings) with each call.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use super::client::QueueStats;
use super::worker::Shared;
use super::{DeadLetter, Enqueued, Queue, QueueBackend, QueueError, QueueSettings};

/// A job [`Queue::enqueue`] validated, with everything a backend's ENQUEUE script needs.
pub(crate) struct Prepared<'a> {
    /// The job id; it starts with `tag`.
    pub id: String,
    /// The job's partition (see `super::keys`).
    pub tag: &'a str,
    pub queue: &'a str,
    pub kind: &'a str,
    /// The payload as JSON text.
    pub payload: String,
    pub max_attempts: u32,
    /// Run at this Unix time (ms), 0 for none.
    pub at_ms: u64,
    /// Run after this delay (ms), 0 for none.
    pub after_ms: u64,
    /// The idempotency key, '' for none.
    pub idem: &'a str,
    /// The queue of the job's notification job, '' for none.
    pub notify_queue: &'a str,
    pub notify_attempts: u32,
}

impl Prepared<'_> {
    /// The ENQUEUE arguments both backends' scripts share (`lua::JOB_HASH`'s `new_job`
    /// reads them): id, queue, kind, payload, max_attempts, at_ms, after_ms, use_idem,
    /// idem_ttl_s, notify_queue, notify_max_attempts.
    pub fn args(&self, idem_ttl_s: u64) -> Vec<String> {
        vec![
            self.id.clone(),
            self.queue.to_string(),
            self.kind.to_string(),
            self.payload.clone(),
            self.max_attempts.to_string(),
            self.at_ms.to_string(),
            self.after_ms.to_string(),
            if self.idem.is_empty() { "0" } else { "1" }.to_string(),
            idem_ttl_s.to_string(),
            self.notify_queue.to_string(),
            self.notify_attempts.to_string(),
        ]
    }
}

/// How jobs travel between producers and workers. Every method gets the queue it serves;
/// queue names were validated by the caller.
#[async_trait]
pub(crate) trait Transport: Send + Sync {
    /// Connects now, so that an unreachable broker is an error at start-up.
    async fn connect(&self) -> Result<(), QueueError>;

    /// Records the job and hands it over (or schedules it), unless its idempotency key names
    /// an earlier job.
    async fn enqueue(&self, q: &Queue, job: Prepared<'_>) -> Result<Enqueued, QueueError>;

    /// Creates what `queue` needs on the broker (consumer group, queues, bindings).
    async fn ensure_queue(&self, q: &Queue, queue: &str) -> Result<(), QueueError>;

    /// Queue sizes, with the same meaning on every backend (see [`QueueStats`]).
    async fn stats(&self, q: &Queue, queue: &str) -> Result<QueueStats, QueueError>;

    /// Up to `count` dead letters, oldest first, after entry `after` (exclusive).
    async fn dlq_list(
        &self,
        q: &Queue,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetter>, QueueError>;

    /// Replays one dead letter; `None` if it is not there (or its job moved on).
    async fn dlq_replay(
        &self,
        q: &Queue,
        queue: &str,
        entry: &str,
    ) -> Result<Option<String>, QueueError>;

    /// Replays the dead letters there now; returns the job ids.
    async fn dlq_replay_all(&self, q: &Queue, queue: &str) -> Result<Vec<String>, QueueError>;

    /// Deletes every dead letter and its job record; returns how many.
    async fn dlq_purge(&self, q: &Queue, queue: &str) -> Result<u64, QueueError>;

    /// Starts the loops that take jobs of `queues` for the pool `sh` (its handlers, permits,
    /// stop and abort tokens). The broker may be down: loops connect when it is back.
    async fn start_workers(
        &self,
        sh: &Arc<Shared>,
        queues: &[String],
    ) -> Result<Workers, QueueError>;

    /// Closes the broker connection of this process (graceful shutdown).
    async fn close(&self);
}

/// A transport's part of a running worker pool.
pub(crate) struct Workers {
    /// Loops that end soon after the pool's `stop` token is cancelled.
    pub loops: Vec<JoinHandle<()>>,
    /// What the transport still holds for the pool's jobs, released once every running job
    /// finished or was abandoned (dropping it without `release` stops it at once).
    pub held: Option<Box<dyn Held>>,
}

/// See [`Workers::held`].
#[async_trait]
pub(crate) trait Held: Send {
    async fn release(self: Box<Self>, sh: &Shared);
}

/// The transport `settings.backend` names. Connects lazily.
pub(crate) fn for_settings(settings: &QueueSettings) -> Box<dyn Transport> {
    match settings.backend {
        QueueBackend::Redis => Box::new(super::streams::Streams::new()),
        QueueBackend::Rabbitmq => Box::new(super::rabbit::Rabbit::new(settings)),
    }
}
