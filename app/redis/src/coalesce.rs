//! Concurrent GETs coalesced into one MGET: auto-pipelining (ioredis's
//! `enableAutoPipelining`), for reads.
//!
//! A cache hit costs the app a write and a read on the Redis socket, and Redis the same; on
//! loopback these syscalls, and the wakeups behind them, are most of the hit's cost beyond
//! HTTP. redis-rs writes each command as soon as its connection task runs, which under tokio
//! is right after the requesting task yields, so concurrent requests never share a write.
//!
//! Here a GET goes out at once when nothing is in flight, from the caller's own task (a lone
//! request pays a lock and nothing more). While a GET or a batch is in flight, the GETs that
//! arrive wait; when it returns, they all go as one `MGET` (one write, one read, one command
//! for Redis), as Nagle's algorithm holds small segments while one is unacknowledged.
//! Waiting behind the one in flight costs a request little: the commands of one connection
//! are answered in order anyway, so a GET written at once would have been answered after it
//! too. The caller's timeout covers its wait.
//!
//! In a Cluster the keys of one batch live on different slots: there each GET goes out by
//! itself.

use std::sync::{Arc, Mutex, MutexGuard};

use redis::{RedisError, RedisResult};
use tokio::sync::oneshot;

use crate::{RedisConn, RedisMode};

/// The most keys one MGET carries; more waiting GETs make another batch.
pub const MAX_BATCH: usize = 64;

type Reply = RedisResult<Option<Vec<u8>>>;

struct Waiting {
    key: String,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct State {
    /// A GET or a batch is on its way to Redis: new GETs wait for it.
    in_flight: bool,
    waiting: Vec<Waiting>,
}

struct Shared {
    conn: RedisConn,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-changed (each critical
        // section is one field write or one `take`), so a poisoned lock is still good.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is in flight returned (or was abandoned): the GETs that waited go next, as one
    /// batch sent from a task of its own, or nothing is in flight any more.
    fn hand_off(self: &Arc<Self>) {
        {
            let mut st = self.state();
            if st.waiting.is_empty() {
                st.in_flight = false;
                return;
            }
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let flight = Flight(self.clone());
                rt.spawn(async move {
                    // Let the tasks runnable now queue their GETs too: larger batches.
                    tokio::task::yield_now().await;
                    let batch = {
                        let mut st = flight.0.state();
                        let n = st.waiting.len().min(MAX_BATCH);
                        let rest = st.waiting.split_off(n);
                        std::mem::replace(&mut st.waiting, rest)
                    };
                    send(flight.0.conn.clone(), batch).await;
                    drop(flight);
                });
            }
            // No runtime (shutting down): the waiters' receivers fail with an error.
            Err(_) => {
                let mut st = self.state();
                st.waiting.clear();
                st.in_flight = false;
            }
        }
    }
}

/// Hands off when dropped: after the answer, and also when the future carrying it is
/// cancelled (a caller's timeout), so the waiting GETs are never stranded.
struct Flight(Arc<Shared>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.hand_off();
    }
}

/// GETs on a [`RedisConn`], coalesced while concurrent. Cheap to clone.
#[derive(Clone)]
pub struct GetCoalescer(Mode);

#[derive(Clone)]
enum Mode {
    /// Disabled, or in a Cluster: each GET goes out by itself.
    Direct(RedisConn),
    Coalescing(Arc<Shared>),
}

impl GetCoalescer {
    pub fn new(conn: RedisConn, enabled: bool) -> Self {
        Self(if enabled && conn.mode() != RedisMode::Cluster {
            Mode::Coalescing(Arc::new(Shared {
                conn,
                state: Mutex::default(),
            }))
        } else {
            Mode::Direct(conn)
        })
    }

    pub fn coalescing(&self) -> bool {
        matches!(self.0, Mode::Coalescing(_))
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Reply {
        let shared = match &self.0 {
            Mode::Direct(conn) => return get_one(conn.clone(), key).await,
            Mode::Coalescing(shared) => shared,
        };
        let rx = {
            let mut st = shared.state();
            if st.in_flight {
                let (reply, rx) = oneshot::channel();
                st.waiting.push(Waiting {
                    key: key.to_owned(),
                    reply,
                });
                Some(rx)
            } else {
                st.in_flight = true;
                None
            }
        };
        match rx {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                Err(RedisError::from((
                    redis::ErrorKind::Io,
                    "the batch carrying this GET was dropped before its answer",
                )))
            }),
            None => {
                let _flight = Flight(shared.clone());
                get_one(shared.conn.clone(), key).await
            }
        }
    }
}

async fn get_one(mut conn: RedisConn, key: &str) -> Reply {
    redis::cmd("GET").arg(key).query_async(&mut conn).await
}

/// One MGET for the batch (a GET for one key), each answer to its caller.
async fn send(mut conn: RedisConn, mut batch: Vec<Waiting>) {
    // A caller that timed out has dropped its receiver: don't ask Redis for it.
    batch.retain(|w| !w.reply.is_closed());
    if batch.is_empty() {
        return;
    }
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
    let r = r.and_then(|values| {
        if values.len() == batch.len() {
            Ok(values)
        } else {
            Err(RedisError::from((
                redis::ErrorKind::Parse,
                "MGET answered a different number of values than keys asked",
                format!("{} keys, {} values", batch.len(), values.len()),
            )))
        }
    });
    match r {
        Ok(values) => {
            for (w, v) in batch.into_iter().zip(values) {
                let _ = w.reply.send(Ok(v));
            }
        }
        Err(e) => {
            for w in batch {
                let _ = w.reply.send(Err(e.clone()));
            }
        }
    }
}
