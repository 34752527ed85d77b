//! The RabbitMQ backend of the queue (`queue.backend = "rabbitmq"`).
//!
//! The broker carries the messages: durable queues, persistent messages, publisher
//! confirms, manual acknowledgements with a prefetch limit, retries and delayed jobs
//! through per-level delay queues (message TTL + dead-letter exchange), a dead-letter
//! queue per queue, and a topic exchange for first publishes so other consumers can bind
//! to the events they want. Redis keeps what the broker cannot: the job records (state,
//! attempts, history, result), idempotency keys, the rate-limit windows and an outbox of
//! publishes not confirmed yet. See `app/docs/queue.md`.

mod broker;
mod consume;
mod deliver;
mod dlq;
mod produce;
mod records;
mod scripts;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use self::broker::Broker;
use self::consume::Parked;
use self::produce::broker_err;
use super::client::QueueStats;
use super::transport::{Held, Prepared, Transport, Workers};
use super::worker::Shared;
use super::{DeadLetter, Enqueued, Queue, QueueError, QueueSettings};

/// The transport: one AMQP connection per process, opened on first use.
pub(crate) struct Rabbit {
    broker: Arc<Broker>,
}

impl Rabbit {
    pub(crate) fn new(settings: &QueueSettings) -> Self {
        Self {
            broker: Arc::new(Broker::new(
                &settings.rabbitmq_url,
                &settings.key_prefix,
                Duration::from_millis(settings.rabbitmq_publish_timeout_ms),
            )),
        }
    }
}

#[async_trait]
impl Transport for Rabbit {
    async fn connect(&self) -> Result<(), QueueError> {
        self.broker.link().await.map_err(broker_err)?;
        Ok(())
    }

    async fn enqueue(&self, q: &Queue, job: Prepared<'_>) -> Result<Enqueued, QueueError> {
        produce::enqueue(q, &self.broker, job).await
    }

    /// Declares the queue's exchange, queues and binding (once per process).
    async fn ensure_queue(&self, _q: &Queue, queue: &str) -> Result<(), QueueError> {
        let b = &self.broker;
        let link = b.link().await.map_err(broker_err)?;
        b.ensure(&link, queue).await.map_err(broker_err)
    }

    async fn stats(&self, q: &Queue, queue: &str) -> Result<QueueStats, QueueError> {
        produce::stats(q, &self.broker, queue).await
    }

    async fn dlq_list(
        &self,
        q: &Queue,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        dlq::list(q, &self.broker, queue, after, count).await
    }

    async fn dlq_replay(
        &self,
        q: &Queue,
        queue: &str,
        entry: &str,
    ) -> Result<Option<String>, QueueError> {
        dlq::replay(q, &self.broker, queue, entry).await
    }

    async fn dlq_replay_all(&self, q: &Queue, queue: &str) -> Result<Vec<String>, QueueError> {
        dlq::replay_all(q, &self.broker, queue).await
    }

    async fn dlq_purge(&self, q: &Queue, queue: &str) -> Result<u64, QueueError> {
        dlq::purge(q, &self.broker, queue).await
    }

    /// A consumer per queue (prefetch = the queue's concurrency), the outbox loop, and the
    /// pool's liveness key kept until the very end of shutdown (its running jobs still
    /// belong to it while they drain).
    async fn start_workers(
        &self,
        sh: &Arc<Shared>,
        queues: &[String],
    ) -> Result<Workers, QueueError> {
        let parked = Arc::new(Parked::default());
        let keepalive = tokio::spawn(consume::alive(sh.clone()));
        let mut loops = Vec::new();
        for q in queues {
            let prefetch = u16::try_from(sh.queue.settings().concurrency(q)).unwrap_or(u16::MAX);
            loops.push(tokio::spawn(consume::consume(
                sh.clone(),
                self.broker.clone(),
                parked.clone(),
                Arc::from(q.as_str()),
                prefetch,
            )));
        }
        loops.push(tokio::spawn(consume::outbox(
            sh.clone(),
            self.broker.clone(),
        )));
        Ok(Workers {
            loops,
            held: Some(Box::new(PoolHold {
                parked,
                keepalive: Some(keepalive),
            })),
        })
    }

    async fn close(&self) {
        self.broker.close().await;
    }
}

/// What a pool holds on RabbitMQ until its running jobs are over.
struct PoolHold {
    parked: Arc<Parked>,
    /// Refreshes `{p}:alive:{consumer}`.
    keepalive: Option<JoinHandle<()>>,
}

#[async_trait]
impl Held for PoolHold {
    async fn release(mut self: Box<Self>, sh: &Shared) {
        self.parked.close_all().await;
        if let Some(k) = self.keepalive.take() {
            k.abort();
            let _ = k.await;
        }
        // Nothing of ours runs any more: redeliveries of abandoned jobs may start now.
        let mut c = sh.queue.connection();
        let _: redis::RedisResult<i64> =
            redis::AsyncCommands::del(&mut c, consume::alive_key(sh)).await;
    }
}

impl Drop for PoolHold {
    fn drop(&mut self) {
        if let Some(k) = &self.keepalive {
            k.abort();
        }
    }
}
