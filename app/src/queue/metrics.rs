//! Prometheus metrics of the queue, registered in the app's registry.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::client::QueueStats;

/// Queue metrics. Clones share the same series.
#[derive(Clone)]
pub struct QueueMetrics {
    enqueued: IntCounterVec,
    outcomes: IntCounterVec,
    retries: IntCounterVec,
    dead_letters: IntCounterVec,
    reclaimed: IntCounterVec,
    redis_retries: IntCounterVec,
    processing: HistogramVec,
    running: IntGaugeVec,
    length: IntGaugeVec,
    pending: IntGaugeVec,
    lag: IntGaugeVec,
    delayed: IntGaugeVec,
    dead: IntGaugeVec,
    backend: IntGaugeVec,
}

impl QueueMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["queue"])?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let processing = HistogramVec::new(
            HistogramOpts::new(
                "app_queue_processing_seconds",
                "Time from a job's start to its acknowledgement",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["queue"],
        )?;
        registry.register(Box::new(processing.clone()))?;
        Ok(Self {
            enqueued: counter(
                "app_queue_enqueued_total",
                "Enqueue calls; outcome=duplicate when an idempotency key matched",
                &["queue", "outcome"],
            )?,
            outcomes: counter(
                "app_queue_jobs_total",
                "Finished attempts by outcome (succeeded, retried, dead, stale)",
                &["queue", "outcome"],
            )?,
            retries: counter(
                "app_queue_retries_total",
                "Failed attempts scheduled for a retry",
                &["queue"],
            )?,
            dead_letters: counter(
                "app_queue_dead_letters_total",
                "Jobs moved to the dead-letter stream",
                &["queue"],
            )?,
            reclaimed: counter(
                "app_queue_reclaimed_total",
                "Entries taken over from a worker that stopped heartbeating",
                &["queue"],
            )?,
            redis_retries: counter(
                "app_queue_redis_retries_total",
                "Queue commands repeated after a transient Redis error (failover, reconnection, \
                 slot move), by operation",
                &["op"],
            )?,
            processing,
            running: gauge("app_queue_running", "Jobs running in this instance")?,
            length: gauge(
                "app_queue_length",
                "Jobs waiting for a delivery plus pending ones (Redis: the stream entries)",
            )?,
            pending: gauge(
                "app_queue_pending",
                "Entries delivered and not yet acknowledged",
            )?,
            lag: gauge("app_queue_lag", "Entries not yet delivered to any worker")?,
            delayed: gauge("app_queue_delayed", "Jobs waiting in the delayed schedule")?,
            dead: gauge("app_queue_dead", "Entries in the dead-letter stream")?,
            backend: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "app_queue_backend_info",
                        "1 for the broker the queue runs on (backend=redis|rabbitmq)",
                    ),
                    &["backend"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
        })
    }

    /// Reports which backend runs (`app_queue_backend_info{backend=...} 1`).
    pub fn set_backend(&self, backend: super::QueueBackend) {
        for b in [super::QueueBackend::Redis, super::QueueBackend::Rabbitmq] {
            self.backend
                .with_label_values(&[b.as_str()])
                .set(i64::from(b == backend));
        }
    }

    pub(super) fn redis_retried(&self, op: &str) {
        self.redis_retries.with_label_values(&[op]).inc();
    }

    pub(super) fn enqueued(&self, queue: &str, created: bool) {
        let outcome = if created { "created" } else { "duplicate" };
        self.enqueued.with_label_values(&[queue, outcome]).inc();
    }

    pub(super) fn outcome(&self, queue: &str, outcome: &str, took: Option<Duration>) {
        self.outcomes.with_label_values(&[queue, outcome]).inc();
        match outcome {
            "retried" => self.retries.with_label_values(&[queue]).inc(),
            "dead" => self.dead_letters.with_label_values(&[queue]).inc(),
            _ => {}
        }
        if let Some(t) = took {
            self.processing
                .with_label_values(&[queue])
                .observe(t.as_secs_f64());
        }
    }

    pub(super) fn reclaimed(&self, queue: &str, n: u64) {
        self.reclaimed.with_label_values(&[queue]).inc_by(n);
    }

    pub(super) fn running(&self, queue: &str, delta: i64) {
        self.running.with_label_values(&[queue]).add(delta);
    }

    pub(super) fn sizes(&self, s: &QueueStats) {
        let q = [s.queue.as_str()];
        self.length.with_label_values(&q).set(s.length as i64);
        self.pending.with_label_values(&q).set(s.pending as i64);
        self.lag.with_label_values(&q).set(s.lag as i64);
        self.delayed.with_label_values(&q).set(s.delayed as i64);
        self.dead.with_label_values(&q).set(s.dead as i64);
    }
}
