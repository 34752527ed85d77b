//! The worker pool of one instance: per served queue a fetch loop, a reclaim loop and a
//! mover loop, and one task per job in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;
use super::handler::Registry;
use super::{Queue, QueueError, loops};

/// Counters of one pool (also handy for tests and the benchmark).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Attempts started (START script said "run").
    pub started: AtomicU64,
    pub succeeded: AtomicU64,
    /// Failed attempts that got a retry.
    pub retried: AtomicU64,
    /// Jobs this pool moved to the dead-letter stream.
    pub dead: AtomicU64,
    /// Deliveries whose job had already moved on (finished elsewhere, replaced, purged).
    pub stale: AtomicU64,
    /// Entries taken over from a worker that stopped heartbeating.
    pub reclaimed: AtomicU64,
    /// Jobs given up at shutdown after the grace period (left for another worker).
    pub abandoned: AtomicU64,
}

impl PoolStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Every running job finished within the grace period.
    pub drained: bool,
    /// Jobs stopped after the grace period; their entries stay pending for another worker.
    pub abandoned: u64,
}

/// Everything the loops and job tasks of one pool share.
pub(crate) struct Shared {
    pub queue: Queue,
    pub registry: Registry,
    pub consumer: String,
    /// Stop taking new jobs.
    pub stop: CancellationToken,
    /// Give up on running jobs (after the grace period).
    pub abort: CancellationToken,
    pub tracker: TaskTracker,
    pub stats: Arc<PoolStats>,
    pub backoff: Backoff,
    /// RabbitMQ channels of stopped consumers, kept open until running jobs acknowledged.
    pub parked: std::sync::Mutex<Vec<lapin::Channel>>,
}

impl Shared {
    pub(crate) fn park(&self, ch: lapin::Channel) {
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ch);
    }
}

/// Workers for every queue in a [`Registry`], in this process.
pub struct WorkerPool {
    shared: Arc<Shared>,
    loops: Vec<JoinHandle<()>>,
    /// RabbitMQ: refreshes the pool's liveness key until the very end of shutdown (running
    /// jobs still belong to this pool while they drain).
    keepalive: Option<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts workers for every queue that has a handler in `registry`.
    pub async fn start(queue: Queue, registry: Registry) -> Result<Self, QueueError> {
        let consumer = format!(
            "{}-{}-{:04x}",
            hostname(),
            std::process::id(),
            rand::random::<u16>()
        );
        Self::start_named(queue, registry, consumer).await
    }

    /// Like [`WorkerPool::start`] with a chosen consumer name (unique per live pool).
    pub async fn start_named(
        queue: Queue,
        registry: Registry,
        consumer: String,
    ) -> Result<Self, QueueError> {
        let s = queue.settings().clone();
        let queues = registry.queues();
        if let Some(b) = queue.broker() {
            return Self::start_rabbit(queue.clone(), registry, consumer, b).await;
        }
        for q in &queues {
            // Redis may be down at start: the fetch loop creates the group once it is back.
            if let Err(e) = queue.ensure_group(q).await {
                tracing::warn!(queue = %q, error = %e, "cannot create the consumer group yet");
            }
        }
        let shared = Self::shared(&queue, registry, consumer);
        let mut handles = Vec::new();
        for q in queues {
            let q: Arc<str> = Arc::from(q.as_str());
            let permits = Arc::new(Semaphore::new(s.concurrency(&q)));
            // Blocking reads get a connection of their own: on the shared multiplexed one
            // they would hold up every other command.
            let read_conn = redis::aio::ConnectionManager::new_lazy_with_config(
                queue.inner.client.clone(),
                super::client::manager_config(std::time::Duration::from_millis(s.block_ms + 5_000)),
            )?;
            handles.push(tokio::spawn(loops::fetch(
                shared.clone(),
                q.clone(),
                permits.clone(),
                read_conn,
            )));
            handles.push(tokio::spawn(loops::reclaim(
                shared.clone(),
                q.clone(),
                permits,
            )));
            handles.push(tokio::spawn(loops::mover(shared.clone(), q.clone())));
            if queue.metrics().is_some() {
                handles.push(tokio::spawn(loops::sampler(shared.clone(), q)));
            }
        }
        tracing::info!(consumer = %shared.consumer, "worker pool started");
        Ok(Self {
            shared,
            loops: handles,
            keepalive: None,
        })
    }

    fn shared(queue: &Queue, registry: Registry, consumer: String) -> Arc<Shared> {
        let s = queue.settings();
        Arc::new(Shared {
            backoff: Backoff {
                base: std::time::Duration::from_millis(s.backoff_base_ms),
                max: std::time::Duration::from_millis(s.backoff_max_ms),
            },
            queue: queue.clone(),
            registry,
            consumer,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            stats: Arc::new(PoolStats::default()),
            parked: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The RabbitMQ pool: a consumer per queue (prefetch = the queue's concurrency), the
    /// outbox loop and the metrics sampler. The broker may be down: consumers connect when
    /// it is back.
    async fn start_rabbit(
        queue: Queue,
        registry: Registry,
        consumer: String,
        b: Arc<super::rabbit::broker::Broker>,
    ) -> Result<Self, QueueError> {
        let queues = registry.queues();
        let shared = Self::shared(&queue, registry, consumer);
        let keepalive = tokio::spawn(super::rabbit::consume::alive(shared.clone()));
        let mut handles = Vec::new();
        for q in queues {
            let prefetch = u16::try_from(queue.settings().concurrency(&q)).unwrap_or(u16::MAX);
            let q: Arc<str> = Arc::from(q.as_str());
            handles.push(tokio::spawn(super::rabbit::consume::consume(
                shared.clone(),
                b.clone(),
                q.clone(),
                prefetch,
            )));
            if queue.metrics().is_some() {
                handles.push(tokio::spawn(loops::sampler(shared.clone(), q)));
            }
        }
        handles.push(tokio::spawn(super::rabbit::consume::outbox(
            shared.clone(),
            b,
        )));
        tracing::info!(consumer = %shared.consumer, backend = "rabbitmq", "worker pool started");
        Ok(Self {
            shared,
            loops: handles,
            keepalive: Some(keepalive),
        })
    }

    pub fn consumer(&self) -> &str {
        &self.shared.consumer
    }

    pub fn stats(&self) -> Arc<PoolStats> {
        self.shared.stats.clone()
    }

    /// Stops taking jobs, waits up to the grace period for running ones, then gives up on
    /// the rest: they are not acknowledged, so another worker reclaims them.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let sh = self.shared.clone();
        sh.stop.cancel();
        for h in std::mem::take(&mut self.loops) {
            let _ = h.await;
        }
        sh.tracker.close();
        let grace = sh.queue.settings().shutdown_grace();
        let drained = tokio::time::timeout(grace, sh.tracker.wait()).await.is_ok();
        if !drained {
            sh.abort.cancel();
            sh.tracker.wait().await;
        }
        // RabbitMQ: every running job acknowledged (or was abandoned); closing the channels
        // returns unstarted prefetched and abandoned deliveries to their queues.
        let parked = std::mem::take(
            &mut *sh
                .parked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for ch in parked {
            let _ = ch.close(200, "worker shutdown".into()).await;
        }
        if let Some(k) = self.keepalive.take() {
            k.abort();
            let _ = k.await;
            // Nothing of ours runs any more: redeliveries of abandoned jobs may start now.
            let mut c = sh.queue.connection();
            let key = super::rabbit::consume::alive_key(&sh);
            let _: redis::RedisResult<i64> = redis::AsyncCommands::del(&mut c, key).await;
        }
        let report = ShutdownReport {
            drained,
            abandoned: PoolStats::get(&sh.stats.abandoned),
        };
        tracing::info!(consumer = %sh.consumer, ?report, "worker pool stopped");
        report
    }
}

impl Drop for WorkerPool {
    /// A pool dropped without `shutdown` stops at once; its running jobs stay pending.
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        if !self.loops.is_empty() {
            self.shared.stop.cancel();
            self.shared.abort.cancel();
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "app".to_string())
}
