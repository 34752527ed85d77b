//! The queue handle: enqueue, read jobs, inspect queues. Cheap to clone. What depends on
//! the broker is delegated to the [`Transport`] `queue.backend` names.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

use super::job::{Enqueued, JobRecord, NewJob, Schedule};
use super::keys::{Keys, validate_queue_name};
use super::metrics::QueueMetrics;
use super::transport::{self, Prepared, Transport};
use super::{QueueBackend, QueueError, QueueSettings};

/// A handle on the queue: job records in one Redis, jobs carried by the configured
/// [`Transport`]. Clones share one auto-reconnecting Redis connection and one transport.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    client: redis::Client,
    keys: Keys,
    settings: QueueSettings,
    metrics: Option<QueueMetrics>,
    transport: Box<dyn Transport>,
}

/// Sizes of one queue, as the metrics report them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Waiting plus pending: the entries in the stream (Redis); `lag` + `pending` (RabbitMQ).
    pub length: u64,
    /// Delivered to a worker and not acknowledged yet. Redis: the group's XPENDING count.
    /// RabbitMQ: jobs in state `running` (the `{p}:running:{queue}` set the job scripts keep),
    /// since AMQP 0-9-1 does not report unacknowledged messages. A job whose worker died
    /// stays pending until another worker takes it over, on both backends; on RabbitMQ the
    /// broker puts its message back at once, so it also counts in `lag` until then.
    pub pending: u64,
    /// Waiting for a delivery: stream entries not read by the group yet (Redis); ready
    /// messages in the work queue (RabbitMQ).
    pub lag: u64,
    /// In the delayed schedule (delayed jobs and retries; RabbitMQ: the delay queues).
    pub delayed: u64,
    /// In the dead-letter stream (RabbitMQ: the dead-letter queue).
    pub dead: u64,
}

/// Connection settings for the queue's connections: a response timeout well above a
/// blocking read, and reconnects with backoff.
fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

impl Queue {
    /// Connects to `redis_url` and, with `queue.backend = "rabbitmq"`, to the broker (a bad
    /// URL or an unreachable server is an error here).
    pub async fn connect(redis_url: &str, settings: QueueSettings) -> Result<Self, QueueError> {
        Self::connect_with_metrics(redis_url, settings, None).await
    }

    /// Like [`Queue::connect`], recording into `metrics`.
    pub async fn connect_with_metrics(
        redis_url: &str,
        settings: QueueSettings,
        metrics: Option<QueueMetrics>,
    ) -> Result<Self, QueueError> {
        let client = redis::Client::open(redis_url)?;
        let conn = client
            .get_connection_manager_with_config(manager_config(Duration::from_secs(5)))
            .await?;
        let q = Self::build(client, conn, settings, metrics)?;
        q.inner.transport.connect().await?;
        Ok(q)
    }

    /// Like [`Queue::connect_with_metrics`] without connecting yet: a service can start while
    /// Redis (or the broker) is down (queue calls fail until it is back; connections are
    /// retried on use).
    pub fn connect_lazy(
        redis_url: &str,
        settings: QueueSettings,
        metrics: Option<QueueMetrics>,
    ) -> Result<Self, QueueError> {
        let client = redis::Client::open(redis_url)?;
        let conn = ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager_config(Duration::from_secs(5)),
        )?;
        Self::build(client, conn, settings, metrics)
    }

    fn build(
        client: redis::Client,
        conn: ConnectionManager,
        settings: QueueSettings,
        metrics: Option<QueueMetrics>,
    ) -> Result<Self, QueueError> {
        settings.validate()?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                client,
                keys: Keys::new(&settings.key_prefix),
                transport: transport::for_settings(&settings),
                settings,
                metrics,
            }),
        })
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.inner.settings
    }

    /// Which broker carries the jobs.
    pub fn backend(&self) -> QueueBackend {
        self.inner.settings.backend
    }

    pub(super) fn transport(&self) -> &dyn Transport {
        self.inner.transport.as_ref()
    }

    /// Closes the broker connection (RabbitMQ); a no-op on Redis.
    pub async fn close(&self) {
        self.inner.transport.close().await;
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// A clone of the shared connection (for handlers that keep their own state in Redis).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// A new connection of its own to the queue's Redis, for commands that block (on the
    /// shared multiplexed one they would hold up every other command).
    pub(super) fn blocking_connection(
        &self,
        response_timeout: Duration,
    ) -> Result<ConnectionManager, QueueError> {
        Ok(ConnectionManager::new_lazy_with_config(
            self.inner.client.clone(),
            manager_config(response_timeout),
        )?)
    }

    pub(super) fn metrics(&self) -> Option<&QueueMetrics> {
        self.inner.metrics.as_ref()
    }

    /// Adds a job. With an idempotency key that was seen before (within
    /// `idempotency_ttl_s`), returns the first job and adds nothing.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        validate_queue_name(&job.queue).map_err(QueueError::Invalid)?;
        if job.kind.is_empty() || job.kind.len() > 128 {
            return Err(QueueError::Invalid("kind must be 1-128 characters".into()));
        }
        if let Some(n) = &job.notify_queue {
            validate_queue_name(n).map_err(QueueError::Invalid)?;
        }
        if let Some(k) = &job.idempotency_key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(QueueError::Invalid(
                "idempotency key must be 1-200 characters".into(),
            ));
        }
        if job.max_attempts == Some(0) {
            return Err(QueueError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        let s = &self.inner.settings;
        let (at_ms, after_ms) = match job.schedule {
            Schedule::Now => (0, 0),
            Schedule::At(ms) => (ms, 0),
            Schedule::After(ms) => (0, ms),
        };
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| QueueError::Invalid(format!("payload: {e}")))?;
        let prepared = Prepared {
            id: uuid::Uuid::new_v4().simple().to_string(),
            queue: &job.queue,
            kind: &job.kind,
            payload,
            max_attempts: job
                .max_attempts
                .unwrap_or_else(|| s.max_attempts(&job.queue)),
            at_ms,
            after_ms,
            idem: job.idempotency_key.as_deref().unwrap_or(""),
            notify_queue: job.notify_queue.as_deref().unwrap_or(""),
            notify_attempts: job
                .notify_queue
                .as_deref()
                .map(|q| s.max_attempts(q))
                .unwrap_or(s.max_attempts),
        };
        let e = self.inner.transport.enqueue(self, prepared).await?;
        if let Some(m) = self.metrics() {
            m.enqueued(&job.queue, e.created);
        }
        Ok(e)
    }

    /// The job, or `None` if it does not exist (or has expired).
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.inner.conn.clone();
        let h: HashMap<String, String> = conn.hgetall(self.inner.keys.job(id)).await?;
        JobRecord::from_hash(h)
    }

    /// Records progress (0-100) of a running job.
    pub async fn set_progress(&self, id: &str, percent: u8) -> Result<(), QueueError> {
        let mut conn = self.inner.conn.clone();
        let _: () = conn
            .hset(self.inner.keys.job(id), "progress", percent.min(100))
            .await?;
        Ok(())
    }

    /// Creates what the queue needs on its broker if missing: on Redis the consumer group
    /// (and the stream), reading from the start of the stream so jobs enqueued before any
    /// worker existed are delivered; on RabbitMQ the queue's exchange, queues and binding.
    pub async fn ensure_group(&self, queue: &str) -> Result<(), QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        self.inner.transport.ensure_queue(self, queue).await
    }

    /// Queue sizes (length, pending, lag, delayed, dead).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        self.inner.transport.stats(self, queue).await
    }
}
