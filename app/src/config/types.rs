//! The configuration structs, their defaults and their validation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use app_redis::RedisTarget;

/// The whole configuration. Unknown keys are errors, so typos do not pass silently.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Name of this instance in logs and cache invalidation messages (default: hostname-pid).
    pub instance_id: Option<String>,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub http: HttpConfig,
    pub registration: RegistrationConfig,
    pub shutdown: ShutdownConfig,
    pub queue: crate::queue::QueueSettings,
    pub tasks: crate::tasks::TaskSettings,
    pub orders: crate::orders::OrderSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            instance_id: None,
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            cache: CacheConfig::default(),
            http: HttpConfig::default(),
            registration: RegistrationConfig::default(),
            shutdown: ShutdownConfig::default(),
            queue: Default::default(),
            tasks: Default::default(),
            orders: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing; `sqlite::memory:` for a private in-memory database)
    /// or `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://app.db".into(),
            max_connections: 10,
            connect_timeout_ms: 5_000,
        }
    }
}

/// Which database a URL names; decided once, when the config is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseConfig {
    pub fn kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = self.url.as_str();
        if url.starts_with("sqlite:") {
            Ok(DatabaseKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseKind::Postgres)
        } else {
            Err(ConfigError::invalid(
                "database.url",
                format!("`{url}` must start with sqlite: or postgres://"),
            ))
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis for the L2 cache, the Bloom filter, locks and invalidation messages: one server
    /// (`redis://`), a Sentinel set (`redis+sentinel://H1,H2,H3/MASTER`) or a Redis Cluster
    /// (`redis+cluster://H1,H2,H3`); grammar in `app_redis::RedisTarget`.
    pub url: String,
    /// Bound on one Redis command; a slower answer counts as a failure (served from the database).
    pub command_timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            command_timeout_ms: 250,
            connect_timeout_ms: 1_000,
        }
    }
}

impl RedisConfig {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// The parsed `redis.url`: which mode the app will use.
    pub fn target(&self) -> Result<RedisTarget, ConfigError> {
        RedisTarget::parse(&self.url).map_err(|e| ConfigError::invalid("redis.url", e.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Prefix of every cache key in Redis (several apps can share one Redis).
    pub key_prefix: String,
    /// L1: in-process cache (moka).
    pub l1_enabled: bool,
    pub l1_ttl_ms: u64,
    pub l1_max_entries: u64,
    /// After its TTL an L1 value is kept this long more and served only when both Redis and
    /// the database fail (stale-if-error); a write or an invalidation drops it. 0: never.
    pub l1_stale_ms: u64,
    /// L2: Redis.
    pub l2_enabled: bool,
    pub l2_ttl_ms: u64,
    /// Concurrent L2 reads share one MGET (one write and one read on the Redis socket, one
    /// command in Redis) while an earlier batch is in flight; false sends each GET by itself.
    /// Ignored in a Redis Cluster, where keys of one batch live on different slots.
    pub l2_coalesce_reads: bool,
    /// After the logical TTL an L2 value is stale: kept this long more so other instances can
    /// serve it while one instance rebuilds it.
    pub l2_stale_ms: u64,
    /// TTLs are spread by up to this percent (plus or minus) so keys do not expire together.
    pub ttl_jitter_pct: u8,
    /// How long a "not found" answer is cached (L1 and L2).
    pub negative_ttl_ms: u64,
    /// Second delete of a written key, done by the scheduler this long after the write.
    pub delayed_delete_ms: u64,
    /// Cross-instance rebuild lock (SET NX PX): its lifetime, how long others wait for the
    /// rebuilt value before loading it themselves, and how often they look.
    pub lock_ttl_ms: u64,
    pub lock_wait_ms: u64,
    pub lock_poll_ms: u64,
    /// Pub/sub channel (under the key prefix) carrying L1 invalidations between instances.
    pub invalidation_channel: String,
    /// In a Redis Cluster: number of sharded pub/sub channels the invalidations are spread
    /// over (so they do not all load one master); the channel names derive from it, so every
    /// instance must use the same value. Ignored on a single server or Sentinel.
    pub invalidation_shards: u32,
    /// Bloom filter of existing ids, kept in Redis.
    pub bloom_enabled: bool,
    pub bloom_bits_log2: u8,
    pub bloom_hashes: u8,
    /// How often each instance checks that the shared filter exists (and rebuilds it if not).
    pub bloom_check_interval_ms: u64,
    /// Circuit breaker on Redis: consecutive failures that open it, and how long it stays
    /// open before one probe is let through.
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            key_prefix: "app".into(),
            l1_enabled: true,
            l1_ttl_ms: 5_000,
            l1_max_entries: 100_000,
            l1_stale_ms: 30_000,
            l2_enabled: true,
            l2_ttl_ms: 300_000,
            l2_coalesce_reads: true,
            l2_stale_ms: 30_000,
            ttl_jitter_pct: 10,
            negative_ttl_ms: 5_000,
            delayed_delete_ms: 500,
            lock_ttl_ms: 3_000,
            lock_wait_ms: 1_000,
            lock_poll_ms: 10,
            invalidation_channel: "invalidate".into(),
            invalidation_shards: 16,
            bloom_enabled: true,
            bloom_bits_log2: 24,
            bloom_hashes: 7,
            bloom_check_interval_ms: 5_000,
            breaker_failures: 5,
            breaker_open_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Whole-request bound; a handler running longer gets a JSON 503.
    pub request_timeout_ms: u64,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    pub rate_limit: RateLimitConfig,
    /// Adds `/debug/panic` and `/debug/sleep?ms=` (tests and drills only; admin routes).
    pub debug_routes: bool,
    /// Bearer token of the admin routes (dead letters, stock changes, debug), or a file
    /// holding it (the file wins). Neither: admin routes answer 403.
    pub admin_token: Option<String>,
    pub admin_token_file: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            rate_limit: RateLimitConfig::default(),
            debug_routes: false,
            admin_token: None,
            admin_token_file: None,
        }
    }
}

/// Per-client-IP token bucket on the API routes (health, readiness and metrics are exempt
/// so a balancer's probes are never refused).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: the burst a fresh client may send at once.
    pub burst: u32,
    /// Clients tracked at most; idle buckets are dropped first.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 200.0,
            burst: 400,
            max_clients: 100_000,
        }
    }
}

/// Self-registration with the balancer's control planes (lbd's API).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Base URLs of every control plane (usually the active and the backup balancer).
    /// Empty: registration is off.
    pub control_planes: Vec<String>,
    /// The VIP's name in lbd's config.
    pub vip: String,
    /// This backend's address as the balancer sees it.
    pub address: String,
    /// More VIPs this backend serves, each with the address that VIP reaches it at. A
    /// dual-stack service is one VIP per family on the balancer (as with IPVS or Katran), so
    /// beside `vip = "web"`, `address = "10.77.0.11"` a backend lists
    /// `[{ vip = "web-v6", address = "fd77::11" }]`.
    pub extra_vips: Vec<VipMembership>,
    pub weight: u32,
    /// Bearer token, or a file holding it (the file wins when both are set).
    pub token: Option<String>,
    pub token_file: Option<String>,
    /// Retry backoff for an unreachable control plane.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Bound on one API call.
    pub request_timeout_ms: u64,
    /// Re-register this often (0: never) so a restarted control plane learns about us again.
    pub refresh_ms: u64,
    /// Check this host's direct-server-return setup for the VIP this often (on start too;
    /// 0: never) and send the findings with the registrations: lbd gives no new flows to a
    /// backend whose setup would black-hole them (docs/troubleshooting.md).
    pub self_check_interval_ms: u64,
}

/// One VIP this backend registers with, and its own address for that VIP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VipMembership {
    pub vip: String,
    pub address: String,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            control_planes: Vec::new(),
            vip: String::new(),
            address: String::new(),
            extra_vips: Vec::new(),
            weight: 100,
            token: None,
            token_file: None,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            request_timeout_ms: 2_000,
            refresh_ms: 30_000,
            self_check_interval_ms: 60_000,
        }
    }
}

impl RegistrationConfig {
    pub fn enabled(&self) -> bool {
        !self.control_planes.is_empty()
    }

    /// Every (VIP, address) this backend registers: `vip`/`address` first, then `extra_vips`.
    pub fn memberships(&self) -> Vec<VipMembership> {
        let first = VipMembership {
            vip: self.vip.clone(),
            address: self.address.clone(),
        };
        std::iter::once(first)
            .chain(self.extra_vips.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After draining on the control planes and reporting not-ready, keep accepting for this
    /// long so flows already steered here still land.
    pub drain_delay_ms: u64,
    /// Bound on finishing in-flight requests.
    pub grace_ms: u64,
    /// Bound on each control-plane call during shutdown (drain, deregister).
    pub control_plane_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay_ms: 1_000,
            grace_ms: 10_000,
            control_plane_timeout_ms: 2_000,
        }
    }
}

fn positive(field: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(ConfigError::invalid(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}

impl Config {
    /// Checks value ranges and cross-field rules; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.kind()?;
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be greater than 0",
            ));
        }
        positive(
            "database.connect_timeout_ms",
            self.database.connect_timeout_ms,
        )?;
        self.redis.target()?;
        // The queue runs on any of the three modes too (its own URL, or redis.url).
        if let Some(url) = self.queue.redis_url.as_deref() {
            RedisTarget::parse(url)
                .map_err(|e| ConfigError::invalid("queue.redis_url", e.to_string()))?;
        }
        if self.queue.redis_retry_ms >= self.http.request_timeout_ms {
            return Err(ConfigError::invalid(
                "queue.redis_retry_ms",
                format!(
                    "must be below http.request_timeout_ms ({} ms): a request waiting through a \
                     failover would time out first",
                    self.http.request_timeout_ms
                ),
            ));
        }
        positive("redis.command_timeout_ms", self.redis.command_timeout_ms)?;
        positive("redis.connect_timeout_ms", self.redis.connect_timeout_ms)?;
        let c = &self.cache;
        if c.key_prefix.is_empty()
            || c.key_prefix
                .contains(|ch: char| ch.is_whitespace() || ch == '{' || ch == '}')
        {
            return Err(ConfigError::invalid(
                "cache.key_prefix",
                "must be non-empty without spaces or braces (braces are Redis Cluster hash tags)",
            ));
        }
        if !(1..=1024).contains(&c.invalidation_shards) {
            return Err(ConfigError::invalid(
                "cache.invalidation_shards",
                "must be between 1 and 1024",
            ));
        }
        positive("cache.l1_ttl_ms", c.l1_ttl_ms)?;
        positive("cache.l1_max_entries", c.l1_max_entries)?;
        positive("cache.l2_ttl_ms", c.l2_ttl_ms)?;
        positive("cache.negative_ttl_ms", c.negative_ttl_ms)?;
        positive("cache.lock_ttl_ms", c.lock_ttl_ms)?;
        positive("cache.lock_poll_ms", c.lock_poll_ms)?;
        positive("cache.bloom_check_interval_ms", c.bloom_check_interval_ms)?;
        positive("cache.breaker_open_ms", c.breaker_open_ms)?;
        if c.ttl_jitter_pct > 50 {
            return Err(ConfigError::invalid(
                "cache.ttl_jitter_pct",
                "must be at most 50",
            ));
        }
        if !(10..=32).contains(&c.bloom_bits_log2) {
            return Err(ConfigError::invalid(
                "cache.bloom_bits_log2",
                "must be between 10 and 32 (Redis bitmaps hold 2^32 bits)",
            ));
        }
        if !(1..=20).contains(&c.bloom_hashes) {
            return Err(ConfigError::invalid(
                "cache.bloom_hashes",
                "must be between 1 and 20",
            ));
        }
        if c.breaker_failures == 0 {
            return Err(ConfigError::invalid(
                "cache.breaker_failures",
                "must be greater than 0",
            ));
        }
        if c.invalidation_channel.is_empty() {
            return Err(ConfigError::invalid(
                "cache.invalidation_channel",
                "must not be empty",
            ));
        }
        positive("http.request_timeout_ms", self.http.request_timeout_ms)?;
        if self.http.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                "http.body_limit_bytes",
                "must be greater than 0",
            ));
        }
        let rl = &self.http.rate_limit;
        if rl.enabled {
            if !(rl.per_second.is_finite() && rl.per_second > 0.0) {
                return Err(ConfigError::invalid(
                    "http.rate_limit.per_second",
                    "must be a positive number",
                ));
            }
            if rl.burst == 0 {
                return Err(ConfigError::invalid(
                    "http.rate_limit.burst",
                    "must be greater than 0",
                ));
            }
            if rl.max_clients == 0 {
                return Err(ConfigError::invalid(
                    "http.rate_limit.max_clients",
                    "must be greater than 0",
                ));
            }
        }
        let r = &self.registration;
        if r.enabled() {
            for (i, cp) in r.control_planes.iter().enumerate() {
                if !(cp.starts_with("http://") || cp.starts_with("https://")) {
                    return Err(ConfigError::invalid(
                        format!("registration.control_planes[{i}]"),
                        format!("`{cp}` must start with http:// or https://"),
                    ));
                }
            }
            for (i, m) in r.memberships().iter().enumerate() {
                let field = |key: &str| match i {
                    0 => format!("registration.{key}"),
                    _ => format!("registration.extra_vips[{}].{key}", i - 1),
                };
                if m.vip.is_empty() {
                    return Err(ConfigError::invalid(
                        field("vip"),
                        "required when control_planes is set",
                    ));
                }
                if m.address.parse::<std::net::IpAddr>().is_err() {
                    return Err(ConfigError::invalid(
                        field("address"),
                        format!("`{}` is not an IP address", m.address),
                    ));
                }
                if r.memberships()[..i].iter().any(|o| o.vip == m.vip) {
                    return Err(ConfigError::invalid(
                        field("vip"),
                        format!("`{}` is listed twice", m.vip),
                    ));
                }
            }
            if r.token.is_none() && r.token_file.is_none() {
                return Err(ConfigError::invalid(
                    "registration.token",
                    "a token or token_file is required when control_planes is set",
                ));
            }
        }
        // The `[queue]`, `[tasks]` and `[orders]` tables are checked by the modules they
        // configure.
        let named = |table: &str, e: crate::queue::QueueError| match e {
            crate::queue::QueueError::Config { field, reason } => {
                ConfigError::invalid(field, reason)
            }
            other => ConfigError::invalid(table, other.to_string()),
        };
        self.queue.validate().map_err(|e| named("queue", e))?;
        self.tasks.validate().map_err(|e| named("tasks", e))?;
        self.orders.validate().map_err(|e| named("orders", e))?;
        Ok(())
    }

    /// This instance's name: the configured one, else `hostname-pid-random` (the random part
    /// keeps several instances in one process apart: each skips its own invalidations).
    /// Call once per instance.
    pub fn instance_name(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            let host = if host.is_empty() { "app" } else { &host };
            format!(
                "{host}-{}-{:04x}",
                std::process::id(),
                rand::random::<u16>()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use app_redis::RedisMode;

    #[test]
    fn empty_config_is_valid() {
        let c = Config::from_toml_str("").unwrap();
        assert!(c.cache.l1_enabled);
        assert!(!c.registration.enabled());
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::from_toml_str("[cache]\nl1_ttl = 5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache") && e.contains("l1_ttl"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::from_toml_str("[cache]\nl1_ttl_ms = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.l1_ttl_ms"), "{e}");
    }

    #[test]
    fn bad_database_url_is_named() {
        let e = Config::from_toml_str("[database]\nurl = \"mysql://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");
    }

    #[test]
    fn redis_url_modes() {
        let c = Config::from_toml_str(
            "[redis]\nurl = \"redis+cluster://127.0.0.1:7000,127.0.0.1:7001\"\n[queue]\nredis_url = \"redis://127.0.0.1:6379\"",
        )
        .unwrap();
        assert_eq!(c.redis.target().unwrap().mode(), RedisMode::Cluster);
        let e = Config::from_toml_str("[redis]\nurl = \"redis+sentinel://a,b,c\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis.url") && e.contains("master"), "{e}");
        // The queue runs on every mode too.
        let c = Config::from_toml_str(
            "[redis]\nurl = \"redis+sentinel://a,b,c/m\"\n[queue]\nredis_url = \"redis+cluster://a\"\npartitions = 6",
        )
        .unwrap();
        assert_eq!(c.queue.partitions, 6);
        let e = Config::from_toml_str("[queue]\nredis_url = \"redis+cluster://a/3\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue.redis_url"), "{e}");
        let e = Config::from_toml_str("[queue]\nredis_retry_ms = 10000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue.redis_retry_ms"), "{e}");
        let e = Config::from_toml_str("[cache]\nkey_prefix = \"a{b}\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.key_prefix"), "{e}");
    }

    #[test]
    fn registration_needs_vip_address_token() {
        let e = Config::from_toml_str("[registration]\ncontrol_planes = [\"http://127.0.0.1:1\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("registration.vip"), "{e}");
        let e = Config::from_toml_str(
            "[registration]\ncontrol_planes = [\"http://127.0.0.1:1\"]\nvip = \"web\"\naddress = \"nope\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("registration.address"), "{e}");
    }

    #[test]
    fn extra_vips_are_checked_like_the_first() {
        let base = "[registration]\ncontrol_planes = [\"http://127.0.0.1:1\"]\ntoken = \"t\"\nvip = \"web\"\naddress = \"10.0.0.1\"\n";
        let ok = Config::from_toml_str(&format!(
            "{base}extra_vips = [{{ vip = \"web-v6\", address = \"fd00::1\" }}]"
        ))
        .unwrap();
        let names: Vec<_> = ok
            .registration
            .memberships()
            .into_iter()
            .map(|m| (m.vip, m.address))
            .collect();
        assert_eq!(
            names,
            [
                ("web".to_string(), "10.0.0.1".to_string()),
                ("web-v6".to_string(), "fd00::1".to_string())
            ]
        );
        let e = Config::from_toml_str(&format!(
            "{base}extra_vips = [{{ vip = \"web-v6\", address = \"nope\" }}]"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("registration.extra_vips[0].address"), "{e}");
        let e = Config::from_toml_str(&format!(
            "{base}extra_vips = [{{ vip = \"web\", address = \"fd00::1\" }}]"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("registration.extra_vips[0].vip"), "{e}");
    }
}
