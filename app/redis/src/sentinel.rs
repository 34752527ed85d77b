//! A multiplexed connection to the master a Sentinel set names, that follows failovers.
//!
//! The master is looked up lazily (first command) and again whenever the connection in use
//! fails in a way that says the master is gone or no longer master: connection errors,
//! timeouts, `READONLY` (the old master came back as a replica), `LOADING`, `MASTERDOWN`.
//! A command abandoned by its caller before the answer (the caller's own timeout) counts
//! too: a frozen or cut-off master sends no error at all. Lookups are serialised and
//! rate-limited, so a failover does not turn every waiting request into a round of
//! sentinel queries. redis-rs checks that the node it is given
//! says `role:master` before handing it out.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};

use super::Timeouts;
use super::target::SentinelTarget;

/// Least time between two master lookups.
const LOOKUP_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Current {
    generation: u64,
    conn: MultiplexedConnection,
}

struct State {
    current: Option<Current>,
    generation: u64,
    last_lookup: Option<Instant>,
}

struct Shared {
    /// Held while a lookup runs (redis-rs's client needs `&mut`).
    resolver: tokio::sync::Mutex<SentinelClient>,
    state: Mutex<State>,
    timeouts: Timeouts,
    db: i64,
}

/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SentinelConn {
    shared: Arc<Shared>,
}

/// Whether `e` means the connection no longer reaches a working master.
pub(crate) fn needs_new_master(e: &RedisError) -> bool {
    use redis::ServerErrorKind as S;
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(S::ReadOnly | S::BusyLoading | S::MasterDown)
        )
}

impl SentinelConn {
    /// Builds the client; nothing is connected until the first command.
    pub fn new(target: &SentinelTarget, timeouts: Timeouts) -> RedisResult<Self> {
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(target.data_node_settings()?);
        let client = SentinelClient::build(
            target.sentinel_urls(),
            target.master.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(Self {
            shared: Arc::new(Shared {
                resolver: tokio::sync::Mutex::new(client),
                state: Mutex::new(State {
                    current: None,
                    generation: 0,
                    last_lookup: None,
                }),
                timeouts,
                db: target.db,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere cannot leave it half-written.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A client for the current master (asks the sentinels), bounded by the connect timeout.
    pub async fn master_client(&self) -> RedisResult<redis::Client> {
        let mut resolver = self.shared.resolver.lock().await;
        self.lookup(&mut resolver).await
    }

    async fn lookup(&self, resolver: &mut SentinelClient) -> RedisResult<redis::Client> {
        match tokio::time::timeout(self.shared.timeouts.connect, resolver.async_get_client()).await
        {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "no sentinel answered within the connect timeout",
            ))),
        }
    }

    async fn current(&self) -> RedisResult<Current> {
        if let Some(c) = self.state().current.clone() {
            return Ok(c);
        }
        // Held through lookup and connect: callers queue behind one lookup, then share it.
        let mut resolver = self.shared.resolver.lock().await;
        {
            let mut st = self.state();
            if let Some(c) = st.current.clone() {
                return Ok(c);
            }
            if st
                .last_lookup
                .is_some_and(|t| t.elapsed() < LOOKUP_INTERVAL)
            {
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "master lookup failed a moment ago; not retried yet",
                )));
            }
            st.last_lookup = Some(Instant::now());
        }
        let client = self.lookup(&mut resolver).await?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.shared.timeouts.connect))
            .set_response_timeout(Some(self.shared.timeouts.response));
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        tracing::info!(
            master = %client.get_connection_info().addr(),
            "connected to the master named by the sentinels"
        );
        let mut st = self.state();
        st.generation += 1;
        let c = Current {
            generation: st.generation,
            conn,
        };
        st.current = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection of `generation` (not a newer one another caller made).
    fn drop_connection(&self, generation: u64, why: &dyn std::fmt::Display) {
        let mut st = self.state();
        if st.current.as_ref().map(|c| c.generation) == Some(generation) {
            tracing::warn!(error = %why, "master connection failed; asking the sentinels again");
            st.current = None;
        }
    }

    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut MultiplexedConnection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut c = self.current().await?;
        let mut in_flight = InFlight {
            conn: self,
            generation: c.generation,
            answered: false,
        };
        let res = f(&mut c.conn).await;
        in_flight.answered = true;
        if let Err(e) = &res
            && needs_new_master(e)
        {
            self.drop_connection(c.generation, e);
        }
        res
    }
}

/// A command on its way. Dropped before its answer means the caller gave up waiting (its
/// own timeout): the master may be frozen or cut off, where no error ever arrives, so the
/// next command asks the sentinels again (a healthy master costs one lookup).
struct InFlight<'a> {
    conn: &'a SentinelConn,
    generation: u64,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.conn.drop_connection(
                self.generation,
                &"a command was abandoned before its answer (caller's timeout)",
            );
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        Box::pin(async move { self.run(async |c| c.req_packed_command(cmd).await).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.run(async |c| c.req_packed_commands(cmd, offset, count).await)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}
