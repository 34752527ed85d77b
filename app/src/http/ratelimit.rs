//! Per-client-IP token buckets. With direct server return the peer address is the real
//! client, so no forwarded-for header is trusted.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::config::RateLimitConfig;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter: buckets sharded by client address to keep lock contention low.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_per_shard: usize,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allow,
    /// Refused; a token will be there after this long.
    Deny {
        retry_after: Duration,
    },
}

impl RateLimiter {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self {
            rate: cfg.per_second,
            burst: f64::from(cfg.burst),
            max_per_shard: cfg.max_clients.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    pub fn check(&self, ip: IpAddr, now: Instant) -> Decision {
        let shard = &self.shards[(self.hasher.hash_one(ip) as usize) % SHARDS];
        let mut map = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max_per_shard && !map.contains_key(&ip) {
            // Full buckets carry no state worth keeping: drop them first.
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
            if map.len() >= self.max_per_shard {
                // Still full of active clients: forget the longest idle one.
                if let Some(oldest) = map.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Decision::Allow
        } else {
            Decision::Deny {
                retry_after: Duration::from_secs_f64((1.0 - b.tokens) / self.rate),
            }
        }
    }
}

/// The state of the [`limit`] middleware: the router's limiter and its refusal counter.
#[derive(Clone)]
pub(super) struct Limit {
    pub limiter: Arc<RateLimiter>,
    pub refused: prometheus::IntCounter,
}

/// Middleware on the API routes. Requests without a peer address (in-process tests using
/// `oneshot`) are not limited.
pub(super) async fn limit(State(st): State<Limit>, req: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Decision::Deny { retry_after } = st.limiter.check(peer.ip(), Instant::now())
    {
        st.refused.inc();
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        return ApiError::TooManyRequests {
            retry_after_s: secs,
        }
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32, max: usize) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            enabled: true,
            per_second: rate,
            burst,
            max_clients: max,
        })
    }

    #[test]
    fn burst_then_refill() {
        let l = limiter(2.0, 3, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.check(ip, t0), Decision::Allow);
        }
        match l.check(ip, t0) {
            Decision::Deny { retry_after } => assert!(retry_after <= Duration::from_millis(500)),
            d => panic!("{d:?}"),
        }
        // Another client is unaffected.
        assert_eq!(l.check("10.0.0.2".parse().unwrap(), t0), Decision::Allow);
        assert_eq!(
            l.check(ip, t0 + Duration::from_millis(500)),
            Decision::Allow
        );
    }

    #[test]
    fn bounded_number_of_clients() {
        let l = limiter(1.0, 1, 16);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            l.check(IpAddr::from(i.to_be_bytes()), t0);
        }
        let total: usize = l.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= 16, "{total}");
    }
}
