//! The rise/fall state machine of one backend's health, and the slow-start ramp. Pure: the
//! checker feeds it probe results, tests feed it sequences.

use std::time::{Duration, Instant};

/// The verdict, as the API spells it.
pub use lb_api::types::Health;

/// A backend that falls within this time of becoming healthy is flapping: each such fall
/// doubles the successes it needs to come back (see [`Machine::needed_rise`]).
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);
/// At most `rise × 2^4` successes are asked of a flapping backend.
const MAX_FLAP_SHIFT: u32 = 4;

#[derive(Clone, Debug)]
pub struct Machine {
    rise: u32,
    fall: u32,
    state: Health,
    successes: u32,
    failures: u32,
    /// When the backend last became healthy (for slow start).
    healthy_since: Option<Instant>,
    /// Falls in a row that came within [`FLAP_WINDOW`] of becoming healthy.
    flaps: u32,
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
            flaps: 0,
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

    /// New rise/fall counts (a reload); the verdict so far stands.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    pub fn healthy_since(&self) -> Option<Instant> {
        self.healthy_since
    }

    /// Consecutive successes an unhealthy (or unknown) backend needs to become healthy:
    /// `rise`, doubled for each recent flap (at most ×16). Hysteresis: a backend in a crash
    /// loop stays out instead of swapping the VIP's table in and out every few seconds.
    pub fn needed_rise(&self) -> u32 {
        self.rise
            .saturating_mul(1 << self.flaps.min(MAX_FLAP_SHIFT))
    }

    /// Records one probe; returns the new state when it changed.
    ///
    /// Failures count until `rise` successes in a row forgive them (one success between two
    /// failures does not): a backend that is down every other probe falls like one that is
    /// down for good.
    pub fn observe(&mut self, ok: bool, now: Instant) -> Option<Health> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.rise {
                self.failures = 0;
            }
            if self.state != Health::Healthy && self.successes >= self.needed_rise() {
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
                if self.state == Health::Healthy {
                    let recent = self
                        .healthy_since
                        .is_some_and(|t| now.saturating_duration_since(t) < FLAP_WINDOW);
                    self.flaps = if recent {
                        self.flaps.saturating_add(1)
                    } else {
                        0
                    };
                }
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
        assert_eq!(m.observe(true, t), None);
        assert_eq!(
            m.observe(true, t),
            None,
            "rise successes in a row forgive the failures"
        );
        // Healthy for longer than the flap window: coming back needs `rise` only.
        let t = t + FLAP_WINDOW;
        assert_eq!(m.observe(false, t), None);
        assert_eq!(m.observe(false, t), None);
        assert_eq!(m.observe(false, t), Some(Health::Unhealthy));
        assert_eq!(m.observe(true, t), None);
        assert_eq!(m.observe(true, t), Some(Health::Healthy));
    }

    #[test]
    fn a_crash_loop_falls_although_probes_alternate() {
        let t = Instant::now();
        let mut m = Machine::new(2, 2);
        m.observe(true, t);
        m.observe(true, t);
        assert_eq!(m.state(), Health::Healthy);
        assert_eq!(m.observe(false, t), None);
        assert_eq!(m.observe(true, t), None, "one success does not forgive");
        assert_eq!(m.observe(false, t), Some(Health::Unhealthy));
        // Alternating, it never comes back.
        for _ in 0..20 {
            m.observe(true, t);
            m.observe(false, t);
        }
        assert_eq!(m.state(), Health::Unhealthy);
    }

    #[test]
    fn flapping_needs_more_successes_each_time_and_long_health_forgives() {
        let t0 = Instant::now();
        let mut m = Machine::new(2, 1);
        let at = |s: u64| t0 + Duration::from_secs(s);
        m.observe(true, at(0));
        m.observe(true, at(1));
        // Healthy for long: a fall is no flap.
        m.observe(false, at(100));
        assert_eq!(m.needed_rise(), 2);
        m.observe(true, at(101));
        assert_eq!(m.observe(true, at(102)), Some(Health::Healthy));
        // Falls soon after: a flap; then 4, 8, 16, 32 successes, never more.
        let mut now = 103;
        for want in [4, 8, 16, 32, 32] {
            assert_eq!(m.observe(false, at(now)), Some(Health::Unhealthy));
            assert_eq!(m.needed_rise(), want);
            for i in 1..want {
                now += 1;
                assert_eq!(m.observe(true, at(now)), None, "success {i} of {want}");
            }
            now += 1;
            assert_eq!(m.observe(true, at(now)), Some(Health::Healthy));
            now += 1;
        }
        // Stable past the flap window: the next fall starts over at rise.
        m.observe(false, at(now + 61));
        assert_eq!(m.needed_rise(), 2);
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
