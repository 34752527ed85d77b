//! L2: Redis (one server, a Sentinel set or a Cluster, through [`RedisConn`]), behind a
//! circuit breaker and a per-command timeout. Every method reports failure as [`L2Error`];
//! callers fall back to the database, never fail the request.
//!
//! Every script and multi-key command here touches keys of one hash slot (the caller's
//! [`super::KeySpace`] gives them one hash tag), so they run unchanged on a Cluster.

use std::future::Future;
use std::time::Duration;

use prometheus::IntCounterVec;
use redis::{AsyncCommands, Script};

use super::breaker::Breaker;
use app_redis::{GetCoalescer, RedisConn, RedisTarget, Subscription, Timeouts};

#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    #[error("redis skipped: circuit breaker open")]
    Open,
    #[error("redis command timed out")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Compare-and-delete: release a lock only if it still holds our token.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Bloom check: -1 unknown (filter incomplete), 0 absent, 1 maybe present.
const BLOOM_CHECK: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
for i = 1, #ARGV do
  if redis.call('GETBIT', KEYS[1], ARGV[i]) == 0 then return 0 end
end
return 1
"#;

/// Bloom add: set every position; returns how many were not set before.
const BLOOM_ADD: &str = r#"
local n = 0
for i = 1, #ARGV do n = n + 1 - redis.call('SETBIT', KEYS[1], ARGV[i], 1) end
return n
"#;

/// A rebuild batch: only while the rebuild lock (KEYS[2]) holds our token (ARGV[1]); the
/// lock's lifetime is extended by ARGV[2] ms on each batch.
const BLOOM_REBUILD_BATCH: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV do redis.call('SETBIT', KEYS[1], ARGV[i], 1) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"#;

/// End of a rebuild: mark the filter complete only if our lock survived (a Redis restart
/// in the middle wipes both the partial filter and the lock, so no false "ready").
const BLOOM_REBUILD_FINISH: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[3], '1')
redis.call('DEL', KEYS[2])
return 1
"#;

struct Scripts {
    unlock: Script,
    bloom_check: Script,
    bloom_add: Script,
    bloom_batch: Script,
    bloom_finish: Script,
}

pub struct L2 {
    conn: RedisConn,
    /// Concurrent hits' GETs share one MGET (see [`GetCoalescer`]).
    gets: GetCoalescer,
    breaker: Breaker,
    timeout: Duration,
    errors: IntCounterVec,
    scripts: Scripts,
}

impl L2 {
    /// Creates the client; the connection is made lazily and re-made after failures, so an
    /// absent Redis does not stop the app from starting.
    pub fn new(
        target: &RedisTarget,
        timeout: Duration,
        connect_timeout: Duration,
        coalesce_reads: bool,
        breaker: Breaker,
        errors: IntCounterVec,
    ) -> Result<Self, L2Error> {
        let conn = RedisConn::open(
            target,
            Timeouts {
                connect: connect_timeout,
                response: timeout,
            },
        )?;
        Ok(Self {
            gets: GetCoalescer::new(conn.clone(), coalesce_reads),
            conn,
            breaker,
            timeout,
            errors,
            scripts: Scripts {
                unlock: Script::new(UNLOCK),
                bloom_check: Script::new(BLOOM_CHECK),
                bloom_add: Script::new(BLOOM_ADD),
                bloom_batch: Script::new(BLOOM_REBUILD_BATCH),
                bloom_finish: Script::new(BLOOM_REBUILD_FINISH),
            },
        })
    }

    /// A subscription on its own connection (not behind the breaker: it reconnects by itself).
    pub fn subscribe(&self, channels: Vec<String>) -> Subscription {
        self.conn.subscribe(channels)
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Runs one command on the shared connection (see [`L2::run`]).
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, L2Error>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run(op, f(self.conn.clone())).await
    }

    /// Runs one command under the breaker and the timeout, counting failures.
    async fn run<T>(
        &self,
        op: &'static str,
        cmd: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, L2Error> {
        if !self.breaker.allow() {
            return Err(L2Error::Open);
        }
        let res = match tokio::time::timeout(self.timeout, cmd).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(L2Error::Redis(e)),
            Err(_) => Err(L2Error::Timeout),
        };
        match &res {
            Ok(_) => self.breaker.on_success(),
            Err(e) => {
                self.breaker.on_failure();
                self.errors.with_label_values(&[op]).inc();
                tracing::debug!(op, error = %e, "redis command failed");
            }
        }
        res
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        // The coalescer holds its own connection: no clone of ours per hit.
        self.run("get", self.gets.get(key)).await
    }

    pub async fn set_px(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), L2Error> {
        let ms = ttl.as_millis().max(1) as u64;
        self.call(
            "set",
            |mut c| async move { c.pset_ex(key, value, ms).await },
        )
        .await
    }

    pub async fn del(&self, key: &str) -> Result<(), L2Error> {
        self.call("del", |mut c| async move { c.del::<_, ()>(key).await })
            .await
    }

    pub async fn exists(&self, key: &str) -> Result<bool, L2Error> {
        self.call("exists", |mut c| async move { c.exists(key).await })
            .await
    }

    /// SET key token NX PX ttl: true when this caller now holds the lock.
    pub async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, L2Error> {
        let ms = ttl.as_millis().max(1) as u64;
        self.call("lock", |mut c| async move {
            let r: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .query_async(&mut c)
                .await?;
            Ok(r.is_some())
        })
        .await
    }

    pub async fn unlock(&self, key: &str, token: &str) -> Result<bool, L2Error> {
        let s = &self.scripts.unlock;
        self.call("unlock", |mut c| async move {
            let n: i64 = s.key(key).arg(token).invoke_async(&mut c).await?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn publish(&self, channel: &str, msg: &str) -> Result<(), L2Error> {
        let cmd = self.conn.publish_cmd(channel, msg);
        self.call("publish", |mut c| async move {
            cmd.query_async::<()>(&mut c).await
        })
        .await
    }

    /// -1 unknown, 0 absent, 1 maybe.
    pub async fn bloom_check(
        &self,
        bits: &str,
        ready: &str,
        positions: &[u64],
    ) -> Result<i64, L2Error> {
        let s = &self.scripts.bloom_check;
        self.call("bloom", |mut c| async move {
            s.key(bits)
                .key(ready)
                .arg(positions)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Sets `positions`; returns how many of them were not set before.
    pub async fn bloom_add(&self, bits: &str, positions: &[u64]) -> Result<i64, L2Error> {
        let s = &self.scripts.bloom_add;
        self.call("bloom", |mut c| async move {
            s.key(bits).arg(positions).invoke_async(&mut c).await
        })
        .await
    }

    /// False when the rebuild lock was lost (the rebuild must stop).
    pub async fn bloom_rebuild_batch(
        &self,
        bits: &str,
        lock: &str,
        token: &str,
        lock_ttl: Duration,
        positions: &[u64],
    ) -> Result<bool, L2Error> {
        let s = &self.scripts.bloom_batch;
        let ms = lock_ttl.as_millis() as u64;
        self.call("bloom", |mut c| async move {
            let n: i64 = s
                .key(bits)
                .key(lock)
                .arg(token)
                .arg(ms)
                .arg(positions)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn bloom_rebuild_finish(
        &self,
        bits: &str,
        lock: &str,
        ready: &str,
        token: &str,
    ) -> Result<bool, L2Error> {
        let s = &self.scripts.bloom_finish;
        self.call("bloom", |mut c| async move {
            let n: i64 = s
                .key(bits)
                .key(lock)
                .key(ready)
                .arg(token)
                .invoke_async(&mut c)
                .await?;
            Ok(n == 1)
        })
        .await
    }
}
