//! Coalesces concurrent loads of one key in this instance: the first caller runs the load,
//! the others await its result. If the leader is cancelled, a waiter takes over
//! (`tokio::sync::OnceCell` semantics).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct SingleFlight<V> {
    flights: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V: Clone> Default for SingleFlight<V> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> SingleFlight<V> {
    /// Runs `load` unless a load of `key` is in flight; returns the value and whether this
    /// caller shared another caller's load.
    pub async fn run<F, Fut>(&self, key: &str, load: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            let mut map = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(key.to_string()).or_default().clone()
        };
        let mut ran = false;
        let value = cell
            .get_or_init(|| {
                ran = true;
                load()
            })
            .await
            .clone();
        if ran {
            // The flight is over: later callers start a new one (and find the value in the cache).
            let mut map = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(key);
            }
        }
        (value, !ran)
    }

    #[cfg(test)]
    /// Callers currently attached to the flight of `key` (leader included).
    pub fn callers(&self, key: &str) -> usize {
        let map = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key).map(|c| Arc::strong_count(c) - 1).unwrap_or(0)
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_share_one_load() {
        let sf = Arc::new(SingleFlight::<u32>::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (sf, sf2, loads) = (sf.clone(), sf.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                sf.run("k", || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // Hold the flight open until every caller has joined it (bounded).
                    for _ in 0..3000 {
                        if sf2.callers("k") == 50 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    7
                })
                .await
            }));
        }
        let mut shared = 0;
        for t in tasks {
            let (v, was_shared) = t.await.unwrap();
            assert_eq!(v, 7);
            shared += usize::from(was_shared);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(shared, 49);
        assert_eq!(sf.in_flight(), 0);
    }
}
