//! The pool's COMPLETE calls: the completions that queued up while the previous call ran
//! (see `queue::batch`), fused with the read and START of the pool's next entries. A
//! completed job's permit passes to an entry that call read, so a busy pool takes one call
//! per cycle (BullMQ's moveToFinished does the same); the fetch loop's XREADGROUP (blocking,
//! with one partition) gets the permits only when the call read fewer entries than it
//! freed, that is when the stream is drained.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::deliver::{Delivery, Notify, Started};
use super::scripts;
use crate::queue::batch::{self, Batcher};
use crate::queue::worker::Shared;
use crate::queue::{QueueError, retry};

/// A successful attempt waiting for the pool's next COMPLETE call.
pub(super) struct Completion {
    pub tag: Arc<str>,
    pub queue: Arc<str>,
    pub job_key: String,
    pub stream: String,
    pub entry: String,
    /// The handler's output as JSON text, '' for none.
    pub result: String,
    pub notify: Option<Notify>,
    /// The delivery's permit: handed to an entry the call reads, or released.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl batch::Grouped for Completion {
    fn tag(&self) -> &str {
        &self.tag
    }
}

/// An entry COMPLETE read and started with a completion's permit: its START answer,
/// `None` when the call could not read its job (the delivery STARTs it alone).
pub(super) type Next = (Delivery, Option<Started>, OwnedSemaphorePermit);

/// What COMPLETE answered for one completion.
pub(super) struct Finished {
    /// 'ok' or 'stale'.
    pub status: String,
    /// The entry this completion's permit passed to.
    pub next: Option<Next>,
}

/// The pool's completion batcher.
pub(super) type Completer = Batcher<Completion, Finished>;

/// Spawns the completion batcher of a pool.
pub(super) fn completer(sh: &Arc<Shared>) -> Completer {
    let sh = sh.clone();
    Batcher::spawn(move |items: Vec<Completion>| {
        let sh = sh.clone();
        async move { complete_batch(&sh, items).await }
    })
}

/// A stream of the batch the call reads from.
struct Read {
    /// Index in KEYS (1-based) of the stream.
    key: usize,
    stream: String,
    count: usize,
}

/// One COMPLETE call for the completions of one partition, reading as many entries of each
/// stream as its completions free permits (none when the pool stops, none for a queue with
/// a rate limit: there each entry waits for its rate permit and starts alone).
pub(super) async fn complete_batch(
    sh: &Shared,
    mut items: Vec<Completion>,
) -> Result<Vec<Finished>, QueueError> {
    let q = &sh.queue;
    let s = q.settings();
    let reading = !sh.stop.is_cancelled();
    let mut reads: Vec<Read> = Vec::new();
    let mut key = 1;
    for c in &items {
        if reading && c.permit.is_some() && s.rate_limit(&c.queue).is_none() {
            match reads.iter_mut().find(|r| r.stream == c.stream) {
                Some(r) => r.count += 1,
                None => reads.push(Read {
                    key: key + 1,
                    stream: c.stream.clone(),
                    count: 1,
                }),
            }
        }
        key += 2 + if c.notify.is_some() { 2 } else { 0 };
    }
    let nonce = format!("{:08x}", rand::random::<u32>());
    let mut inv = scripts::COMPLETE_S.prepare_invoke();
    inv.arg(&s.group)
        .arg(&sh.consumer)
        .arg(s.retention_s)
        .arg(&nonce)
        .arg(reads.len());
    let tag = items.first().map(|c| c.tag.clone()).unwrap_or_default();
    let prefix = q.keys().job_prefix(&tag);
    for r in &reads {
        inv.arg(r.key).arg(r.count).arg(&prefix);
    }
    for c in &items {
        inv.key(&c.job_key).key(&c.stream);
        let nid = Notify::declare(&c.notify, &mut inv);
        let nkeys = if c.notify.is_some() { 2 } else { 0 };
        inv.arg(&c.entry).arg(&c.result).arg(nid).arg(nkeys);
    }
    let (statuses, started): (Vec<String>, Vec<Vec<String>>) =
        retry::script(q, "complete", &inv).await?;
    if statuses.len() != items.len() {
        return Err(QueueError::Decode(format!(
            "COMPLETE of {} jobs gave {} answers",
            items.len(),
            statuses.len()
        )));
    }
    let mut nexts: Vec<Option<Next>> = items.iter().map(|_| None).collect();
    for e in started {
        let [si, entry, job_id, owner, reply @ ..] = e.as_slice() else {
            tracing::warn!(?e, "COMPLETE answered a malformed started entry");
            continue;
        };
        let key = si.parse::<usize>().ok();
        let Some(stream) = reads.iter().find(|r| Some(r.key) == key).map(|r| &r.stream) else {
            // Cannot happen (the script answers a read's key): reclaimed like the case below.
            tracing::warn!(entry = %entry, key = %si, "entry read from no stream of the call");
            continue;
        };
        // The permit of the next completion of that stream that has one left.
        let Some(i) = items
            .iter()
            .position(|c| &c.stream == stream && c.permit.is_some())
        else {
            // Cannot happen (count = permits): the entry stays pending and is reclaimed.
            tracing::warn!(entry = %entry, "entry read without a permit");
            continue;
        };
        let c = &mut items[i];
        let Some(permit) = c.permit.take() else {
            continue;
        };
        let d = Delivery::with_owner(
            &c.queue,
            &c.tag,
            entry.clone(),
            job_id.clone(),
            owner.clone(),
        );
        let st = match reply.first().map(String::as_str) {
            Some("read") => None,
            _ => Some(Started::parse(q, &d, reply)),
        };
        nexts[i] = Some((d, st, permit));
    }
    // The permits not handed on are released here, after the completions were recorded.
    drop(items);
    Ok(statuses
        .into_iter()
        .zip(nexts)
        .map(|(status, next)| Finished { status, next })
        .collect())
}
