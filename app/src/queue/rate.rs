//! The global rate limit of a queue: a fixed one-second window in Redis, on the Redis clock,
//! shared by every instance and both transports.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Queue, QueueError};

/// Fixed one-second window shared by every instance.
/// ARGV: counter prefix, limit. Returns {1, window_s} when granted, {0, wait_ms} when not.
const RATE: &str = r#"
local t = redis.call('TIME')
local k = ARGV[1] .. t[1]
local c = tonumber(redis.call('GET', k) or '0')
if c < tonumber(ARGV[2]) then
  redis.call('INCR', k)
  redis.call('EXPIRE', k, 10)
  return {1, tonumber(t[1])}
end
return {0, 1000 - math.floor(tonumber(t[2]) / 1000)}
"#;

static RATE_S: LazyLock<Script> = LazyLock::new(|| Script::new(RATE));

/// Waits for a permit of `queue`'s rate limit; returns the granting window (Unix second).
pub(crate) async fn permit(q: &Queue, queue: &str, limit: u32) -> Result<u64, QueueError> {
    let prefix = q.keys().rate_prefix(queue);
    let mut conn = q.connection();
    loop {
        let (granted, v): (i64, u64) = RATE_S
            .arg(&prefix)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        if granted == 1 {
            return Ok(v);
        }
        // Wait for the next window, spread a little so instances do not all wake at once.
        let jitter = rand::random::<u64>() % 20;
        tokio::time::sleep(Duration::from_millis(v.min(1_000) + jitter)).await;
    }
}
