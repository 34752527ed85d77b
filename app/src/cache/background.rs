//! Background tasks of the cache: the invalidation subscriber (drops L1 entries that other
//! instances wrote), the scheduler (delayed deletes and retries, in `write`) and the
//! Bloom filter keeper (rebuilds the shared filter from the database when it is missing).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Cache, Entity, Key};
use crate::store::Store;
use app_redis::PubSubEvent;

const REBUILD_BATCH: u32 = 1_000;
/// Newest ids whose Bloom bits each keeper pass sets again: bits written just before a
/// failover may not have reached the replica that took over (replication is
/// asynchronous), and a filter marked complete would then answer "absent" for them.
const HEAL_NEWEST: u32 = 256;
const REBUILD_LOCK_TTL: Duration = Duration::from_secs(30);

impl Cache {
    /// Starts the background tasks on `tracker`; they stop when `cancel` fires.
    pub fn spawn_background(&self, store: Store, tracker: &TaskTracker, cancel: CancellationToken) {
        let c = self.clone();
        let tok = cancel.clone();
        tracker.spawn(async move { c.run_scheduler(tok).await });
        if self.inner.l1.is_some() && self.inner.l2.is_some() {
            let c = self.clone();
            let tok = cancel.clone();
            tracker.spawn(async move { c.run_subscriber(tok).await });
        }
        if self.inner.bloom.is_some() && self.inner.l2.is_some() {
            let c = self.clone();
            tracker.spawn(async move { c.run_bloom_keeper(store, cancel).await });
        }
    }

    async fn on_invalidation(&self, payload: &str) {
        let Some((from, what)) = payload.split_once('\n') else {
            tracing::debug!(payload, "ignoring malformed invalidation message");
            return;
        };
        if from == self.inner.instance {
            return;
        }
        let Some(l1) = &self.inner.l1 else { return };
        if what == "*" {
            l1.clear();
        } else if let Some(k) = Key::parse(what) {
            l1.invalidate(&k).await;
        } else {
            tracing::debug!(payload, "ignoring invalidation for an unknown key");
            return;
        }
        self.inner
            .metrics
            .invalidations
            .with_label_values(&["received"])
            .inc();
    }

    /// Listens on the invalidation channels; the subscription reconnects by itself (also
    /// across a Sentinel or Cluster failover). Every time it is in place again, L1 is
    /// cleared: messages sent while we were not listening are lost.
    async fn run_subscriber(&self, cancel: CancellationToken) {
        let Some(l2) = &self.inner.l2 else { return };
        let mut sub = l2.subscribe(self.inner.keys.channels().to_vec());
        let mut first = true;
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                e = sub.next() => e,
            };
            match event {
                PubSubEvent::Subscribed => {
                    if !first {
                        self.inner.metrics.invalidation_resubscribed.inc();
                        tracing::info!("invalidation channel resubscribed: L1 cleared");
                    }
                    first = false;
                    if let Some(l1) = &self.inner.l1 {
                        l1.clear();
                    }
                    self.inner.metrics.invalidation_subscribed.set(1);
                }
                PubSubEvent::Lost => {
                    self.inner.metrics.invalidation_subscribed.set(0);
                    tracing::warn!("invalidation channel lost; resubscribing");
                }
                PubSubEvent::Message { payload, .. } => {
                    self.on_invalidation(&String::from_utf8_lossy(&payload))
                        .await;
                }
            }
        }
    }

    /// Checks every `bloom_check_interval_ms` that the shared filter is complete; if not,
    /// one instance (holder of the rebuild lock) adds every id from the database.
    async fn run_bloom_keeper(&self, store: Store, cancel: CancellationToken) {
        let every = Duration::from_millis(self.inner.cfg.bloom_check_interval_ms);
        loop {
            self.bloom_maintain(&store).await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One pass of the keeper; returns whether the filter is complete afterwards.
    pub async fn bloom_maintain(&self, store: &Store) -> bool {
        let (Some(params), Some(l2)) = (&self.inner.bloom, &self.inner.l2) else {
            return false;
        };
        let ks = &self.inner.keys;
        let entity = Entity::User;
        let ready = match l2.exists(&ks.bloom_ready(entity)).await {
            Ok(true) => {
                self.bloom_heal(store, entity, *params).await;
                true
            }
            Ok(false) => match self.bloom_rebuild(store, entity, *params).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(error = %e, "bloom filter rebuild failed");
                    false
                }
            },
            Err(_) => false,
        };
        self.inner.metrics.bloom_ready.set(i64::from(ready));
        ready
    }

    /// Sets the bits of the newest ids again and counts the ones that were missing.
    async fn bloom_heal(&self, store: &Store, entity: Entity, params: super::BloomParams) {
        let Some(l2) = &self.inner.l2 else { return };
        let ids = match store.newest_user_ids(HEAL_NEWEST).await {
            Ok(ids) if !ids.is_empty() => ids,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "bloom heal: reading the newest ids failed");
                return;
            }
        };
        let positions: Vec<u64> = ids.iter().flat_map(|&id| params.positions(id)).collect();
        if let Ok(n) = l2
            .bloom_add(&self.inner.keys.bloom_bits(entity), &positions)
            .await
            && n > 0
        {
            self.inner.metrics.bloom_healed.inc_by(n as u64);
            tracing::info!(
                bits = n,
                "bloom filter: bits of recent ids were unset (lost in a failover, or ids \
                 being created right now); set again"
            );
        }
    }

    async fn bloom_rebuild(
        &self,
        store: &Store,
        entity: Entity,
        params: super::BloomParams,
    ) -> anyhow::Result<bool> {
        let Some(l2) = &self.inner.l2 else {
            return Ok(false);
        };
        let ks = &self.inner.keys;
        let (bits, lock, ready) = (
            ks.bloom_bits(entity),
            ks.bloom_rebuild_lock(entity),
            ks.bloom_ready(entity),
        );
        let token = uuid::Uuid::new_v4().simple().to_string();
        if !l2.try_lock(&lock, &token, REBUILD_LOCK_TTL).await? {
            return Ok(false); // another instance is rebuilding
        }
        tracing::info!(
            entity = entity.as_str(),
            "rebuilding the bloom filter from the database"
        );
        let mut after = i64::MIN;
        let mut total = 0usize;
        loop {
            let ids = store.user_ids(after, REBUILD_BATCH).await?;
            let Some(&last) = ids.last() else { break };
            let positions: Vec<u64> = ids.iter().flat_map(|&id| params.positions(id)).collect();
            // Bits are only ever set (never cleared), so ids created meanwhile stay in.
            if !l2
                .bloom_rebuild_batch(&bits, &lock, &token, REBUILD_LOCK_TTL, &positions)
                .await?
            {
                tracing::warn!("bloom rebuild lock lost; another pass will retry");
                return Ok(false);
            }
            total += ids.len();
            after = last;
        }
        let done = l2
            .bloom_rebuild_finish(&bits, &lock, &ready, &token)
            .await?;
        tracing::info!(
            ids = total,
            complete = done,
            "bloom filter rebuild finished"
        );
        Ok(done)
    }
}
