//! The queue handle: enqueue, read jobs, inspect queues. Cheap to clone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

use super::job::{Enqueued, JobRecord, NewJob, Schedule};
use super::keys::{Keys, validate_queue_name};
use super::metrics::QueueMetrics;
use super::rabbit::broker::Broker;
use super::rabbit::produce::{self, EnqueueArgs};
use super::scripts::Scripts;
use super::{QueueBackend, QueueError, QueueSettings};

/// A handle on the queue in one Redis. Clones share one auto-reconnecting connection.
#[derive(Clone)]
pub struct Queue {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub conn: ConnectionManager,
    pub client: redis::Client,
    pub keys: Keys,
    pub scripts: Scripts,
    pub settings: QueueSettings,
    pub metrics: Option<QueueMetrics>,
    /// The broker when `settings.backend` is RabbitMQ (connected on first use).
    pub broker: Option<Arc<Broker>>,
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
pub(super) fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

impl Queue {
    /// Connects to `redis_url` (a bad URL or unreachable server is an error here).
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
        if let Some(b) = q.broker() {
            b.link().await.map_err(produce::broker_err)?;
        }
        Ok(q)
    }

    /// Like [`Queue::connect_with_metrics`] without connecting yet: a service can start while
    /// Redis is down (queue calls fail until it is back; the connection is retried on use).
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
        let broker = (settings.backend == QueueBackend::Rabbitmq).then(|| {
            Arc::new(Broker::new(
                &settings.rabbitmq_url,
                &settings.key_prefix,
                Duration::from_millis(settings.rabbitmq_publish_timeout_ms),
            ))
        });
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                client,
                keys: Keys::new(&settings.key_prefix),
                scripts: Scripts::new(),
                settings,
                metrics,
                broker,
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

    pub(super) fn broker(&self) -> Option<Arc<Broker>> {
        self.inner.broker.clone()
    }

    /// Closes the broker connection (RabbitMQ); a no-op on Redis.
    pub async fn close(&self) {
        if let Some(b) = &self.inner.broker {
            b.close().await;
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// A clone of the shared connection (for handlers that keep their own state in Redis).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
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
        let k = &self.inner.keys;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (at, after) = match job.schedule {
            Schedule::Now => (0, 0),
            Schedule::At(ms) => (ms, 0),
            Schedule::After(ms) => (0, ms),
        };
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| QueueError::Invalid(format!("payload: {e}")))?;
        let idem = job.idempotency_key.as_deref().unwrap_or("");
        let notify_queue = job.notify_queue.as_deref().unwrap_or("");
        let notify_attempts = job
            .notify_queue
            .as_deref()
            .map(|q| s.max_attempts(q))
            .unwrap_or(s.max_attempts);
        let max_attempts = job
            .max_attempts
            .unwrap_or_else(|| s.max_attempts(&job.queue));
        if let Some(b) = &self.inner.broker {
            let e = produce::enqueue(
                self,
                b,
                EnqueueArgs {
                    id,
                    queue: &job.queue,
                    kind: &job.kind,
                    payload,
                    max_attempts,
                    at_ms: at,
                    after_ms: after,
                    idem,
                    notify_queue,
                    notify_attempts,
                },
            )
            .await?;
            if let Some(m) = self.metrics() {
                m.enqueued(&job.queue, e.created);
            }
            return Ok(e);
        }
        let mut conn = self.inner.conn.clone();
        let (id, created): (String, i64) = self
            .inner
            .scripts
            .enqueue
            .key(k.job(&id))
            .key(k.stream(&job.queue))
            .key(k.delayed(&job.queue))
            .key(k.idempotency(&job.queue, idem))
            .arg(&id)
            .arg(&job.queue)
            .arg(&job.kind)
            .arg(payload)
            .arg(max_attempts)
            .arg(at)
            .arg(after)
            .arg(if idem.is_empty() { "0" } else { "1" })
            .arg(s.idempotency_ttl_s)
            .arg(notify_queue)
            .arg(notify_attempts)
            .invoke_async(&mut conn)
            .await?;
        let created = created == 1;
        if let Some(m) = self.metrics() {
            m.enqueued(&job.queue, created);
        }
        Ok(Enqueued { id, created })
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

    /// Creates the consumer group (and the stream) if missing. Starts at the beginning of the
    /// stream, so jobs enqueued before any worker existed are delivered.
    /// On RabbitMQ: declares the queue's exchange, queues and binding.
    pub async fn ensure_group(&self, queue: &str) -> Result<(), QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        if let Some(b) = &self.inner.broker {
            let link = b.link().await.map_err(produce::broker_err)?;
            return b.ensure(&link, queue).await.map_err(produce::broker_err);
        }
        let mut conn = self.inner.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.inner.keys.stream(queue))
            .arg(&self.inner.settings.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Queue sizes (length, pending, lag, delayed, dead).
    pub async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        if let Some(b) = &self.inner.broker {
            return produce::stats(self, b, queue).await;
        }
        let k = &self.inner.keys;
        let mut conn = self.inner.conn.clone();
        let (length, delayed, dead): (u64, u64, u64) = redis::pipe()
            .xlen(k.stream(queue))
            .zcard(k.delayed(queue))
            .xlen(k.dlq(queue))
            .query_async(&mut conn)
            .await?;
        let pending = if length == 0 {
            0
        } else {
            let r: redis::RedisResult<redis::streams::StreamPendingReply> = conn
                .xpending(k.stream(queue), &self.inner.settings.group)
                .await;
            match r {
                Ok(p) => p.count() as u64,
                // No group yet: nothing was delivered.
                Err(e) if e.code() == Some("NOGROUP") => 0,
                Err(e) => return Err(e.into()),
            }
        };
        // Acknowledged entries are deleted, so the stream holds only waiting + pending ones.
        Ok(QueueStats {
            queue: queue.to_string(),
            length,
            pending,
            lag: length.saturating_sub(pending),
            delayed,
            dead,
        })
    }
}
