//! A circuit breaker in front of Redis: after `failures` consecutive failures it opens and
//! every cache call skips Redis (the request goes to L1/the database) until `open_for` has
//! passed; then one probe is let through (half-open) and its result closes or re-opens it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else keeps skipping Redis.
    HalfOpen,
}

impl BreakerState {
    fn gauge_value(&self) -> i64 {
        match self {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

pub struct Breaker {
    state: Mutex<BreakerState>,
    threshold: u32,
    open_for: Duration,
    gauge: IntGauge,
    opened: IntCounter,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration, gauge: IntGauge, opened: IntCounter) -> Self {
        gauge.set(0);
        Self {
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
            threshold,
            open_for,
            gauge,
            opened,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        // A panic while holding this lock cannot leave the state inconsistent (plain copies).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state(&self) -> BreakerState {
        *self.lock()
    }

    /// Whether a call may go to Redis now. In the open state, the first caller after the
    /// open period becomes the probe.
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match *s {
            BreakerState::Closed { .. } => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open { until } => {
                if Instant::now() >= until {
                    *s = BreakerState::HalfOpen;
                    self.gauge.set(s.gauge_value());
                    true
                } else {
                    false
                }
            }
        }
    }

    pub fn on_success(&self) {
        let mut s = self.lock();
        if *s != (BreakerState::Closed { failures: 0 }) {
            if matches!(*s, BreakerState::HalfOpen | BreakerState::Open { .. }) {
                tracing::info!("redis answered again: circuit breaker closed");
            }
            *s = BreakerState::Closed { failures: 0 };
            self.gauge.set(0);
        }
    }

    pub fn on_failure(&self) {
        let mut s = self.lock();
        let open = match *s {
            BreakerState::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    true
                } else {
                    *s = BreakerState::Closed { failures };
                    false
                }
            }
            BreakerState::HalfOpen => true,
            // A call let through before the breaker opened: already open.
            BreakerState::Open { .. } => false,
        };
        if open {
            *s = BreakerState::Open {
                until: Instant::now() + self.open_for,
            };
            self.gauge.set(1);
            self.opened.inc();
            tracing::warn!(
                open_ms = self.open_for.as_millis() as u64,
                "redis failing: circuit breaker open"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_ms: u64) -> Breaker {
        Breaker::new(
            3,
            Duration::from_millis(open_ms),
            IntGauge::new("g", "g").unwrap(),
            IntCounter::new("c", "c").unwrap(),
        )
    }

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let b = breaker(0);
        b.on_failure();
        b.on_failure();
        assert!(b.allow());
        b.on_failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        // open_for = 0: the next caller is the probe, the one after it is refused.
        assert!(b.allow());
        assert!(!b.allow());
        b.on_success();
        assert!(b.allow());
    }

    #[test]
    fn failed_probe_reopens() {
        let b = breaker(60_000);
        for _ in 0..3 {
            b.on_failure();
        }
        assert!(!b.allow());
        *b.lock() = BreakerState::HalfOpen;
        b.on_failure();
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn success_resets_the_count() {
        let b = breaker(60_000);
        b.on_failure();
        b.on_failure();
        b.on_success();
        b.on_failure();
        b.on_failure();
        assert!(b.allow());
    }
}
