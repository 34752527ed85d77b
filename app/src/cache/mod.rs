//! The two-level read-through cache (design seed 3.1-3.3).
//!
//! Read path of [`Cache::get`]: L1 (moka) -> coalesce concurrent misses of one key ->
//! L2 (Redis; fresh, stale or negative entries) -> Bloom filter -> cross-instance rebuild
//! lock -> database. Redis failures never fail a request: the breaker skips Redis and the
//! value comes from the database. Write path (`write`): database first, then delete the
//! L2 entry, drop L1 here and, over pub/sub, on every instance, and delete again later from
//! the scheduler. Background tasks (`background`): the invalidation subscriber, the
//! delayed-delete scheduler and the Bloom filter keeper.

mod background;
mod bloom;
mod breaker;
mod envelope;
mod keys;
mod l1;
mod l2;
mod singleflight;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

pub use bloom::{BloomAnswer, BloomParams};
pub use breaker::BreakerState;
pub use envelope::Cached;
pub use keys::{Entity, Key, KeySpace};

use crate::config::{CacheConfig, RedisConfig};
use crate::metrics::Metrics;
use crate::store::{StoreError, now_ms};
use app_redis::RedisMode;
use breaker::Breaker;
use envelope::Envelope;
use l1::L1;
use l2::L2;
use singleflight::SingleFlight;
use write::Job;

/// A database failure behind a cache fill, shared by every caller of one coalesced load.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub Arc<StoreError>);

/// Why the cache could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis.url: {0}")]
    Url(#[from] app_redis::TargetError),
    #[error("redis.url: {0}")]
    Redis(#[from] l2::L2Error),
}

/// `d` spread by up to `pct` percent either way, so keys written together expire apart.
pub(crate) fn jitter(d: Duration, pct: u8) -> Duration {
    if pct == 0 {
        return d;
    }
    let f = f64::from(pct) / 100.0;
    d.mul_f64(rand::thread_rng().gen_range((1.0 - f)..=(1.0 + f)))
}

type Flight = Result<Cached, LoadError>;

/// The cache. Cheap to clone; every clone shares L1, the Redis connection and the breaker.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CacheConfig,
    instance: String,
    keys: KeySpace,
    l1: Option<L1>,
    l2: Option<L2>,
    bloom: Option<BloomParams>,
    flights: SingleFlight<Flight>,
    metrics: Metrics,
    jobs: mpsc::Sender<Job>,
    jobs_rx: std::sync::Mutex<Option<mpsc::Receiver<Job>>>,
}

impl Cache {
    pub fn new(
        cfg: &CacheConfig,
        redis: &RedisConfig,
        instance: &str,
        metrics: Metrics,
    ) -> Result<Self, CacheError> {
        let l1 = cfg.l1_enabled.then(|| {
            L1::new(
                cfg.l1_max_entries,
                Duration::from_millis(cfg.l1_ttl_ms),
                Duration::from_millis(cfg.negative_ttl_ms),
                Duration::from_millis(cfg.l1_stale_ms),
                cfg.ttl_jitter_pct,
            )
        });
        // Redis also carries invalidations and the Bloom filter, so it is used whenever L2
        // or the filter is on.
        let target = app_redis::RedisTarget::parse(&redis.url)?;
        let l2 = if cfg.l2_enabled || cfg.bloom_enabled {
            let breaker = Breaker::new(
                cfg.breaker_failures,
                Duration::from_millis(cfg.breaker_open_ms),
                metrics.breaker_state.clone(),
                metrics.breaker_opened.clone(),
            );
            tracing::info!(redis = %target.describe(), "cache uses redis");
            Some(L2::new(
                &target,
                redis.command_timeout(),
                Duration::from_millis(redis.connect_timeout_ms),
                cfg.l2_coalesce_reads,
                breaker,
                metrics.redis_errors.clone(),
            )?)
        } else {
            None
        };
        let bloom = cfg
            .bloom_enabled
            .then(|| BloomParams::new(cfg.bloom_bits_log2, cfg.bloom_hashes));
        let (tx, rx) = mpsc::channel(write::QUEUE_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                instance: instance.to_string(),
                keys: KeySpace::new(
                    &cfg.key_prefix,
                    &cfg.invalidation_channel,
                    (target.mode() == RedisMode::Cluster).then_some(cfg.invalidation_shards),
                ),
                l1,
                l2,
                bloom,
                flights: SingleFlight::default(),
                metrics,
                jobs: tx,
                jobs_rx: std::sync::Mutex::new(Some(rx)),
            }),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.l2.as_ref().map(|l2| l2.breaker().state())
    }

    fn l2_for_values(&self) -> Option<&L2> {
        if self.inner.cfg.l2_enabled {
            self.inner.l2.as_ref()
        } else {
            None
        }
    }

    /// Reads `key` through the cache; `load` reads the database (the record's JSON, or
    /// `None` when there is no such record). Only a database failure is an error.
    pub async fn get<F, Fut>(&self, key: Key, load: F) -> Result<Cached, LoadError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<axum::body::Bytes>, StoreError>>,
    {
        let m = &self.inner.metrics;
        let generation = match &self.inner.l1 {
            Some(l1) => {
                if let Some(v) = l1.get(&key).await {
                    let result = if matches!(v, Cached::Found(_)) {
                        "hit"
                    } else {
                        "negative"
                    };
                    m.cache_lookups.with_label_values(&["l1", result]).inc();
                    return Ok(v);
                }
                m.cache_lookups.with_label_values(&["l1", "miss"]).inc();
                Some(l1.generation(&key))
            }
            None => None,
        };
        let flight_key = key.to_string();
        let (res, shared) = self
            .inner
            .flights
            .run(&flight_key, || self.fill(key, load))
            .await;
        if shared {
            m.coalesced.inc();
        } else if let (Some(l1), Some(g), Ok(v)) = (&self.inner.l1, generation, &res) {
            l1.insert_if_current(key, v.clone(), g).await;
        }
        // Every source failed (Redis and the database): a record this instance had, past its
        // TTL but not invalidated since, beats a 503.
        if res.is_err()
            && let Some(l1) = &self.inner.l1
            && let Some(v) = l1.get_stale(&key).await
        {
            m.cache_lookups.with_label_values(&["l1", "stale"]).inc();
            return Ok(v);
        }
        res
    }

    /// Everything below L1, run once per key at a time in this instance.
    async fn fill<F, Fut>(&self, key: Key, load: F) -> Flight
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<axum::body::Bytes>, StoreError>>,
    {
        let m = &self.inner.metrics;
        let Some(l2) = self.l2_for_values() else {
            if self.bloom_check(key).await == BloomAnswer::Absent {
                return Ok(Cached::Missing);
            }
            return self.load_db(key, load).await;
        };
        let vkey = self.inner.keys.value(&key);
        let stale = match l2.get(&vkey).await {
            Ok(Some(raw)) => match Envelope::decode(raw) {
                Some(env) if env.is_fresh(now_ms()) => {
                    let result = if matches!(env.value, Cached::Found(_)) {
                        "hit"
                    } else {
                        "negative"
                    };
                    m.cache_lookups.with_label_values(&["l2", result]).inc();
                    return Ok(env.value);
                }
                Some(env) => {
                    m.cache_lookups.with_label_values(&["l2", "stale"]).inc();
                    Some(env.value)
                }
                None => None,
            },
            Ok(None) => {
                m.cache_lookups.with_label_values(&["l2", "miss"]).inc();
                None
            }
            // Redis failed or the breaker is open: straight to the database.
            Err(_) => return self.load_db(key, load).await,
        };
        if stale.is_none() && self.bloom_check(key).await == BloomAnswer::Absent {
            return Ok(Cached::Missing);
        }
        self.rebuild(l2, key, &vkey, stale, load).await
    }

    /// One instance rebuilds (holder of `SET NX PX`); the others serve the stale value or
    /// wait a bounded time for the rebuilt one, then load it themselves.
    async fn rebuild<F, Fut>(
        &self,
        l2: &L2,
        key: Key,
        vkey: &str,
        stale: Option<Cached>,
        load: F,
    ) -> Flight
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<axum::body::Bytes>, StoreError>>,
    {
        let cfg = &self.inner.cfg;
        let lock_key = self.inner.keys.lock(&key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let lock_ttl = Duration::from_millis(cfg.lock_ttl_ms);
        let outcome = |o: &str| self.inner.metrics.lock_waits.with_label_values(&[o]).inc();
        match l2.try_lock(&lock_key, &token, lock_ttl).await {
            Ok(true) => {
                outcome("acquired");
                // Another instance may have finished its rebuild just before we got the lock.
                if stale.is_none()
                    && let Ok(Some(raw)) = l2.get(vkey).await
                    && let Some(env) = Envelope::decode(raw)
                    && env.is_fresh(now_ms())
                {
                    let _ = l2.unlock(&lock_key, &token).await;
                    return Ok(env.value);
                }
                let res = self.load_db(key, load).await;
                let _ = l2.unlock(&lock_key, &token).await;
                res
            }
            Ok(false) => {
                if let Some(v) = stale {
                    outcome("stale_served");
                    return Ok(v);
                }
                let deadline =
                    tokio::time::Instant::now() + Duration::from_millis(cfg.lock_wait_ms);
                let poll = Duration::from_millis(cfg.lock_poll_ms);
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(poll).await;
                    match l2.get(vkey).await {
                        Ok(Some(raw)) => {
                            if let Some(env) =
                                Envelope::decode(raw).filter(|e| e.is_fresh(now_ms()))
                            {
                                outcome("waited_hit");
                                return Ok(env.value);
                            }
                        }
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
                outcome("waited_timeout");
                self.load_db(key, load).await
            }
            Err(_) => self.load_db(key, load).await,
        }
    }

    /// Reads the database and, when L2 is on, stores the answer there with a jittered TTL
    /// (short for "not found").
    async fn load_db<F, Fut>(&self, key: Key, load: F) -> Flight
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<axum::body::Bytes>, StoreError>>,
    {
        self.inner
            .metrics
            .db_loads
            .with_label_values(&[key.entity.as_str()])
            .inc();
        let value = match load().await {
            Ok(Some(b)) => Cached::Found(b),
            Ok(None) => Cached::Missing,
            Err(e) => return Err(LoadError(Arc::new(e))),
        };
        if let Some(l2) = self.l2_for_values() {
            let cfg = &self.inner.cfg;
            let (fresh, stale) = match value {
                Cached::Found(_) => (
                    jitter(Duration::from_millis(cfg.l2_ttl_ms), cfg.ttl_jitter_pct),
                    Duration::from_millis(cfg.l2_stale_ms),
                ),
                Cached::Missing => (
                    jitter(
                        Duration::from_millis(cfg.negative_ttl_ms),
                        cfg.ttl_jitter_pct,
                    ),
                    Duration::ZERO,
                ),
            };
            let env = Envelope {
                fresh_until_ms: now_ms() + fresh.as_millis() as i64,
                value: value.clone(),
            };
            // A failed write only costs a later miss.
            let _ = l2
                .set_px(&self.inner.keys.value(&key), &env.encode(), fresh + stale)
                .await;
        }
        Ok(value)
    }

    /// Asks the shared Bloom filter whether `key` can exist.
    pub async fn bloom_check(&self, key: Key) -> BloomAnswer {
        let answer = match (&self.inner.bloom, &self.inner.l2) {
            (Some(params), Some(l2)) => {
                let ks = &self.inner.keys;
                match l2
                    .bloom_check(
                        &ks.bloom_bits(key.entity),
                        &ks.bloom_ready(key.entity),
                        &params.positions(key.id),
                    )
                    .await
                {
                    Ok(0) => BloomAnswer::Absent,
                    Ok(1) => BloomAnswer::Maybe,
                    _ => BloomAnswer::Unknown,
                }
            }
            _ => BloomAnswer::Unknown,
        };
        let label = match answer {
            BloomAnswer::Absent => "absent",
            BloomAnswer::Maybe => "maybe",
            BloomAnswer::Unknown => "unknown",
        };
        self.inner
            .metrics
            .bloom_checks
            .with_label_values(&[label])
            .inc();
        answer
    }

    /// Entries in this instance's L1 (tests, diagnostics).
    pub fn l1_entries(&self) -> u64 {
        self.inner.l1.as_ref().map(L1::entry_count).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::jitter;

    /// Avalanche protection: TTLs drawn for keys written at the same moment spread evenly
    /// over the whole ±pct band, so the keys do not expire together.
    #[test]
    fn jitter_spreads_ttls_over_the_band() {
        let d = Duration::from_secs(600);
        let (lo, hi) = (d.mul_f64(0.9), d.mul_f64(1.1));
        let ttls: Vec<Duration> = (0..10_000).map(|_| jitter(d, 10)).collect();
        assert!(
            ttls.iter().all(|t| (lo..=hi).contains(t)),
            "a TTL outside {lo:?}..={hi:?}"
        );
        // Ten equal slices of the band hold 1,000 each on average; 700 is 10 standard
        // deviations below.
        let mut slices = [0usize; 10];
        for t in &ttls {
            let f = (*t - lo).as_secs_f64() / (hi - lo).as_secs_f64();
            slices[((f * 10.0) as usize).min(9)] += 1;
        }
        assert!(
            slices.iter().all(|n| *n >= 700),
            "uneven spread: {slices:?}"
        );
        // Expiry instants rarely coincide: 10,000 draws over 120,000 ms share about 400.
        let distinct: BTreeSet<u128> = ttls.iter().map(Duration::as_millis).collect();
        assert!(distinct.len() > 9_000, "{} distinct ms", distinct.len());
    }

    #[test]
    fn zero_jitter_keeps_the_ttl() {
        let d = Duration::from_millis(1234);
        assert!((0..100).all(|_| jitter(d, 0) == d));
    }
}
