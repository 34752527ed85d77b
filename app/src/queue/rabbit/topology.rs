//! Names and declarations of the broker objects of one queue `Q` (prefix `p` =
//! `queue.key_prefix`):
//!
//! - exchange `p.jobs` (topic, durable): first publishes of jobs, routing key
//!   `{Q}.{kind}` (dots in `Q` become `:`), so anyone can bind a queue to e.g. `orders.*`;
//! - queue `p.Q` (durable): the work queue, bound to `p.jobs` with `{Q}.#`;
//! - queues `p.Q.delay.{ms}` (durable, `x-message-ttl` = ms, dead-lettered through the
//!   default exchange into `p.Q`): one per delay level, so a queue holds messages of one TTL
//!   only and expires them in order (no plugin needed);
//! - queue `p.Q.dead` (durable): dead letters.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// Delay levels (ms): 100 ms doubling up to about 55 minutes. A longer or odd delay hops
/// through several levels; each hop checks the job's due time, so nothing runs early.
pub(crate) const LEVELS_MS: [u64; 16] = {
    let mut l = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        l[i] = 100 << i;
        i += 1;
    }
    l
};

/// The level to wait in for `wait_ms`: the largest not above it (the smallest for less).
pub(crate) fn level_for(wait_ms: u64) -> u64 {
    LEVELS_MS
        .iter()
        .rev()
        .copied()
        .find(|l| *l <= wait_ms)
        .unwrap_or(LEVELS_MS[0])
}

#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    pub fn exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    pub fn work(&self, queue: &str) -> String {
        format!("{}.{queue}", self.prefix)
    }
    pub fn delay(&self, queue: &str, level_ms: u64) -> String {
        format!("{}.{queue}.delay.{level_ms}", self.prefix)
    }
    pub fn dead(&self, queue: &str) -> String {
        format!("{}.{queue}.dead", self.prefix)
    }
    /// Routing key of a job's first publish on the topic exchange.
    pub fn routing_key(queue: &str, kind: &str) -> String {
        format!("{}.{kind}", queue.replace('.', ":"))
    }
    pub fn binding(queue: &str) -> String {
        format!("{}.#", queue.replace('.', ":"))
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares the exchange and every queue of `queue` (idempotent: same arguments each time).
pub(crate) async fn declare(ch: &Channel, names: &Names, queue: &str) -> lapin::Result<()> {
    ch.exchange_declare(
        names.exchange().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let work = names.work(queue);
    ch.queue_declare(work.clone().into(), durable(), FieldTable::default())
        .await?;
    ch.queue_bind(
        work.clone().into(),
        names.exchange().into(),
        Names::binding(queue).into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for level in LEVELS_MS {
        ch.queue_declare(
            names.delay(queue, level).into(),
            durable(),
            delay_args(&work, level),
        )
        .await?;
    }
    ch.queue_declare(names.dead(queue).into(), durable(), FieldTable::default())
        .await?;
    Ok(())
}

fn delay_args(work: &str, level_ms: u64) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(level_ms as i64),
    );
    t.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    t.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(work)),
    );
    t
}

/// Ready messages in a queue that exists (declared with its real arguments first).
pub(crate) async fn ready_count(
    ch: &Channel,
    names: &Names,
    queue: &str,
) -> lapin::Result<(u64, u64, u64)> {
    let work = ch
        .queue_declare(names.work(queue).into(), durable(), FieldTable::default())
        .await?
        .message_count();
    let mut delayed = 0u64;
    for level in LEVELS_MS {
        delayed += u64::from(
            ch.queue_declare(
                names.delay(queue, level).into(),
                durable(),
                delay_args(&names.work(queue), level),
            )
            .await?
            .message_count(),
        );
    }
    let dead = ch
        .queue_declare(names.dead(queue).into(), durable(), FieldTable::default())
        .await?
        .message_count();
    Ok((u64::from(work), delayed, u64::from(dead)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(LEVELS_MS[0], 100);
        assert_eq!(LEVELS_MS[15], 3_276_800);
        assert_eq!(level_for(0), 100);
        assert_eq!(level_for(99), 100);
        assert_eq!(level_for(150), 100);
        assert_eq!(level_for(1_000), 800);
        assert_eq!(level_for(10_000_000), 3_276_800);
        assert_eq!(Names::routing_key("a.b", "k"), "a:b.k");
        assert_eq!(Names::binding("orders"), "orders.#");
    }
}
