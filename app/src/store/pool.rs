//! The database pool's saturation (design seed 2.5): how many connections the app holds at
//! this moment and how long each request waited for one. A pool that is too small shows as
//! `in_use` pinned at `max` and a growing acquire wait long before requests time out.

use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntGauge, Registry};

/// The pool series. Clones share them.
#[derive(Clone)]
pub struct PoolMetrics {
    /// `app_db_pool_connections_in_use`: connections handed to a query and not yet returned.
    in_use: IntGauge,
    /// `app_db_pool_max_connections`: the pool's size (`database.max_connections`).
    max: IntGauge,
    /// `app_db_pool_acquire_wait_seconds`: time from asking the pool to holding a connection.
    wait: Histogram,
}

impl PoolMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let in_use = IntGauge::new(
            "app_db_pool_connections_in_use",
            "Database connections held by a query right now",
        )?;
        let max = IntGauge::new(
            "app_db_pool_max_connections",
            "Size of the database pool (database.max_connections)",
        )?;
        let wait = Histogram::with_opts(
            HistogramOpts::new(
                "app_db_pool_acquire_wait_seconds",
                "Time a query waited for a database connection",
            )
            .buckets(vec![
                0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        registry.register(Box::new(in_use.clone()))?;
        registry.register(Box::new(max.clone()))?;
        registry.register(Box::new(wait.clone()))?;
        Ok(Self { in_use, max, wait })
    }

    pub(super) fn set_max(&self, n: u32) {
        self.max.set(i64::from(n));
    }

    /// Times `acquire` (a failed one too: a pool timeout is the worst wait) and counts the
    /// connection as in use until the guard drops.
    pub(super) async fn acquire<C, E>(
        &self,
        acquire: impl Future<Output = Result<C, E>>,
    ) -> Result<InUse<C>, E> {
        let start = Instant::now();
        let conn = acquire.await;
        self.wait.observe(start.elapsed().as_secs_f64());
        let conn = conn?;
        self.in_use.inc();
        Ok(InUse {
            conn,
            gauge: self.in_use.clone(),
        })
    }

    /// Connections in use now (tests).
    pub fn in_use(&self) -> i64 {
        self.in_use.get()
    }

    /// Acquires timed so far (tests).
    pub fn acquires(&self) -> u64 {
        self.wait.get_sample_count()
    }
}

/// A pooled connection, counted in `app_db_pool_connections_in_use` while it lives.
pub(super) struct InUse<C> {
    pub conn: C,
    gauge: IntGauge,
}

impl<C> Drop for InUse<C> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_held_connections_and_every_wait() {
        let m = PoolMetrics::register(&Registry::new()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let waiting = tokio::spawn({
            let m = m.clone();
            async move { m.acquire(rx).await.map(|g| g.conn) }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            (m.in_use(), m.acquires()),
            (0, 0),
            "nothing held while waiting"
        );
        tx.send(7).unwrap();
        assert_eq!(waiting.await.unwrap(), Ok(7));
        assert_eq!(m.acquires(), 1);
        assert_eq!(m.in_use(), 0, "the guard was dropped with the task's value");

        let held = m.acquire(async { Ok::<_, ()>(1) }).await.unwrap();
        let held2 = m.acquire(async { Ok::<_, ()>(2) }).await.unwrap();
        assert_eq!(m.in_use(), 2);
        drop(held);
        assert_eq!(m.in_use(), 1);
        drop(held2);
        assert_eq!(m.in_use(), 0);

        let failed = m.acquire(async { Err::<u8, _>("pool timed out") }).await;
        assert!(failed.is_err());
        assert_eq!(m.in_use(), 0, "a failed acquire holds nothing");
        assert_eq!(m.acquires(), 4, "a failed acquire's wait is recorded too");
    }
}
