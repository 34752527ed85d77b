//! Exponential backoff with jitter for retries.

use std::time::Duration;

use rand::Rng;

/// `base * 2^(attempt-1)`, capped at `max`, then "equal jitter": half fixed, half random, so
/// retries of jobs that failed together spread out instead of returning together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before the retry that follows failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let raw = self
            .base
            .as_millis()
            .saturating_mul(1u128 << exp)
            .min(self.max.as_millis()) as u64;
        let half = raw / 2;
        let jitter = if raw - half > 0 {
            rand::thread_rng().gen_range(0..=raw - half)
        } else {
            0
        };
        Duration::from_millis(half + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
        };
        for _ in 0..100 {
            let d1 = b.delay(1).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = b.delay(3).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d20 = b.delay(20).as_millis();
            assert!((500..=1_000).contains(&d20), "{d20}");
        }
        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.delay(5), Duration::ZERO);
    }
}
