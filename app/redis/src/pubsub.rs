//! Subscriptions that survive reconnections and failovers.
//!
//! [`Subscription::next`] yields messages and says when the subscription was lost and when
//! it is in place again; messages published in between are lost (pub/sub is at most once),
//! so a user that must not miss one (the cache's L1) treats [`PubSubEvent::Subscribed`]
//! after a [`PubSubEvent::Lost`] as "something may have changed".
//!
//! - single server: `SUBSCRIBE` on a dedicated connection;
//! - sentinel: the same on the current master (asked of the sentinels at each attempt);
//! - cluster: sharded pub/sub (`SSUBSCRIBE`, Redis 7) through a RESP3 cluster connection.
//!   redis-rs reconnects a node's connection but does not move a shard channel's
//!   subscription to the replica promoted in its place, so on any disconnection or server
//!   `sunsubscribe` (slot moved) the whole subscriber connection is rebuilt from a fresh
//!   slot map and every channel subscribed again.
//!
//! Every [`HEARTBEAT`] the subscriber PINGs (every master, in a cluster); no answer within
//! the response timeout (at least 1 s) counts as a lost subscription.

use std::time::Duration;

use futures::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;

use super::{Backend, RedisConn, cluster_builder};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A subscriber PINGs its server(s) this often: a frozen or partitioned server sends no
/// error, only silence, and a subscription must not die silently.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// What a subscription reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubEvent {
    /// Listening on every channel: first time, or again after [`PubSubEvent::Lost`].
    Subscribed,
    /// The subscription broke; the next call to [`Subscription::next`] reconnects.
    Lost,
    Message {
        channel: String,
        payload: Vec<u8>,
    },
}

enum State {
    Idle,
    Plain {
        sink: redis::aio::PubSubSink,
        stream: redis::aio::PubSubStream,
    },
    Sharded {
        conn: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

/// A subscription to a fixed set of channels; see the module docs.
pub struct Subscription {
    conn: RedisConn,
    channels: Vec<String>,
    state: State,
    backoff: Option<Duration>,
    heartbeat: tokio::time::Interval,
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn heartbeat() -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

impl Subscription {
    pub(super) fn new(conn: RedisConn, channels: Vec<String>) -> Self {
        Self {
            conn,
            channels,
            state: State::Idle,
            backoff: None,
            heartbeat: heartbeat(),
        }
    }

    /// The next event; reconnects (with backoff) as long as it is polled. Dropping the
    /// future loses nothing but a connection attempt or a heartbeat.
    pub async fn next(&mut self) -> PubSubEvent {
        let ping_bound = self.conn.timeouts.response.max(Duration::from_secs(1));
        loop {
            match &mut self.state {
                State::Idle => {
                    if let Some(d) = self.backoff {
                        tokio::time::sleep(d).await;
                    }
                    let bound = self.conn.timeouts.connect + self.conn.timeouts.response * 2;
                    match tokio::time::timeout(bound, connect(&self.conn, &self.channels)).await {
                        Ok(Ok(state)) => {
                            self.state = state;
                            self.backoff = Some(BACKOFF_FIRST);
                            self.heartbeat = heartbeat();
                            return PubSubEvent::Subscribed;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "subscribe failed"),
                        Err(_) => tracing::debug!("subscribe timed out"),
                    }
                    self.backoff = Some(
                        self.backoff
                            .map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX)),
                    );
                }
                State::Plain { sink, stream } => {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                return PubSubEvent::Message {
                                    channel: msg.get_channel_name().to_string(),
                                    payload: msg.get_payload_bytes().to_vec(),
                                };
                            }
                            None => return self.lost("connection closed"),
                        },
                        _ = self.heartbeat.tick() => {
                            let ping = tokio::time::timeout(ping_bound, sink.ping::<Value>()).await;
                            if !matches!(ping, Ok(Ok(_))) {
                                return self.lost("no answer to a heartbeat PING");
                            }
                        }
                    }
                }
                State::Sharded { conn, pushes } => {
                    let push = tokio::select! {
                        p = pushes.recv() => p,
                        _ = self.heartbeat.tick() => {
                            // Sent to every master: any of them silent breaks the subscription.
                            let ping = tokio::time::timeout(
                                ping_bound,
                                redis::cmd("PING").query_async::<Value>(conn),
                            )
                            .await;
                            if !matches!(ping, Ok(Ok(_))) {
                                return self.lost("a master did not answer a heartbeat PING");
                            }
                            continue;
                        }
                    };
                    let Some(push) = push else {
                        return self.lost("connection closed");
                    };
                    match push.kind {
                        PushKind::SMessage | PushKind::Message => {
                            if let [ch, payload, ..] = push.data.as_slice()
                                && let (Some(ch), Some(payload)) = (bytes(ch), bytes(payload))
                            {
                                return PubSubEvent::Message {
                                    channel: String::from_utf8_lossy(&ch).into_owned(),
                                    payload,
                                };
                            }
                        }
                        PushKind::Disconnection => return self.lost("a node disconnected"),
                        PushKind::SUnsubscribe => {
                            return self
                                .lost("the server unsubscribed a shard channel (slot moved)");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn lost(&mut self, why: &str) -> PubSubEvent {
        tracing::info!(why, "subscription lost; subscribing again");
        self.state = State::Idle;
        PubSubEvent::Lost
    }
}

async fn connect(conn: &RedisConn, channels: &[String]) -> RedisResult<State> {
    let node = match &conn.backend {
        Backend::Single { client, .. } => client.clone(),
        Backend::Sentinel(s) => s.master_client().await?,
        Backend::Cluster { target, .. } => {
            let (tx, pushes) = mpsc::unbounded_channel();
            let client = cluster_builder(target, conn.timeouts)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .build()?;
            let mut conn = client.get_async_connection().await?;
            // One command per channel: channels of different slots cannot share one.
            for ch in channels {
                conn.ssubscribe(ch).await?;
            }
            return Ok(State::Sharded { conn, pushes });
        }
    };
    let (mut sink, stream) = node.get_async_pubsub().await?.split();
    sink.subscribe(channels).await?;
    Ok(State::Plain { sink, stream })
}
