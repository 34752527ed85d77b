//! L1: the in-process cache (moka), bounded in size, with a short TTL for records and a
//! shorter or equal one for "not found".
//!
//! Invalidation bumps a generation counter of the key's stripe before dropping the entry; a
//! fill started before the bump does not store its (possibly old) value afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::envelope::Cached;
use super::jitter;
use super::keys::Key;

const STRIPES: usize = 1024;

struct TtlPolicy {
    found: Duration,
    missing: Duration,
    jitter_pct: u8,
}

impl Expiry<Key, Cached> for TtlPolicy {
    fn expire_after_create(&self, _k: &Key, v: &Cached, _at: Instant) -> Option<Duration> {
        Some(match v {
            Cached::Found(_) => jitter(self.found, self.jitter_pct),
            Cached::Missing => jitter(self.missing, self.jitter_pct),
        })
    }
}

pub struct L1 {
    cache: Cache<Key, Cached>,
    generations: Box<[AtomicU64]>,
}

impl L1 {
    pub fn new(
        max_entries: u64,
        found_ttl: Duration,
        missing_ttl: Duration,
        jitter_pct: u8,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_entries)
            .expire_after(TtlPolicy {
                found: found_ttl,
                missing: missing_ttl.min(found_ttl),
                jitter_pct,
            })
            .build();
        let generations = (0..STRIPES).map(|_| AtomicU64::new(0)).collect();
        Self { cache, generations }
    }

    fn stripe(&self, k: &Key) -> &AtomicU64 {
        // Ids are dense integers: the low bits spread them evenly enough.
        let i = (k.id as u64 as usize) % STRIPES;
        &self.generations[i]
    }

    pub async fn get(&self, k: &Key) -> Option<Cached> {
        self.cache.get(k).await
    }

    pub fn generation(&self, k: &Key) -> u64 {
        self.stripe(k).load(Ordering::Acquire)
    }

    /// Stores `v` unless `k` was invalidated since `generation` was read.
    pub async fn insert_if_current(&self, k: Key, v: Cached, generation: u64) {
        if self.generation(&k) == generation {
            self.cache.insert(k, v).await;
            // An invalidation may have raced the insert: undo it then.
            if self.generation(&k) != generation {
                self.cache.invalidate(&k).await;
            }
        }
    }

    pub async fn invalidate(&self, k: &Key) {
        self.stripe(k).fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(k).await;
    }

    pub fn clear(&self) {
        for g in self.generations.iter() {
            g.fetch_add(1, Ordering::AcqRel);
        }
        self.cache.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    #[tokio::test]
    async fn stale_fill_after_invalidation_is_dropped() {
        let l1 = L1::new(100, Duration::from_secs(60), Duration::from_secs(5), 0);
        let k = Key::user(1);
        let g = l1.generation(&k);
        l1.invalidate(&k).await;
        l1.insert_if_current(k, Cached::Found(Bytes::from_static(b"old")), g)
            .await;
        assert_eq!(l1.get(&k).await, None);
        let g = l1.generation(&k);
        l1.insert_if_current(k, Cached::Missing, g).await;
        assert_eq!(l1.get(&k).await, Some(Cached::Missing));
    }
}
