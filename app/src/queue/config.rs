//! Queue settings: one `[queue]` table in the app's TOML config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::QueueError;

/// Settings for the Redis Streams queue and its worker pool.
///
/// Every field has a default, so an empty `[queue]` table (or none) works.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Which broker carries the jobs: `redis` (Redis Streams) or `rabbitmq`. Job records,
    /// idempotency keys and the handlers' state live in Redis with either.
    pub backend: QueueBackend,
    /// AMQP URL of the broker when `backend = "rabbitmq"`.
    pub rabbitmq_url: String,
    /// How long an enqueue on RabbitMQ keeps retrying (reconnecting) for the broker's confirm
    /// before it fails (ms). Covers a broker restart; the job is re-sent from the outbox later.
    pub rabbitmq_publish_timeout_ms: u64,
    /// Redis URL the queue uses (one server, a Sentinel set or a Cluster, as `redis.url`);
    /// `None` means "the app's Redis URL".
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the queue writes.
    pub key_prefix: String,
    /// Partitions of every queue: each has its own stream, schedule and dead letters under
    /// one Redis Cluster hash tag, and the tags spread over the masters. 1 suits one server or
    /// Sentinel; in a cluster, at least the number of masters. Every instance must use the same
    /// count (jobs in a partition no instance reads would wait for ever).
    pub partitions: u32,
    /// How long a queue call keeps repeating a command that failed with a transient error
    /// (connection lost, failover in progress, slot moving) before it fails (ms). Covers a
    /// master failover; keep it below `http.request_timeout_ms`.
    pub redis_retry_ms: u64,
    /// With several partitions, the longest pause (ms) of a worker's fetch loop between two
    /// rounds over the partitions that found nothing (one partition blocks in XREADGROUP
    /// instead, for `block_ms`).
    pub idle_poll_ms: u64,
    /// Consumer group shared by every worker of every instance.
    pub group: String,
    /// Entries pending longer than this (ms) without a heartbeat are reclaimed by another worker.
    pub claim_idle_ms: u64,
    /// How long one XREADGROUP blocks (ms) waiting for work.
    pub block_ms: u64,
    /// How often the delayed schedule is checked for due jobs (ms).
    pub mover_interval_ms: u64,
    /// Default maximum attempts of a job (first run included).
    pub max_attempts: u32,
    /// First retry delay (ms); doubles each attempt.
    pub backoff_base_ms: u64,
    /// Upper bound of one retry delay (ms).
    pub backoff_max_ms: u64,
    /// Bounded wait (ms) for running jobs at shutdown; jobs still running after it stay
    /// un-acknowledged and are reclaimed by another worker.
    pub shutdown_grace_ms: u64,
    /// How long finished jobs stay readable (s).
    pub retention_s: u64,
    /// How long an idempotency key remembers its first job (s).
    pub idempotency_ttl_s: u64,
    /// Jobs of one queue run at the same time in one instance.
    pub default_concurrency: usize,
    /// Whether `app serve` also runs workers (else only `app worker` processes do).
    pub workers_in_serve: bool,
    /// Per-queue overrides.
    pub queues: std::collections::BTreeMap<String, QueueOverride>,
}

/// Per-queue settings that differ from the defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueOverride {
    /// Jobs of this queue run at the same time in one instance.
    pub concurrency: Option<usize>,
    /// Jobs of this queue started per second across all instances (a Redis-side window).
    pub rate_limit_per_s: Option<u32>,
    /// Maximum attempts for jobs of this queue.
    pub max_attempts: Option<u32>,
}

/// The broker behind the queue interface.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// Redis Streams with a consumer group (lowest latency, one moving part less).
    #[default]
    Redis,
    /// RabbitMQ (AMQP 0-9-1): durable queues, publisher confirms, topic routing.
    Rabbitmq,
}

impl QueueBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueBackend::Redis => "redis",
            QueueBackend::Rabbitmq => "rabbitmq",
        }
    }
}

impl std::str::FromStr for QueueBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "redis" => Ok(QueueBackend::Redis),
            "rabbitmq" => Ok(QueueBackend::Rabbitmq),
            other => Err(format!(
                "unknown queue backend {other:?} (redis or rabbitmq)"
            )),
        }
    }
}

impl std::fmt::Display for QueueBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            backend: QueueBackend::Redis,
            rabbitmq_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            rabbitmq_publish_timeout_ms: 30_000,
            redis_url: None,
            key_prefix: "q".into(),
            partitions: 1,
            redis_retry_ms: 8_000,
            idle_poll_ms: 50,
            group: "workers".into(),
            claim_idle_ms: 30_000,
            block_ms: 1_000,
            mover_interval_ms: 200,
            max_attempts: 5,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            shutdown_grace_ms: 10_000,
            retention_s: 7 * 24 * 3600,
            idempotency_ttl_s: 24 * 3600,
            default_concurrency: 8,
            workers_in_serve: true,
            queues: Default::default(),
        }
    }
}

impl QueueSettings {
    /// Checks the values; the error names the field and the reason.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad =
            |field: &str, reason: &str| Err(QueueError::config(format!("queue.{field}"), reason));
        if self.key_prefix.is_empty()
            || self
                .key_prefix
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            return bad(
                "key_prefix",
                "must be non-empty without spaces or braces (braces are Redis Cluster hash tags)",
            );
        }
        if !(1..=1024).contains(&self.partitions) {
            return bad("partitions", "must be between 1 and 1024");
        }
        if self.redis_retry_ms > 600_000 {
            return bad("redis_retry_ms", "must be at most 600000");
        }
        if self.idle_poll_ms == 0 || self.idle_poll_ms > 10_000 {
            return bad("idle_poll_ms", "must be between 1 and 10000");
        }
        if self.backend == QueueBackend::Rabbitmq
            && !(self.rabbitmq_url.starts_with("amqp://")
                || self.rabbitmq_url.starts_with("amqps://"))
        {
            return bad("rabbitmq_url", "must be an amqp:// URL");
        }
        if self.backend == QueueBackend::Rabbitmq && self.rabbitmq_url.starts_with("amqps://") {
            return bad(
                "rabbitmq_url",
                "amqps:// is not supported (built without TLS)",
            );
        }
        if self.rabbitmq_publish_timeout_ms == 0 {
            return bad("rabbitmq_publish_timeout_ms", "must be at least 1");
        }
        if self.default_concurrency > usize::from(u16::MAX) {
            return bad("default_concurrency", "must be at most 65535");
        }
        if self.group.is_empty() {
            return bad("group", "must be non-empty");
        }
        if self.claim_idle_ms < 200 {
            return bad("claim_idle_ms", "must be at least 200");
        }
        if self.block_ms == 0 || self.block_ms > 10_000 {
            return bad("block_ms", "must be between 1 and 10000");
        }
        if self.mover_interval_ms == 0 {
            return bad("mover_interval_ms", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return bad("backoff_base_ms", "must not exceed backoff_max_ms");
        }
        if self.default_concurrency == 0 {
            return bad("default_concurrency", "must be at least 1");
        }
        for (name, q) in &self.queues {
            super::keys::validate_queue_name(name)
                .map_err(|e| QueueError::config(format!("queue.queues.{name}"), e))?;
            if q.concurrency == Some(0) {
                return bad(&format!("queues.{name}.concurrency"), "must be at least 1");
            }
            if q.rate_limit_per_s == Some(0) {
                return bad(
                    &format!("queues.{name}.rate_limit_per_s"),
                    "must be at least 1",
                );
            }
            if q.max_attempts == Some(0) {
                return bad(&format!("queues.{name}.max_attempts"), "must be at least 1");
            }
        }
        Ok(())
    }

    pub fn concurrency(&self, queue: &str) -> usize {
        self.queues
            .get(queue)
            .and_then(|q| q.concurrency)
            .unwrap_or(self.default_concurrency)
    }

    pub fn rate_limit(&self, queue: &str) -> Option<u32> {
        self.queues.get(queue).and_then(|q| q.rate_limit_per_s)
    }

    pub fn max_attempts(&self, queue: &str) -> u32 {
        self.queues
            .get(queue)
            .and_then(|q| q.max_attempts)
            .unwrap_or(self.max_attempts)
    }

    pub fn claim_idle(&self) -> Duration {
        Duration::from_millis(self.claim_idle_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn redis_retry(&self) -> Duration {
        Duration::from_millis(self.redis_retry_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        QueueSettings::default().validate().expect("defaults valid");
    }

    #[test]
    fn errors_name_the_field() {
        let s = QueueSettings {
            claim_idle_ms: 5,
            ..Default::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("queue.claim_idle_ms"), "{e}");

        let mut s = QueueSettings::default();
        s.queues.insert(
            "tasks".into(),
            QueueOverride {
                concurrency: Some(0),
                ..Default::default()
            },
        );
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("queues.tasks.concurrency"), "{e}");

        for (s, field) in [
            (
                QueueSettings {
                    key_prefix: "{q}".into(),
                    ..Default::default()
                },
                "queue.key_prefix",
            ),
            (
                QueueSettings {
                    partitions: 0,
                    ..Default::default()
                },
                "queue.partitions",
            ),
        ] {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn toml_overrides() {
        let s: QueueSettings = toml::from_str(
            "claim_idle_ms = 1000\n[queues.tasks]\nconcurrency = 3\nrate_limit_per_s = 20\n",
        )
        .expect("parse");
        assert_eq!(s.concurrency("tasks"), 3);
        assert_eq!(s.concurrency("other"), 8);
        assert_eq!(s.rate_limit("tasks"), Some(20));
        assert!(toml::from_str::<QueueSettings>("nope = 1").is_err());
        let s: QueueSettings =
            toml::from_str("backend = \"rabbitmq\"\nrabbitmq_url = \"amqp://h:1/%2f\"\n")
                .expect("parse");
        assert_eq!(s.backend, QueueBackend::Rabbitmq);
        s.validate().expect("valid");
        let bad = QueueSettings {
            backend: QueueBackend::Rabbitmq,
            rabbitmq_url: "http://x".into(),
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("rabbitmq_url")
        );
    }
}
