//! One AMQP connection per process, re-opened when the broker goes away, and publishing
//! with publisher confirms: a publish returns only once the broker has the message.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::topology::{self, Names};

/// Bound on one connect or one confirm.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("rabbitmq: {0}")]
    Other(String),
}

/// An open connection and its confirm-mode publishing channel.
pub(crate) struct Link {
    pub conn: Connection,
    publish: Channel,
}

impl Link {
    fn alive(&self) -> bool {
        self.conn.status().connected() && self.publish.status().connected()
    }
}

/// Where a message goes.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// First publish: the topic exchange, routing key `{queue}.{kind}`.
    Topic { queue: String, kind: String },
    /// Straight into a queue (work, delay level or dead letters) by the default exchange.
    Direct(String),
}

pub(crate) struct Broker {
    url: String,
    /// How long a publish keeps retrying (reconnecting) before it reports an error
    /// (`queue.rabbitmq_publish_timeout_ms`); the outbox re-sends anything given up on.
    publish_deadline: Duration,
    pub names: Names,
    link: Mutex<Option<Arc<Link>>>,
    /// Queues whose topology was declared by this process (durable: survives restarts).
    declared: Mutex<HashSet<String>>,
    /// The coalesced job-record calls that go with this process's publishes.
    pub records: super::records::Records,
}

/// One message for [`Broker::publish`], as each attempt sends it.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    queue: &'a str,
    route: &'a Route,
    message_id: &'a str,
    body: &'a [u8],
}

impl Broker {
    pub fn new(url: &str, prefix: &str, publish_deadline: Duration) -> Self {
        Self {
            url: url.to_string(),
            publish_deadline,
            names: Names::new(prefix),
            link: Mutex::new(None),
            declared: Mutex::new(HashSet::new()),
            records: super::records::Records::new(),
        }
    }

    /// The open connection, connecting (once, for all callers) when there is none.
    pub async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        let mut g = self.link.lock().await;
        if let Some(l) = g.as_ref()
            && l.alive()
        {
            return Ok(l.clone());
        }
        let props = ConnectionProperties::default()
            .with_connection_name(format!("app-{}", std::process::id()).into());
        let conn = tokio::time::timeout(STEP_TIMEOUT, Connection::connect(&self.url, props))
            .await
            .map_err(|_| BrokerError::Other("connect timed out".into()))??;
        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let l = Arc::new(Link { conn, publish });
        *g = Some(l.clone());
        tracing::info!("connected to rabbitmq");
        Ok(l)
    }

    /// Forgets `l` if it is broken, so the next call reconnects. A connection that is up
    /// but lost its publishing channel is closed (its consumers reconnect).
    pub async fn drop_link(&self, l: &Arc<Link>) {
        if l.alive() {
            return;
        }
        let mut g = self.link.lock().await;
        if g.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, l)) {
            *g = None;
            if l.conn.status().connected() {
                let l = l.clone();
                tokio::spawn(async move {
                    let _ = l.conn.close(320, "publishing channel lost".into()).await;
                });
            }
        }
    }

    /// Declares the topology of `queue` once per process.
    pub async fn ensure(&self, link: &Link, queue: &str) -> Result<(), BrokerError> {
        if self.declared.lock().await.contains(queue) {
            return Ok(());
        }
        let ch = link.conn.create_channel().await?;
        let r = topology::declare(&ch, &self.names, queue).await;
        let _ = ch.close(200, "declared".into()).await;
        r?;
        self.declared.lock().await.insert(queue.to_string());
        Ok(())
    }

    /// Forgets that `queue` was declared (after a consumer failed on it: the broker may have
    /// lost or deleted it), so the next use declares it again.
    pub async fn forget(&self, queue: &str) {
        self.declared.lock().await.remove(queue);
    }

    /// Publishes a persistent message and waits for the broker's confirm, reconnecting and
    /// retrying until the publish deadline. `queue` is the job's queue (its topology is
    /// declared first, so the message cannot be dropped as unroutable).
    pub async fn publish(
        &self,
        queue: &str,
        route: &Route,
        message_id: &str,
        body: &[u8],
    ) -> Result<(), BrokerError> {
        let m = Outgoing {
            queue,
            route,
            message_id,
            body,
        };
        let deadline = tokio::time::Instant::now() + self.publish_deadline;
        let mut pause = Duration::from_millis(100);
        loop {
            let err = match self.publish_once(m).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(err);
            }
            tracing::debug!(error = %err, "publish failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    async fn publish_once(&self, m: Outgoing<'_>) -> Result<(), BrokerError> {
        let link = self.link().await?;
        let r = async {
            self.ensure(&link, m.queue).await?;
            let (exchange, key) = match m.route {
                Route::Topic { queue, kind } => {
                    (self.names.exchange(), Names::routing_key(queue, kind))
                }
                Route::Direct(q) => (String::new(), q.clone()),
            };
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(m.message_id));
            let confirm = link
                .publish
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    m.body,
                    props,
                )
                .await?;
            let c = tokio::time::timeout(STEP_TIMEOUT, confirm)
                .await
                .map_err(|_| BrokerError::Other("no confirm in time".into()))??;
            match c {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) => {
                    // Returned as unroutable: the topology is gone (deleted by hand?).
                    self.declared.lock().await.remove(m.queue);
                    Err(BrokerError::Other(format!(
                        "message for {} was unroutable",
                        m.queue
                    )))
                }
                Confirmation::Nack(_) => Err(BrokerError::Other("broker nacked".into())),
                Confirmation::NotRequested => {
                    Err(BrokerError::Other("confirms not enabled".into()))
                }
            }
        }
        .await;
        if let Err(BrokerError::Amqp(_)) = &r {
            self.drop_link(&link).await;
        }
        r
    }

    /// A fresh channel on the current connection (consumers, dead-letter reads, stats).
    pub async fn channel(&self) -> Result<(Arc<Link>, Channel), BrokerError> {
        let link = self.link().await?;
        match link.conn.create_channel().await {
            Ok(ch) => Ok((link, ch)),
            Err(e) => {
                self.drop_link(&link).await;
                Err(e.into())
            }
        }
    }

    /// Closes the connection (graceful shutdown of a process).
    pub async fn close(&self) {
        if let Some(l) = self.link.lock().await.take() {
            let _ = l.conn.close(200, "shutdown".into()).await;
        }
    }
}
