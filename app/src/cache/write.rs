//! The write side: after a database write, drop the record from every cache level on every
//! instance, and again from the scheduler a little later (the delayed double delete that
//! removes a value a concurrent reader put back from a pre-write snapshot).
//!
//! Redis work that fails is retried by the scheduler with backoff until it succeeds or no
//! longer matters (an L2 entry cannot outlive its TTL), so a Redis outage does not leave
//! stale values or missing Bloom bits behind once Redis is back.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::{Cache, Key};

pub(super) const QUEUE_CAPACITY: usize = 65_536;
/// Bound on pending scheduled work in one instance; beyond it new work is dropped (counted).
const MAX_PENDING: usize = 200_000;
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Scheduled work.
#[derive(Debug, Clone, Copy)]
pub(super) enum Job {
    /// Delete the L2 entry, drop L1 here and publish the invalidation.
    Delete {
        key: Key,
        started: Instant,
        attempt: u32,
    },
    /// Set the Bloom bits of a created id (its first attempt failed).
    BloomAdd {
        key: Key,
        started: Instant,
        attempt: u32,
    },
}

impl Job {
    fn retry(self) -> Self {
        match self {
            Job::Delete {
                key,
                started,
                attempt,
            } => Job::Delete {
                key,
                started,
                attempt: attempt + 1,
            },
            Job::BloomAdd {
                key,
                started,
                attempt,
            } => Job::BloomAdd {
                key,
                started,
                attempt: attempt + 1,
            },
        }
    }

    fn attempt(&self) -> u32 {
        match self {
            Job::Delete { attempt, .. } | Job::BloomAdd { attempt, .. } => *attempt,
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1u32 << attempt.min(10))
        .min(RETRY_MAX)
}

/// Message on the invalidation channel: `<instance>\n<key>` (`*` for everything).
pub(super) fn encode_invalidation(instance: &str, key: Option<&Key>) -> String {
    match key {
        Some(k) => format!("{instance}\n{k}"),
        None => format!("{instance}\n*"),
    }
}

impl Cache {
    /// Call after a record was updated or deleted in the database.
    pub async fn invalidate(&self, key: Key) {
        self.drop_everywhere(key).await;
        self.schedule(Job::Delete {
            key,
            started: Instant::now(),
            attempt: 0,
        });
    }

    /// Drops `key` from this instance's L1 only (tests, diagnostics).
    pub async fn invalidate_local(&self, key: Key) {
        if let Some(l1) = &self.inner.l1 {
            l1.invalidate(&key).await;
        }
    }

    /// Call after a record was created: its id goes into the Bloom filter, and any cached
    /// "not found" for it is dropped everywhere.
    pub async fn created(&self, key: Key) {
        if !self.bloom_add(key).await {
            self.schedule(Job::BloomAdd {
                key,
                started: Instant::now(),
                attempt: 0,
            });
        }
        self.invalidate(key).await;
    }

    /// L1 here, L2, and L1 elsewhere (pub/sub). True when the Redis part succeeded.
    async fn drop_everywhere(&self, key: Key) -> bool {
        if let Some(l1) = &self.inner.l1 {
            l1.invalidate(&key).await;
        }
        let Some(l2) = &self.inner.l2 else {
            return true;
        };
        let deleted =
            !self.inner.cfg.l2_enabled || l2.del(&self.inner.keys.value(&key)).await.is_ok();
        let msg = encode_invalidation(&self.inner.instance, Some(&key));
        let published = l2
            .publish(self.inner.keys.channel_for(&key), &msg)
            .await
            .is_ok();
        if published {
            self.inner
                .metrics
                .invalidations
                .with_label_values(&["sent"])
                .inc();
        }
        deleted && published
    }

    async fn bloom_add(&self, key: Key) -> bool {
        match (&self.inner.bloom, &self.inner.l2) {
            (Some(p), Some(l2)) => l2
                .bloom_add(
                    &self.inner.keys.bloom_bits(key.entity),
                    &p.positions(key.id),
                )
                .await
                .is_ok(),
            _ => true,
        }
    }

    /// Hands `job` to the scheduler task, which runs it after [`Cache::delay_of`].
    fn schedule(&self, job: Job) {
        if self.inner.jobs.try_send(job).is_err() {
            self.inner
                .metrics
                .delayed_deletes
                .with_label_values(&["dropped"])
                .inc();
            tracing::warn!(?job, "scheduler queue full: scheduled cache work dropped");
        }
    }

    async fn run_job(&self, job: Job) -> bool {
        match job {
            Job::Delete { key, .. } => self.drop_everywhere(key).await,
            Job::BloomAdd { key, .. } => self.bloom_add(key).await,
        }
    }

    fn delay_of(&self, job: &Job) -> Duration {
        match job {
            Job::Delete { attempt: 0, .. } => {
                Duration::from_millis(self.inner.cfg.delayed_delete_ms)
            }
            Job::BloomAdd { attempt: 0, .. } => RETRY_BASE,
            j => backoff(j.attempt()),
        }
    }

    /// Whether a failed job still matters: an L2 entry expires by itself after its TTL, so
    /// a delete older than that can be forgotten. Bloom bits are kept trying for as long.
    fn still_useful(&self, job: &Job) -> bool {
        let started = match job {
            Job::Delete { started, .. } | Job::BloomAdd { started, .. } => *started,
        };
        let cfg = &self.inner.cfg;
        started.elapsed() < Duration::from_millis(cfg.l2_ttl_ms + cfg.l2_stale_ms)
    }

    /// Runs scheduled work until `cancel`; then runs what is still pending once (bounded).
    pub(super) async fn run_scheduler(&self, cancel: CancellationToken) {
        let Some(mut rx) = self.inner.jobs_rx.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        let mut queue: DelayQueue<Job> = DelayQueue::new();
        let metric = |o: &str| {
            self.inner
                .metrics
                .delayed_deletes
                .with_label_values(&[o])
                .inc()
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(job) = rx.recv() => {
                    if queue.len() >= MAX_PENDING {
                        metric("dropped");
                    } else {
                        queue.insert(job, self.delay_of(&job));
                    }
                }
                Some(expired) = std::future::poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                    let job = expired.into_inner();
                    if self.run_job(job).await {
                        if matches!(job, Job::Delete { .. }) { metric("done"); }
                    } else if self.still_useful(&job) {
                        metric("retried");
                        let next = job.retry();
                        queue.insert(next, self.delay_of(&next));
                    } else {
                        metric("dropped");
                    }
                }
            }
        }
        // Shutdown: do the pending work now, once, within a bound.
        rx.close();
        let mut pending: Vec<Job> = Vec::new();
        while let Ok(job) = rx.try_recv() {
            pending.push(job);
        }
        while let Some(k) = queue.peek() {
            pending.push(queue.remove(&k).into_inner());
        }
        let work = async {
            for job in pending {
                self.run_job(job).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), work)
            .await
            .is_err()
        {
            tracing::warn!("pending cache invalidations not finished at shutdown");
        }
    }
}
