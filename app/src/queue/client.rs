//! The queue handle: enqueue, read jobs, inspect queues. Cheap to clone. What depends on
//! the broker is delegated to the [`Transport`] `queue.backend` names.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use app_redis::{RedisConn, RedisTarget, Timeouts};
use redis::AsyncCommands;
use serde::Serialize;

use super::job::{Enqueued, JobRecord, MAX_ATTEMPTS, NewJob, Schedule};
use super::keys::{Keys, validate_queue_name};
use super::metrics::QueueMetrics;
use super::transport::{self, Prepared, Transport};
use super::{QueueBackend, QueueError, QueueSettings, retry};

/// A handle on the queue: job records in Redis (one server, a Sentinel set or a Cluster),
/// jobs carried by the configured [`Transport`]. Clones share one Redis connection and one
/// transport.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    conn: RedisConn,
    target: RedisTarget,
    keys: Keys,
    settings: QueueSettings,
    metrics: Option<QueueMetrics>,
    transport: Box<dyn Transport>,
    /// Round robin over the partitions for jobs without a routing key.
    next_partition: AtomicUsize,
    /// This instance's partition count is recorded in `{p}:partition-counts`.
    registered: AtomicBool,
}

/// Sizes of one queue, as the metrics report them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Waiting plus pending: the entries in the stream (Redis); `lag` + `pending` (RabbitMQ).
    pub length: u64,
    /// Delivered to a worker and not acknowledged yet. Redis: the group's XPENDING count.
    /// RabbitMQ: jobs in state `running` (the `{p}:running:{t}:{queue}` sets the job scripts
    /// keep), since AMQP 0-9-1 does not report unacknowledged messages. A job whose worker died
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

/// Bounds of the queue's shared connection: a failed server is noticed within seconds.
const SHARED: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    response: Duration::from_secs(5),
};

fn parse_target(redis_url: &str) -> Result<RedisTarget, QueueError> {
    RedisTarget::parse(redis_url).map_err(|e| QueueError::config("queue redis url", e.to_string()))
}

impl Queue {
    /// Connects to `redis_url` (`redis://`, `redis+sentinel://` or `redis+cluster://`) and,
    /// with `queue.backend = "rabbitmq"`, to the broker (a bad URL or an unreachable server
    /// is an error here).
    pub async fn connect(redis_url: &str, settings: QueueSettings) -> Result<Self, QueueError> {
        Self::connect_with_metrics(redis_url, settings, None).await
    }

    /// Like [`Queue::connect`], recording into `metrics`.
    pub async fn connect_with_metrics(
        redis_url: &str,
        settings: QueueSettings,
        metrics: Option<QueueMetrics>,
    ) -> Result<Self, QueueError> {
        let q = Self::connect_lazy(redis_url, settings, metrics)?;
        let mut conn = q.connection();
        let _: redis::Value = redis::cmd("PING").query_async(&mut conn).await?;
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
        settings.validate()?;
        let target = parse_target(redis_url)?;
        let conn = RedisConn::open(&target, SHARED)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                target,
                keys: Keys::new(&settings.key_prefix, settings.partitions),
                transport: transport::for_settings(&settings),
                settings,
                metrics,
                next_partition: AtomicUsize::new(rand::random::<u16>().into()),
                registered: AtomicBool::new(false),
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
    pub fn connection(&self) -> RedisConn {
        self.inner.conn.clone()
    }

    /// A new connection of its own to the queue's Redis, for commands that block (on the
    /// shared multiplexed one they would hold up every other command).
    pub(super) fn blocking_connection(
        &self,
        response_timeout: Duration,
    ) -> Result<RedisConn, QueueError> {
        Ok(RedisConn::open(
            &self.inner.target,
            Timeouts {
                connect: SHARED.connect,
                response: response_timeout,
            },
        )?)
    }

    pub(super) fn metrics(&self) -> Option<&QueueMetrics> {
        self.inner.metrics.as_ref()
    }

    /// Records this instance's partition count in `{p}:partition-counts` (once per process;
    /// before its first enqueue, so no job lands in a partition the pools do not know).
    async fn register_partitions(&self) -> Result<(), QueueError> {
        if self.inner.registered.load(Ordering::Relaxed) {
            return Ok(());
        }
        let key = self.inner.keys.partition_counts();
        let n = self.inner.settings.partitions;
        let _: i64 = retry::redis(self, "partitions", |mut c| {
            let key = &key;
            async move { c.sadd(key, n).await }
        })
        .await?;
        self.inner.registered.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The tags of every partition an instance of this prefix may have written to: this
    /// instance's first, then those of the other counts in `{p}:partition-counts` (an
    /// instance that ran with another `queue.partitions`). Pools read them all; stats and dead
    /// letters cover them all.
    pub(crate) async fn partition_tags(&self) -> Result<Vec<String>, QueueError> {
        self.register_partitions().await?;
        let key = self.inner.keys.partition_counts();
        let counts: Vec<String> = retry::redis(self, "partitions", |mut c| {
            let key = &key;
            async move { c.smembers(key).await }
        })
        .await?;
        // Anything else in the set (written by hand) is not a count of ours.
        let counts = counts
            .iter()
            .filter_map(|c| c.parse::<u32>().ok())
            .filter(|c| (1..=1024).contains(c));
        Ok(super::keys::tags_of_counts(
            self.inner.settings.partitions,
            counts,
        ))
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
        if let Some(k) = &job.ordering_key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(QueueError::Invalid(
                "ordering key must be 1-200 characters".into(),
            ));
        }
        if let Some(n) = job.max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            return Err(QueueError::Invalid(format!(
                "max_attempts must be 1-{MAX_ATTEMPTS}, not {n}"
            )));
        }
        job.schedule.check().map_err(QueueError::Invalid)?;
        let s = &self.inner.settings;
        let (at_ms, after_ms) = match job.schedule {
            Schedule::Now => (0, 0),
            Schedule::At(ms) => (ms, 0),
            Schedule::After(ms) => (0, ms),
        };
        let payload = serde_json::to_string(&job.payload)
            .map_err(|e| QueueError::Invalid(format!("payload: {e}")))?;
        // A routing key keeps a job in one partition: its ordering key (jobs of one key run
        // in order) or its idempotency key (checked in the job's partition); other jobs go
        // round robin.
        let k = &self.inner.keys;
        let partition = match job
            .ordering_key
            .as_deref()
            .or(job.idempotency_key.as_deref())
        {
            Some(key) => k.partition_of_key(key),
            None => k.partition(self.inner.next_partition.fetch_add(1, Ordering::Relaxed)),
        };
        let prepared = Prepared {
            id: k.new_job_id(partition),
            tag: partition.tag,
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
        self.register_partitions().await?;
        let e = self.inner.transport.enqueue(self, prepared).await?;
        if let Some(m) = self.metrics() {
            m.enqueued(&job.queue, e.created);
        }
        Ok(e)
    }

    /// The job, or `None` if it does not exist (or has expired).
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        if super::keys::job_tag(id).is_none() {
            return Ok(None);
        }
        let key = self.inner.keys.job(id);
        let h: HashMap<String, String> = retry::redis(self, "get", |mut c| {
            let key = &key;
            async move { c.hgetall(key).await }
        })
        .await?;
        JobRecord::from_hash(h)
    }

    /// Records progress (0-100) of a running job.
    pub async fn set_progress(&self, id: &str, percent: u8) -> Result<(), QueueError> {
        let key = self.inner.keys.job(id);
        retry::redis(self, "progress", |mut c| {
            let key = &key;
            async move { c.hset(key, "progress", percent.min(100)).await }
        })
        .await
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
