//! Concurrent GETs coalesced into one MGET: auto-pipelining (ioredis's
//! `enableAutoPipelining`), for reads.
//!
//! A cache hit costs the app a write and a read on the Redis socket, and Redis the same; on
//! loopback these syscalls, and the wakeups behind them, are most of the hit's cost beyond
//! HTTP. redis-rs writes each command as soon as its connection task runs, which under tokio
//! is right after the requesting task yields, so concurrent requests never share a write.
//!
//! Here a batcher task sends the GETs. While its batch is in flight, the GETs that arrive
//! wait; when it returns, they all go as one `MGET` (one write, one read, one command for
//! Redis), as Nagle's algorithm holds small segments while one is unacknowledged. Waiting
//! behind the batch in flight costs a request little: the commands of one connection are
//! answered in order anyway, so a GET written at once would have been answered after that
//! batch too. A lone request pays one task hop; the caller's timeout covers its wait.
//!
//! In a Cluster the keys of one batch live on different slots: there each GET goes out by
//! itself.

use redis::{RedisError, RedisResult};
use tokio::sync::{mpsc, oneshot};

use crate::{RedisConn, RedisMode};

/// The most keys one MGET carries; more waiting GETs make another batch.
pub const MAX_BATCH: usize = 64;

type Reply = RedisResult<Option<Vec<u8>>>;

struct Waiting {
    key: String,
    reply: oneshot::Sender<Reply>,
}

/// GETs on a [`RedisConn`], coalesced while concurrent. Cheap to clone.
#[derive(Clone)]
pub struct GetCoalescer {
    conn: RedisConn,
    /// `None` in a Cluster, or when made outside a tokio runtime: GETs go out one by one.
    queue: Option<mpsc::UnboundedSender<Waiting>>,
}

impl GetCoalescer {
    /// With `enabled`, starts the batcher task on the current tokio runtime; it ends when
    /// the last clone is dropped.
    pub fn new(conn: RedisConn, enabled: bool) -> Self {
        let batched = enabled && conn.mode() != RedisMode::Cluster;
        let queue = match tokio::runtime::Handle::try_current() {
            Ok(rt) if batched => {
                let (tx, rx) = mpsc::unbounded_channel();
                rt.spawn(batcher(conn.clone(), rx));
                Some(tx)
            }
            _ => None,
        };
        Self { conn, queue }
    }

    pub fn coalescing(&self) -> bool {
        self.queue.is_some()
    }

    /// `GET key`. The caller's timeout covers the wait in the batch as well.
    pub async fn get(&self, key: &str) -> Reply {
        let Some(queue) = &self.queue else {
            return get_one(self.conn.clone(), key).await;
        };
        let (reply, rx) = oneshot::channel();
        let waiting = Waiting {
            key: key.to_owned(),
            reply,
        };
        if queue.send(waiting).is_err() {
            // The batcher is gone (runtime shutting down): nothing is lost by asking directly.
            return get_one(self.conn.clone(), key).await;
        }
        rx.await.unwrap_or_else(|_| {
            Err(RedisError::from((
                redis::ErrorKind::Io,
                "the GET batcher stopped before answering",
            )))
        })
    }
}

async fn get_one(mut conn: RedisConn, key: &str) -> Reply {
    redis::cmd("GET").arg(key).query_async(&mut conn).await
}

async fn batcher(conn: RedisConn, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    while let Some(first) = rx.recv().await {
        // Let the tasks already runnable on this worker queue their GETs before we send.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        // A caller that timed out has dropped its receiver: don't ask Redis for it.
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // One batch in flight at a time: what arrives meanwhile makes the next one.
        send(conn.clone(), batch).await;
    }
}

async fn send(mut conn: RedisConn, batch: Vec<Waiting>) {
    if let [one] = &batch[..] {
        let r = get_one(conn, &one.key).await;
        if let Some(w) = batch.into_iter().next() {
            let _ = w.reply.send(r);
        }
        return;
    }
    let mut cmd = redis::cmd("MGET");
    for w in &batch {
        cmd.arg(&w.key);
    }
    let r: RedisResult<Vec<Option<Vec<u8>>>> = cmd.query_async(&mut conn).await;
    match r {
        Ok(values) if values.len() == batch.len() => {
            for (w, v) in batch.into_iter().zip(values) {
                let _ = w.reply.send(Ok(v));
            }
        }
        Ok(values) => {
            let e = RedisError::from((
                redis::ErrorKind::Parse,
                "MGET answered a different number of values than keys asked",
                format!("{} keys, {} values", batch.len(), values.len()),
            ));
            for w in batch {
                let _ = w.reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for w in batch {
                let _ = w.reply.send(Err(e.clone()));
            }
        }
    }
}
