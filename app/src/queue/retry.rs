//! Repeating a Redis command through a failover. While a master fails over (a Sentinel set
//! or a cluster promoting a replica), while a connection is made again, or while a slot
//! moves, commands fail for a few seconds with errors that pass by themselves
//! ([`app_redis::is_transient`]). The queue repeats them, within `queue.redis_retry_ms`,
//! instead of failing an enqueue, a status read or a job's bookkeeping.
//!
//! Repeating is safe because every command the queue repeats is idempotent or fenced: a
//! repeated ENQUEUE finds its own job (the id is chosen before the first try) and returns
//! it, START/COMPLETE/FAIL check the job's `entry` and `state`, MOVE_DUE decides with ZREM,
//! reads change nothing. The only cost of a repeat whose first try did run is a `stale`
//! outcome in the metrics.

use std::future::Future;
use std::time::Duration;

use app_redis::RedisConn;
use tokio::time::Instant;

use super::{Queue, QueueError};

/// First pause after a transient error; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Runs `f` on the queue's connection, repeating it after transient errors until
/// `queue.redis_retry_ms` has passed. `op` names the operation in logs and in
/// `app_queue_redis_retries_total{op}`.
pub(crate) async fn redis<T, F, Fut>(q: &Queue, op: &'static str, mut f: F) -> Result<T, QueueError>
where
    F: FnMut(RedisConn) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let deadline = Instant::now() + q.settings().redis_retry();
    let mut pause = FIRST_PAUSE;
    loop {
        match f(q.connection()).await {
            Ok(v) => return Ok(v),
            Err(e) if app_redis::is_transient(&e) && Instant::now() + pause < deadline => {
                tracing::debug!(op, error = %e, "transient redis error; repeating");
                if let Some(m) = q.metrics() {
                    m.redis_retried(op);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs a script invocation with [`redis`]'s repeats.
pub(crate) async fn script<T: redis::FromRedisValue>(
    q: &Queue,
    op: &'static str,
    inv: &redis::ScriptInvocation<'_>,
) -> Result<T, QueueError> {
    redis(q, op, |mut c| async move { inv.invoke_async(&mut c).await }).await
}
