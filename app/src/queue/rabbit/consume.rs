//! Consumers of one pool: per queue a loop that opens a channel (prefetch = the queue's
//! concurrency, manual acks), consumes, and reopens everything after the broker went away;
//! and one outbox loop that re-sends unconfirmed publishes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::broker::{Broker, BrokerError};
use super::{deliver, produce};
use crate::queue::worker::Shared;

/// Channels of stopped consumers, kept open until the pool's running jobs acknowledged;
/// closing them returns unstarted prefetched and abandoned deliveries to their queues.
#[derive(Default)]
pub(super) struct Parked(std::sync::Mutex<Vec<lapin::Channel>>);

impl Parked {
    fn park(&self, ch: lapin::Channel) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ch);
    }

    pub(super) async fn close_all(&self) {
        let parked = std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for ch in parked {
            let _ = ch.close(200, "worker shutdown".into()).await;
        }
    }
}

pub(super) async fn consume(
    sh: Arc<Shared>,
    b: Arc<Broker>,
    parked: Arc<Parked>,
    queue: Arc<str>,
    prefetch: u16,
) {
    let mut wait = Duration::from_millis(200);
    while !sh.stop.is_cancelled() {
        let began = tokio::time::Instant::now();
        match session(&sh, &b, &parked, &queue, prefetch).await {
            Ok(()) => return,
            Err(e) => {
                if began.elapsed() > Duration::from_secs(10) {
                    wait = Duration::from_millis(200);
                }
                tracing::warn!(queue = %queue, error = %e, retry_in_ms = wait.as_millis() as u64, "consumer lost the broker; reconnecting");
                if !sh.pause(wait).await {
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One channel's life. Ok when the pool stops (the channel is parked open, so running jobs
/// can still acknowledge); Err when the channel or connection failed.
async fn session(
    sh: &Arc<Shared>,
    b: &Arc<Broker>,
    parked: &Parked,
    queue: &Arc<str>,
    prefetch: u16,
) -> Result<(), BrokerError> {
    let (link, ch) = b.channel().await?;
    let r = async {
        b.ensure(&link, queue).await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let tag = format!("{}.{}", sh.consumer, queue);
        let mut consumer = ch
            .basic_consume(
                b.names.work(queue).into(),
                tag.clone().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %queue, prefetch, "consuming from rabbitmq");
        loop {
            tokio::select! {
                _ = sh.stop.cancelled() => {
                    // No new deliveries; the prefetched ones never started stay
                    // unacknowledged and go back to the queue when the channel closes.
                    let _ = ch.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
                    return Ok(());
                }
                d = consumer.next() => match d {
                    Some(Ok(d)) => {
                        sh.tracker.spawn(deliver::run(sh.clone(), b.clone(), queue.clone(), d));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(BrokerError::Other("the broker cancelled the consumer".into())),
                },
            }
        }
    }
    .await;
    match r {
        Ok(()) => {
            parked.park(ch);
            Ok(())
        }
        Err(e) => {
            let _ = ch.close(200, "reconnecting".into()).await;
            b.drop_link(&link).await;
            b.forget(queue).await;
            Err(e)
        }
    }
}

/// Keeps `{p}:alive:{consumer}` set while the pool lives (expiring after `claim_idle_ms`), so
/// deliveries of its running jobs elsewhere wait instead of running them twice. Runs until
/// the pool aborts it at the end of its shutdown.
pub(super) async fn alive(sh: Arc<Shared>) {
    let key = alive_key(&sh);
    let ttl = sh.queue.settings().claim_idle_ms;
    let every = Duration::from_millis((ttl / 3).max(50));
    loop {
        let mut c = sh.queue.connection();
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "liveness key not refreshed");
        }
        tokio::time::sleep(every).await;
    }
}

pub(super) fn alive_key(sh: &Shared) -> String {
    sh.queue.keys().alive(&sh.consumer)
}

/// Re-sends outbox entries every second while the pool runs.
pub(super) async fn outbox(sh: Arc<Shared>, b: Arc<Broker>) {
    while sh.pause(Duration::from_secs(1)).await {
        if let Err(e) = produce::flush_outbox(&sh.queue, &b).await {
            tracing::debug!(error = %e, "outbox flush failed");
        }
    }
}
