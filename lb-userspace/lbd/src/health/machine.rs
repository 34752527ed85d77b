//! The rise/fall state machine of one backend's health, and the slow-start ramp. Pure: the
//! checker feeds it probe results, tests feed it sequences.

use std::time::{Duration, Instant};

/// The verdict, as the API spells it.
pub use lb_api::types::Health;

#[derive(Clone, Debug)]
pub struct Machine {
    rise: u32,
    fall: u32,
    state: Health,
    successes: u32,
    failures: u32,
    /// When the backend last became healthy (for slow start).
    healthy_since: Option<Instant>,
}

impl Machine {
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: Health::Unknown,
            successes: 0,
            failures: 0,
            healthy_since: None,
        }
    }

    /// A machine that starts healthy (backends without checks).
    pub fn always_healthy(now: Instant) -> Self {
        Self {
            state: Health::Healthy,
            healthy_since: Some(now),
            ..Self::new(1, 1)
        }
    }

    /// A machine carried over from a previous daemon's healthy verdict (no slow start).
    pub fn restored_healthy(rise: u32, fall: u32) -> Self {
        Self {
            state: Health::Healthy,
            ..Self::new(rise, fall)
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    pub fn healthy_since(&self) -> Option<Instant> {
        self.healthy_since
    }

    /// Records one probe; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool, now: Instant) -> Option<Health> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.state != Health::Healthy && self.successes >= self.rise {
                self.state = Health::Healthy;
                self.healthy_since = Some(now);
                return Some(Health::Healthy);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            // An unknown backend that fails is unhealthy at once: it never had traffic.
            let threshold = if self.state == Health::Unknown {
                1
            } else {
                self.fall
            };
            if self.state != Health::Unhealthy && self.failures >= threshold {
                self.state = Health::Unhealthy;
                self.healthy_since = None;
                return Some(Health::Unhealthy);
            }
        }
        None
    }
}

/// The weight a backend gets `elapsed` after recovering, ramping linearly from a small share to
/// full over `period` (at least 1 while ramping, so it does take some flows).
pub fn slow_start_weight(full: u32, elapsed: Duration, period: Duration) -> u32 {
    if full == 0 || period.is_zero() || elapsed >= period {
        return full;
    }
    let frac = elapsed.as_secs_f64() / period.as_secs_f64();
    ((full as f64 * frac).ceil() as u32).clamp(1, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let t = Instant::now();
        let mut m = Machine::new(2, 3);
        assert_eq!(m.observe(true, t), None);
        assert_eq!(m.observe(true, t), Some(Health::Healthy));
        assert_eq!(m.observe(false, t), None);
        assert_eq!(m.observe(false, t), None);
        assert_eq!(
            m.observe(true, t),
            None,
            "a success resets the failure count"
        );
        assert_eq!(m.observe(false, t), None);
        assert_eq!(m.observe(false, t), None);
        assert_eq!(m.observe(false, t), Some(Health::Unhealthy));
        assert_eq!(m.observe(true, t), None);
        assert_eq!(m.observe(true, t), Some(Health::Healthy));
    }

    #[test]
    fn unknown_fails_fast() {
        let mut m = Machine::new(2, 3);
        assert_eq!(m.observe(false, Instant::now()), Some(Health::Unhealthy));
    }

    #[test]
    fn slow_start_ramps() {
        let p = Duration::from_secs(10);
        assert_eq!(slow_start_weight(100, Duration::ZERO, p), 1);
        assert_eq!(slow_start_weight(100, Duration::from_secs(5), p), 50);
        assert_eq!(slow_start_weight(100, Duration::from_secs(10), p), 100);
        assert_eq!(
            slow_start_weight(100, Duration::from_secs(3), Duration::ZERO),
            100
        );
        assert_eq!(slow_start_weight(0, Duration::from_secs(3), p), 0);
    }
}
