//! A probe of one hash slot during a failover: it writes a key every 50 ms through the app's
//! connection type and records which writes worked, so a test can report how long the slot
//! could not be written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use app_redis::{RedisConn, RedisTarget, Timeouts};
use redis::AsyncCommands;

/// One write: time since the probe started, and whether it worked.
pub type Sample = (Duration, bool);

/// Writes `key` every 50 ms until `stop` (or `max`); returns every attempt.
pub async fn run(ha_url: String, key: String, stop: Arc<AtomicBool>, max: Duration) -> Vec<Sample> {
    let target = RedisTarget::parse(&ha_url).expect("url");
    let mut conn = RedisConn::open(
        &target,
        Timeouts {
            connect: Duration::from_millis(300),
            response: Duration::from_millis(300),
        },
    )
    .expect("probe connection");
    let start = Instant::now();
    let mut samples = Vec::new();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < max {
        let at = start.elapsed();
        let r = tokio::time::timeout(
            Duration::from_millis(400),
            conn.set_ex::<_, _, ()>(&key, at.as_millis() as u64, 60),
        )
        .await;
        samples.push((at, matches!(r, Ok(Ok(())))));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples
}

/// Starts [`run`] on a key of its own in the slot of `victim_key` (same hash tag).
pub fn spawn(
    ha_url: String,
    victim_key: &str,
    stop: Arc<AtomicBool>,
    max: Duration,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(run(ha_url, format!("{victim_key}:probe"), stop, max))
}

/// When writes worked again: the first success after the last failure (None without one).
pub fn recovered_at(samples: &[Sample]) -> Option<Duration> {
    let last_fail = samples.iter().rev().find(|s| !s.1).map(|s| s.0)?;
    samples.iter().find(|s| s.1 && s.0 > last_fail).map(|s| s.0)
}

pub fn failures(samples: &[Sample]) -> usize {
    samples.iter().filter(|s| !s.1).count()
}
