//! Background tasks of the cache: the invalidation subscriber (drops L1 entries that other
//! instances wrote), the scheduler (delayed deletes and retries, in `write`) and the
//! Bloom filter keeper (rebuilds the shared filter from the database when it is missing).

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Cache, Entity, Key};
use crate::store::Store;

const REBUILD_BATCH: u32 = 1_000;
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

    /// Subscribes to the invalidation channel, resubscribing after failures. After every
    /// (re)subscription L1 is cleared: messages sent while we were not listening are lost.
    async fn run_subscriber(&self, cancel: CancellationToken) {
        let Some(l2) = &self.inner.l2 else { return };
        let channel = self.inner.keys.channel().to_string();
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        while !cancel.is_cancelled() {
            let connect = async {
                let mut ps = l2.client().get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let pubsub = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(5), connect) => r,
            };
            match pubsub {
                Ok(Ok(ps)) => {
                    backoff = Duration::from_millis(100);
                    if !first {
                        tracing::info!("invalidation channel resubscribed: L1 cleared");
                    }
                    first = false;
                    if let Some(l1) = &self.inner.l1 {
                        l1.clear();
                    }
                    let mut stream = ps.into_on_message();
                    self.inner.metrics.invalidation_subscribed.set(1);
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            msg = stream.next() => match msg {
                                Some(msg) => {
                                    let payload: String = msg.get_payload().unwrap_or_default();
                                    self.on_invalidation(&payload).await;
                                }
                                None => {
                                    self.inner.metrics.invalidation_subscribed.set(0);
                                    tracing::warn!("invalidation channel closed; resubscribing");
                                    break;
                                }
                            }
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "invalidation subscribe failed"),
                Err(_) => tracing::debug!("invalidation subscribe timed out"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
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
            Ok(true) => true,
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
