//! L1: the in-process cache (moka), bounded in size, with a short TTL for records and a
//! shorter or equal one for "not found". A record outlives its TTL by a stale window: past its
//! TTL it is no hit, but it is what a read answers when Redis and the database both fail
//! (stale-if-error), so cached reads keep answering through an outage of both.
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

/// A value and the end of its TTL (jitter included).
#[derive(Clone, Debug)]
struct Entry {
    value: Cached,
    fresh_until: Instant,
}

struct TtlPolicy {
    /// Records are kept this long past their TTL (not for "not found").
    stale: Duration,
}

impl Expiry<Key, Entry> for TtlPolicy {
    fn expire_after_create(&self, _k: &Key, v: &Entry, at: Instant) -> Option<Duration> {
        let fresh = v.fresh_until.saturating_duration_since(at);
        Some(match v.value {
            Cached::Found(_) => fresh + self.stale,
            Cached::Missing => fresh,
        })
    }
}

pub struct L1 {
    cache: Cache<Key, Entry>,
    generations: Box<[AtomicU64]>,
    found_ttl: Duration,
    missing_ttl: Duration,
    jitter_pct: u8,
}

impl L1 {
    pub fn new(
        max_entries: u64,
        found_ttl: Duration,
        missing_ttl: Duration,
        stale: Duration,
        jitter_pct: u8,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_entries)
            .expire_after(TtlPolicy { stale })
            .build();
        let generations = (0..STRIPES).map(|_| AtomicU64::new(0)).collect();
        Self {
            cache,
            generations,
            found_ttl,
            missing_ttl: missing_ttl.min(found_ttl),
            jitter_pct,
        }
    }

    fn stripe(&self, k: &Key) -> &AtomicU64 {
        // Ids are dense integers: the low bits spread them evenly enough.
        let i = (k.id as u64 as usize) % STRIPES;
        &self.generations[i]
    }

    /// The value of `k` while its TTL runs.
    pub async fn get(&self, k: &Key) -> Option<Cached> {
        self.cache
            .get(k)
            .await
            .filter(|e| Instant::now() < e.fresh_until)
            .map(|e| e.value)
    }

    /// A record of `k` past its TTL but inside the stale window (for when every source fails).
    pub async fn get_stale(&self, k: &Key) -> Option<Cached> {
        self.cache
            .get(k)
            .await
            .map(|e| e.value)
            .filter(|v| matches!(v, Cached::Found(_)))
    }

    pub fn generation(&self, k: &Key) -> u64 {
        self.stripe(k).load(Ordering::Acquire)
    }

    /// Stores `v` unless `k` was invalidated since `generation` was read.
    pub async fn insert_if_current(&self, k: Key, v: Cached, generation: u64) {
        if self.generation(&k) == generation {
            let ttl = match v {
                Cached::Found(_) => self.found_ttl,
                Cached::Missing => self.missing_ttl,
            };
            let entry = Entry {
                value: v,
                fresh_until: Instant::now() + jitter(ttl, self.jitter_pct),
            };
            self.cache.insert(k, entry).await;
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
    async fn past_its_ttl_a_record_is_no_hit_but_still_there_for_an_outage() {
        let ms = Duration::from_millis;
        let l1 = L1::new(100, ms(50), ms(50), ms(5_000), 0);
        let (found, missing) = (Key::user(1), Key::user(2));
        let body = Cached::Found(Bytes::from_static(b"v"));
        l1.insert_if_current(found, body.clone(), l1.generation(&found))
            .await;
        l1.insert_if_current(missing, Cached::Missing, l1.generation(&missing))
            .await;
        assert_eq!(l1.get(&found).await, Some(body.clone()));
        tokio::time::sleep(ms(80)).await;
        assert_eq!(l1.get(&found).await, None, "past its TTL: a miss");
        assert_eq!(l1.get_stale(&found).await, Some(body), "kept for an outage");
        assert_eq!(
            l1.get_stale(&missing).await,
            None,
            "not found is never served stale"
        );
        l1.invalidate(&found).await;
        assert_eq!(
            l1.get_stale(&found).await,
            None,
            "a write drops the stale copy"
        );
    }

    #[tokio::test]
    async fn stale_fill_after_invalidation_is_dropped() {
        let l1 = L1::new(
            100,
            Duration::from_secs(60),
            Duration::from_secs(5),
            Duration::ZERO,
            0,
        );
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
