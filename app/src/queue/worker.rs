//! The worker pool of one instance: the transport's loops that take jobs of every served
//! queue, one task per job in flight, and a metrics sampler per queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Backoff;
use super::handler::Registry;
use super::transport::{Held, Workers};
use super::{Queue, QueueError};

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
    /// The tags of every partition to read (see `Queue::partition_tags`), refreshed while
    /// the pool runs.
    partitions: RwLock<Arc<Vec<Arc<str>>>>,
}

impl Shared {
    /// The partitions to read now.
    pub(crate) fn partitions(&self) -> Arc<Vec<Arc<str>>> {
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the partitions again: an instance started with another `queue.partitions` may
    /// have written to partitions this pool does not read yet.
    async fn refresh_partitions(&self) -> Result<(), QueueError> {
        let tags = self.queue.partition_tags().await?;
        let tags: Vec<Arc<str>> = tags.iter().map(|t| Arc::from(t.as_str())).collect();
        let mut g = self
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if g.as_slice() != tags.as_slice() {
            tracing::info!(
                partitions = tags.len(),
                "reading partitions of another partition count too"
            );
            *g = Arc::new(tags);
        }
        Ok(())
    }

    /// Sleeps unless the pool stops first; false when it stopped.
    pub(crate) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Workers for every queue in a [`Registry`], in this process.
pub struct WorkerPool {
    shared: Arc<Shared>,
    loops: Vec<JoinHandle<()>>,
    /// What the transport holds for running jobs until the very end of shutdown.
    held: Option<Box<dyn Held>>,
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
        let queues = registry.queues();
        let s = queue.settings();
        let shared = Arc::new(Shared {
            backoff: Backoff {
                base: Duration::from_millis(s.backoff_base_ms),
                max: Duration::from_millis(s.backoff_max_ms),
            },
            queue: queue.clone(),
            registry,
            consumer,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            stats: Arc::new(PoolStats::default()),
            partitions: RwLock::new(Arc::new(
                queue
                    .keys()
                    .partitions()
                    .map(|p| Arc::from(p.tag))
                    .collect(),
            )),
        });
        // Redis may be down at start: the configured partitions are read until it is back.
        if let Err(e) = shared.refresh_partitions().await {
            tracing::warn!(error = %e, "cannot read the partition counts yet");
        }
        let Workers { mut loops, held } = queue.transport().start_workers(&shared, &queues).await?;
        loops.push(tokio::spawn(watch_partitions(shared.clone())));
        if queue.metrics().is_some() {
            for q in queues {
                loops.push(tokio::spawn(sampler(shared.clone(), Arc::from(q.as_str()))));
            }
        }
        tracing::info!(consumer = %shared.consumer, backend = %queue.backend(), "worker pool started");
        Ok(Self {
            shared,
            loops,
            held,
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
        // Every running job acknowledged or was abandoned: the transport may let go.
        if let Some(held) = self.held.take() {
            held.release(&sh).await;
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
    /// A pool dropped without `shutdown` stops at once (so does what its transport held);
    /// its running jobs stay pending.
    fn drop(&mut self) {
        if !self.loops.is_empty() {
            self.shared.stop.cancel();
            self.shared.abort.cancel();
        }
    }
}

/// How often a pool looks for partitions of another partition count.
const PARTITIONS_EVERY: Duration = Duration::from_secs(30);

async fn watch_partitions(sh: Arc<Shared>) {
    while sh.pause(PARTITIONS_EVERY).await {
        if let Err(e) = sh.refresh_partitions().await {
            tracing::debug!(error = %e, "partition counts not read");
        }
    }
}

/// Samples queue sizes into the gauges.
async fn sampler(sh: Arc<Shared>, queue: Arc<str>) {
    while sh.pause(Duration::from_secs(5)).await {
        match sh.queue.stats(&queue).await {
            Ok(st) => {
                if let Some(m) = sh.queue.metrics() {
                    m.sizes(&st);
                }
            }
            Err(e) => tracing::debug!(queue = %queue, error = %e, "queue stats failed"),
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
