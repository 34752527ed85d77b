//! The global rate limit of a queue: a fixed one-second window in Redis, on the Redis clock,
//! shared by every instance and both transports.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Queue, QueueError, retry};

/// Fixed one-second window shared by every instance, kept in one hash per queue (declared,
/// so the script has one key in one slot): `window` (Unix second) and `count`.
/// KEYS: the queue's rate hash. ARGV: limit.
/// Returns {1, window_s} when granted, {0, wait_ms} when not.
const RATE: &str = r#"
local t = redis.call('TIME')
local w = redis.call('HGET', KEYS[1], 'window')
if w ~= t[1] then
  redis.call('HSET', KEYS[1], 'window', t[1], 'count', 1)
  redis.call('EXPIRE', KEYS[1], 10)
  return {1, tonumber(t[1])}
end
if tonumber(redis.call('HGET', KEYS[1], 'count') or '0') < tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'count', 1)
  return {1, tonumber(t[1])}
end
return {0, 1000 - math.floor(tonumber(t[2]) / 1000)}
"#;

static RATE_S: LazyLock<Script> = LazyLock::new(|| Script::new(RATE));

/// Waits for a permit of `queue`'s rate limit; returns the granting window (Unix second).
pub(crate) async fn permit(q: &Queue, queue: &str, limit: u32) -> Result<u64, QueueError> {
    let key = q.keys().rate(queue);
    loop {
        let (granted, v): (i64, u64) = retry::redis(q, "rate", |mut c| {
            let key = &key;
            async move { RATE_S.key(key).arg(limit).invoke_async(&mut c).await }
        })
        .await?;
        if granted == 1 {
            return Ok(v);
        }
        // Wait for the next window, spread a little so instances do not all wake at once.
        let jitter = rand::random::<u64>() % 20;
        tokio::time::sleep(Duration::from_millis(v.min(1_000) + jitter)).await;
    }
}
