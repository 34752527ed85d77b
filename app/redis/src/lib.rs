//! One Redis connection for the three deployments `redis.url` can name: a single server, a
//! Sentinel set, or a Redis Cluster ([`RedisTarget`]).
//!
//! [`RedisConn`] implements redis-rs's `ConnectionLike`, so commands, pipelines and scripts
//! are written once. Each mode reconnects by itself:
//! - single: redis-rs's `ConnectionManager` (reconnects after a failure);
//! - sentinel: [`sentinel::SentinelConn`] asks the sentinels again for the master whenever
//!   the connection fails or the node stops being master, so a failover is followed;
//! - cluster: redis-rs's cluster connection (slot map, `MOVED`/`ASK` redirects, topology
//!   refresh after errors, reconnection to every node).
//!
//! This crate retries nothing itself after a command reached a server, since that could
//! apply a write twice: callers decide (the cache falls back to the database and retries its
//! deletes; the queue's scripts are fenced, so it repeats them while [`is_transient`] says the
//! error will pass). redis-rs's cluster connection does repeat a command after a redirect or a
//! dropped connection. Pub/sub has its own connection per subscriber
//! ([`pubsub::Subscription`]).

mod coalesce;
mod pubsub;
mod sentinel;
pub mod slot;
mod target;

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

pub use coalesce::{GetCoalescer, MAX_BATCH};
pub use pubsub::{PubSubEvent, Subscription};
pub use target::{ClusterTarget, HostPort, RedisMode, RedisTarget, SentinelTarget, TargetError};

use sentinel::SentinelConn;

/// Whether `e` is expected to pass once a failover, a reconnection or a slot move is over
/// (connection lost or refused, timeout, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`
/// from a demoted master, `LOADING`), as opposed to an error that a retry would only repeat
/// (a script error, a wrong type, `NOPERM`).
pub fn is_transient(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind as S};
    sentinel::needs_new_master(e)
        || matches!(
            e.kind(),
            ErrorKind::Server(S::TryAgain | S::ClusterDown | S::Moved | S::Ask)
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
        )
}

/// Bounds on connecting and on one answer.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

#[derive(Clone)]
enum Backend {
    Single {
        conn: ConnectionManager,
        client: redis::Client,
    },
    Sentinel(SentinelConn),
    Cluster {
        conn: ClusterConnection,
        target: ClusterTarget,
    },
}

/// A connection to Redis in any of the three modes. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct RedisConn {
    backend: Backend,
    timeouts: Timeouts,
}

impl RedisConn {
    /// Sets the connection up without connecting: the first command connects, so an absent
    /// Redis does not stop the app from starting.
    pub fn open(target: &RedisTarget, timeouts: Timeouts) -> RedisResult<Self> {
        let backend = match target {
            RedisTarget::Single { url } => {
                let client = redis::Client::open(url.as_str())?;
                let cfg = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeouts.response))
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), cfg)?;
                Backend::Single { conn, client }
            }
            RedisTarget::Sentinel(s) => Backend::Sentinel(SentinelConn::new(s, timeouts)?),
            RedisTarget::Cluster(c) => {
                let client = cluster_builder(c, timeouts).build()?;
                let conn = client
                    .get_pending_async_connection_with_config(redis::cluster::ClusterConfig::new());
                Backend::Cluster {
                    conn,
                    target: c.clone(),
                }
            }
        };
        Ok(Self { backend, timeouts })
    }

    pub fn mode(&self) -> RedisMode {
        match self.backend {
            Backend::Single { .. } => RedisMode::Single,
            Backend::Sentinel(_) => RedisMode::Sentinel,
            Backend::Cluster { .. } => RedisMode::Cluster,
        }
    }

    /// `PUBLISH`, or in a cluster `SPUBLISH` (sharded pub/sub: the message goes only to the
    /// shard that owns the channel's slot instead of to every node).
    pub fn publish_cmd(&self, channel: &str, message: &str) -> Cmd {
        let name = match self.mode() {
            RedisMode::Cluster => "SPUBLISH",
            RedisMode::Single | RedisMode::Sentinel => "PUBLISH",
        };
        let mut c = redis::cmd(name);
        c.arg(channel).arg(message);
        c
    }

    /// A subscription to `channels` on its own connection (sharded in a cluster: then every
    /// channel name must carry a hash tag of its own slot, see [`slot::spread_tag`]).
    pub fn subscribe(&self, channels: Vec<String>) -> Subscription {
        Subscription::new(self.clone(), channels)
    }
}

fn cluster_builder(c: &ClusterTarget, t: Timeouts) -> ClusterClientBuilder {
    ClusterClientBuilder::new(c.seed_urls())
        .connection_timeout(t.connect)
        .response_timeout(t.response)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.backend {
            Backend::Single { conn, .. } => conn.req_packed_command(cmd),
            Backend::Sentinel(conn) => conn.req_packed_command(cmd),
            Backend::Cluster { conn, .. } => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.backend {
            Backend::Single { conn, .. } => conn.req_packed_commands(cmd, offset, count),
            Backend::Sentinel(conn) => conn.req_packed_commands(cmd, offset, count),
            Backend::Cluster { conn, .. } => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.backend {
            Backend::Single { conn, .. } => conn.get_db(),
            Backend::Sentinel(conn) => conn.get_db(),
            Backend::Cluster { conn, .. } => conn.get_db(),
        }
    }
}
