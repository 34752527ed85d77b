//! Prometheus metrics of the app, in one registry per instance (`GET /metrics`).
//!
//! Other modules (the queue) register their own series in [`Metrics::registry`].

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every series of the HTTP and cache layers. Clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `level` = l1|l2, `result` = hit|miss|negative|stale.
    pub cache_lookups: IntCounterVec,
    /// Loads of a cached entity from the database (the figure the protections keep low).
    pub db_loads: IntCounterVec,
    /// Cross-instance rebuild lock: `outcome` = acquired|waited_hit|waited_timeout|stale_served.
    pub lock_waits: IntCounterVec,
    /// Concurrent misses answered by another request's load in this instance.
    pub coalesced: IntCounter,
    /// `result` = absent|maybe|unknown.
    pub bloom_checks: IntCounterVec,
    pub bloom_ready: IntGauge,
    /// Bloom bits of the newest ids the keeper found unset and set again (bits lost in a
    /// failover or restart, or ids being created at that moment).
    pub bloom_healed: IntCounter,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
    pub breaker_opened: IntCounter,
    /// Redis commands that failed or timed out; `op` names the command family.
    pub redis_errors: IntCounterVec,
    /// `direction` = sent|received.
    pub invalidations: IntCounterVec,
    /// 1 while this instance listens on the invalidation channel.
    pub invalidation_subscribed: IntGauge,
    /// Times the invalidation subscription was restored after a loss (each clears L1).
    pub invalidation_resubscribed: IntCounter,
    /// Delayed second deletes: `outcome` = done|retried|dropped.
    pub delayed_deletes: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGauge,
    pub rate_limited: IntCounter,
    pub ready: IntGauge,
    /// Control-plane calls: `op` = register|drain|deregister, `result` = ok|error.
    pub registration_calls: IntCounterVec,
    /// The last self-check of the DSR setup, per check: 0 ok, 1 warn, 2 fail.
    pub self_check: prometheus::IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "app_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method", "route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        // Which allocator the process runs on (only the `app` binary installs the selector).
        if let Some(a) = crate::alloc::Allocator::current() {
            let info = IntGaugeVec::new(
                Opts::new("app_allocator_info", "The memory allocator (APP_ALLOCATOR)"),
                &["allocator"],
            )?;
            info.with_label_values(&[a.as_str()]).set(1);
            registry.register(Box::new(info))?;
        }
        let m = Self {
            cache_lookups: counter_vec(
                "app_cache_lookups_total",
                "Cache lookups by level and result",
                &["level", "result"],
            )?,
            db_loads: counter_vec(
                "app_cache_db_loads_total",
                "Cache fills that read the database",
                &["entity"],
            )?,
            lock_waits: counter_vec(
                "app_cache_lock_total",
                "Cross-instance rebuild lock outcomes",
                &["outcome"],
            )?,
            coalesced: counter(
                "app_cache_coalesced_total",
                "Misses served by a concurrent load of the same key",
            )?,
            bloom_checks: counter_vec(
                "app_cache_bloom_checks_total",
                "Bloom filter answers",
                &["result"],
            )?,
            bloom_ready: gauge(
                "app_cache_bloom_ready",
                "1 when the shared Bloom filter is complete",
            )?,
            bloom_healed: counter(
                "app_cache_bloom_healed_total",
                "Bloom bits of the newest ids found unset by the keeper and set again",
            )?,
            breaker_state: gauge(
                "app_cache_breaker_state",
                "Redis circuit breaker: 0 closed, 1 open, 2 half-open",
            )?,
            breaker_opened: counter(
                "app_cache_breaker_opened_total",
                "Times the Redis circuit breaker opened",
            )?,
            redis_errors: counter_vec(
                "app_redis_errors_total",
                "Failed or timed-out Redis commands",
                &["op"],
            )?,
            invalidations: counter_vec(
                "app_cache_invalidations_total",
                "L1 invalidation messages sent and received",
                &["direction"],
            )?,
            invalidation_subscribed: gauge(
                "app_cache_invalidation_subscribed",
                "1 while subscribed to the invalidation channel",
            )?,
            invalidation_resubscribed: counter(
                "app_cache_invalidation_resubscribed_total",
                "Times the invalidation subscription was restored after a loss (L1 cleared)",
            )?,
            delayed_deletes: counter_vec(
                "app_cache_delayed_deletes_total",
                "Second (delayed) deletes of written keys",
                &["outcome"],
            )?,
            http_requests: counter_vec(
                "app_http_requests_total",
                "HTTP requests",
                &["method", "route", "status"],
            )?,
            http_duration,
            http_in_flight: gauge("app_http_in_flight", "HTTP requests being handled")?,
            rate_limited: counter("app_http_rate_limited_total", "Requests refused with 429")?,
            ready: gauge("app_ready", "1 when the instance reports ready")?,
            registration_calls: counter_vec(
                "app_registration_calls_total",
                "Control-plane API calls",
                &["op", "result"],
            )?,
            self_check: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "app_self_check_status",
                        "Last self-check of the DSR setup per check: 0 ok, 1 warn, 2 fail",
                    ),
                    &["check"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            registry,
        };
        Ok(m)
    }

    /// The text exposition format of every registered series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Convenience for tests and the benchmark.
    pub fn lookups(&self, level: &str, result: &str) -> u64 {
        self.cache_lookups.with_label_values(&[level, result]).get()
    }

    /// Failed Redis commands of every `op`.
    pub fn redis_errors_total(&self) -> u64 {
        use prometheus::core::Collector;
        self.redis_errors
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    pub fn user_db_loads(&self) -> u64 {
        self.db_loads.with_label_values(&["user"]).get()
    }
}
