//! This process's coalesced calls to the job-record scripts of the RabbitMQ backend (see
//! `queue::batch`): the ENQUEUE records of concurrent enqueues, the CONFIRMED calls of
//! confirmed publishes, the STARTs of concurrent deliveries and the COMPLETE records of
//! concurrent successes, each one script call per batch and partition.
//!
//! Nobody waits for CONFIRMED: a publish returns once the broker confirmed it, and the call
//! that takes the job out of the outbox goes in the background, in batches that wait
//! [`CONFIRM_LINGER`] for more. Losing it (the process dies first, Redis is down) costs at
//! most one duplicate message, sent by the outbox sweeper, which the job's fences drop; START
//! takes a delivered job out of the outbox as well, so a busy queue's sweeper finds nothing.

use std::time::Duration;

use super::scripts;
use crate::queue::batch::{self, Grouped, Item, Lazy};
use crate::queue::{Queue, QueueError, retry};

/// ENQUEUE's answer for one job: id, created, must_publish, message entry, delay (ms).
pub(crate) type Recorded = (String, i64, i64, String, u64);

/// One confirmed message for a CONFIRMED batch: the job's key and outbox, id and entry.
pub(crate) struct Confirm {
    pub q: Queue,
    pub tag: String,
    pub keys: [String; 2],
    pub id: String,
    pub entry: String,
}

/// One success for a COMPLETE batch: its keys (job, outbox, running set[, notify job]) and
/// arguments (entry, owner, result, notify id, notify message id, notify keys).
pub(crate) struct Completion {
    pub q: Queue,
    pub tag: String,
    pub keys: Vec<String>,
    pub args: [String; 6],
}

impl Grouped for Completion {
    fn tag(&self) -> &str {
        &self.tag
    }
}

impl Grouped for Confirm {
    fn tag(&self) -> &str {
        &self.tag
    }
}

async fn confirmed_batch(items: Vec<Confirm>) -> Result<Vec<i64>, QueueError> {
    let Some(q) = items.first().map(|i| i.q.clone()) else {
        return Ok(Vec::new());
    };
    let mut inv = scripts::CONFIRMED_S.prepare_invoke();
    for it in &items {
        inv.key(&it.keys[0]).key(&it.keys[1]);
        inv.arg(&it.id).arg(&it.entry);
    }
    retry::script(&q, "confirmed", &inv).await
}

async fn complete_batch(items: Vec<Completion>) -> Result<Vec<Vec<String>>, QueueError> {
    let Some(q) = items.first().map(|i| i.q.clone()) else {
        return Ok(Vec::new());
    };
    let mut inv = scripts::COMPLETE_S.prepare_invoke();
    inv.arg(q.settings().retention_s);
    for it in &items {
        batch::push_item(&mut inv, &it.keys, &it.args);
    }
    retry::script(&q, "complete", &inv).await
}

/// How long a CONFIRMED batch waits for more confirms after its first one. Nobody waits on
/// it; it only has to stay well below the outbox sweeper's age (5 s).
pub(crate) const CONFIRM_LINGER: Duration = Duration::from_millis(5);

/// The batchers, one each per process (held by the broker handle).
pub(crate) struct Records {
    pub enqueue: Lazy<Item, Recorded>,
    /// START of deliveries (their keys: job, outbox, running set).
    pub start: Lazy<Item, Vec<String>>,
    /// Posted, not awaited (see the module's comment).
    pub confirmed: Lazy<Confirm, i64>,
    pub complete: Lazy<Completion, Vec<String>>,
}

impl Records {
    pub(crate) fn new() -> Self {
        Self {
            enqueue: Lazy::new(|items| {
                Box::pin(batch::call(&scripts::ENQUEUE_S, "enqueue", items))
            }),
            start: Lazy::new(|items| Box::pin(batch::call(&scripts::START_S, "start", items))),
            confirmed: Lazy::lingering(|items| Box::pin(confirmed_batch(items)), CONFIRM_LINGER),
            complete: Lazy::new(|items| Box::pin(complete_batch(items))),
        }
    }
}
