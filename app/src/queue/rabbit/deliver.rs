//! One delivery from a work queue: START, the handler, then COMPLETE or FAIL, publish what
//! follows (retry, dead letter, notification), and only then acknowledge. A crash anywhere
//! leaves the delivery unacknowledged: the broker redelivers it and the fences in the job
//! hash make the second run of the bookkeeping a no-op.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use redis::{AsyncCommands, ScriptInvocation};

use super::broker::{Broker, Route};
use super::produce::{Body, new_entry, publish_job, route_for};
use super::records::Completion;
use super::scripts;
use super::topology::level_for;
use crate::queue::batch::Item;
use crate::queue::keys::job_tag;
use crate::queue::process::{Outcome, Run, failure_args, record, run_attempt};
use crate::queue::worker::{PoolStats, Shared};
use crate::queue::{QueueError, rate, retry};

/// Pause before handing a delivery back after a bookkeeping error (Redis or broker down),
/// so a broken dependency does not turn into a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);
/// Pause before handing back a delivery of a job another live pool is running.
const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// What to do with a delivery once its bookkeeping is done.
enum Done {
    Ack,
    /// The job runs elsewhere right now: give the message back, look again later.
    Requeue,
}

pub(super) async fn run(sh: Arc<Shared>, b: Arc<Broker>, queue: Arc<str>, d: Delivery) {
    tokio::select! {
        biased;
        _ = sh.abort.cancelled() => {
            // Left unacknowledged: closing the channel returns it to the queue.
            PoolStats::inc(&sh.stats.abandoned);
            tracing::warn!(queue = %queue, "job abandoned at shutdown; the broker redelivers it");
        }
        r = deliver(&sh, &b, &queue, &d) => match r {
            Ok(Done::Requeue) => {
                tokio::time::sleep(BUSY_PAUSE).await;
                let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            }
            Ok(Done::Ack) => {
                if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                    // The channel died (broker restart): the message is redelivered and
                    // START finds the job already moved on.
                    tracing::debug!(queue = %queue, error = %e, "ack failed");
                }
            }
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "job bookkeeping failed; requeueing");
                tokio::time::sleep(REQUEUE_PAUSE).await;
                let _ = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
            }
        }
    }
}

async fn publish_notify(
    sh: &Shared,
    b: &Broker,
    nid: &str,
    nq: &str,
    entry: &str,
) -> Result<(), QueueError> {
    if nid.is_empty() {
        return Ok(());
    }
    let route = route_for(b, nq, "notify", 0, true);
    publish_job(&sh.queue, b, nq, &route, nid, entry).await
}

/// The notification job a job creates when it ends (its id extends the job's with the
/// run, so it shares the job's partition); scripts declare its key.
fn notify_of(
    q: &crate::queue::Queue,
    job: &str,
    queue: &str,
    replays: &str,
) -> Option<(String, String)> {
    if queue.is_empty() {
        return None;
    }
    let id = format!("{job}.n{replays}");
    Some((q.keys().job(&id), id))
}

/// Appends the notification's key to a script's KEYS and returns its id for ARGV.
fn declare_notify(n: &Option<(String, String)>, inv: &mut ScriptInvocation<'_>) -> String {
    match n {
        Some((key, id)) => {
            inv.key(key);
            id.clone()
        }
        None => String::new(),
    }
}

/// A message id for the notification, when the job has one (most have none: a uuid saved).
fn entry_if(notify: &Option<(String, String)>) -> String {
    if notify.is_some() {
        new_entry()
    } else {
        String::new()
    }
}

/// Whether the pool named `consumer` still lives (its liveness key is there).
async fn pool_alive(q: &crate::queue::Queue, consumer: &str) -> Result<bool, QueueError> {
    let key = q.keys().alive(consumer);
    retry::redis(q, "alive", |mut c| {
        let key = &key;
        async move { c.exists(key).await }
    })
    .await
}

async fn deliver(
    sh: &Arc<Shared>,
    b: &Broker,
    queue: &Arc<str>,
    d: &Delivery,
) -> Result<Done, QueueError> {
    let Ok(body) = serde_json::from_slice::<Body>(&d.data) else {
        tracing::warn!(queue = %queue, "dropping a message that is not a job");
        return Ok(Done::Ack);
    };
    let Some(tag) = job_tag(&body.job) else {
        tracing::warn!(queue = %queue, job = %body.job, "dropping a message whose job id is not ours");
        return Ok(Done::Ack);
    };
    let q = &sh.queue;
    let s = q.settings();
    let k = q.keys();
    let (job_key, outbox, running) = (k.job(&body.job), k.outbox(tag), k.running(tag, queue));
    let rate_window = match s.rate_limit(queue) {
        Some(limit) => Some(rate::permit(q, queue, limit).await?),
        None => None,
    };
    let owner = format!("{}#{:08x}", sh.consumer, rand::random::<u32>());
    // START, and once more naming the job's pool if it turns out to be gone.
    let mut take_over_from = String::new();
    let r: Vec<String> = loop {
        let start = Item {
            q: q.clone(),
            tag: tag.to_string(),
            keys: vec![job_key.clone(), outbox.clone(), running.clone()],
            args: vec![
                body.entry.clone(),
                sh.consumer.clone(),
                owner.clone(),
                take_over_from.clone(),
            ],
        };
        let r: Vec<String> = b.records.start.submit(start).await?;
        match r.as_slice() {
            [tag, holder] if tag == "held" && take_over_from.is_empty() => {
                if pool_alive(q, holder).await? {
                    return Ok(Done::Requeue);
                }
                take_over_from = holder.clone();
            }
            // Held by yet another pool since: that one is alive.
            [tag, _] if tag == "held" => return Ok(Done::Requeue),
            _ => break r,
        }
    };
    let (run, notify) = match r.as_slice() {
        [tag, a, m, kind, payload, nq, replays] if tag == "run" => (
            Run::from_reply(a, m, kind, payload),
            notify_of(q, &body.job, nq, replays),
        ),
        [tag, wait] if tag == "early" => {
            // Not due yet (a long delay hops through several levels): wait some more.
            let wait: u64 = wait.parse().unwrap_or(0);
            let route = Route::Direct(b.names.delay(queue, level_for(wait)));
            publish_job(q, b, queue, &route, &body.job, &body.entry).await?;
            return Ok(Done::Ack);
        }
        [tag, nq, replays] if tag == "lost" => {
            let notify = notify_of(q, &body.job, nq, replays);
            let (next_entry, notify_entry) = (new_entry(), entry_if(&notify));
            let mut bury = scripts::BURY_LOST_S.key(&job_key);
            bury.key(&outbox).key(&running);
            let nid = declare_notify(&notify, &mut bury);
            bury.arg(&body.entry)
                .arg(&take_over_from)
                .arg(&next_entry)
                .arg(nid)
                .arg(&notify_entry);
            let r: Vec<String> = retry::script(q, "bury", &bury).await?;
            if let [tag, nid, nq] = r.as_slice()
                && tag == "dead"
            {
                publish_job(
                    q,
                    b,
                    queue,
                    &Route::Direct(b.names.dead(queue)),
                    &body.job,
                    &next_entry,
                )
                .await?;
                publish_notify(sh, b, nid, nq, &notify_entry).await?;
                record(sh, queue, Outcome::Dead, None);
                tracing::warn!(queue = %queue, job = %body.job, "job dead: its workers kept vanishing");
            } else {
                PoolStats::inc(&sh.stats.stale);
            }
            return Ok(Done::Ack);
        }
        _ => {
            PoolStats::inc(&sh.stats.stale);
            return Ok(Done::Ack);
        }
    };
    let (attempt, kind) = (run.attempt, run.kind.clone());
    let notify_entry = entry_if(&notify);
    let (result, took) = run_attempt(sh, queue, &body.job, run, rate_window).await;
    match result {
        Ok(out) => {
            let mut keys = vec![job_key.clone(), outbox.clone(), running.clone()];
            let (nid, nkeys) = match &notify {
                Some((key, id)) => {
                    keys.push(key.clone());
                    (id.clone(), "1")
                }
                None => (String::new(), "0"),
            };
            let r = b
                .records
                .complete
                .submit(Completion {
                    q: q.clone(),
                    tag: tag.to_string(),
                    keys,
                    args: [
                        body.entry.clone(),
                        owner.clone(),
                        out,
                        nid,
                        notify_entry.clone(),
                        nkeys.to_string(),
                    ],
                })
                .await?;
            match r.as_slice() {
                [tag, nid, nq] if tag == "ok" => {
                    publish_notify(sh, b, nid, nq, &notify_entry).await?;
                    record(sh, queue, Outcome::Succeeded, took);
                }
                _ => {
                    record(sh, queue, Outcome::Stale, took);
                }
            }
        }
        Err(e) => {
            let (delay_ms, permanent) = failure_args(sh, attempt, &e);
            let next_entry = new_entry();
            let mut fail = scripts::FAIL_S.key(&job_key);
            fail.key(&outbox).key(&running);
            let nid = declare_notify(&notify, &mut fail);
            fail.arg(&body.entry)
                .arg(&owner)
                .arg(e.to_string())
                .arg(delay_ms)
                .arg(permanent)
                .arg(&next_entry)
                .arg(nid)
                .arg(&notify_entry);
            let r: Vec<String> = retry::script(q, "fail", &fail).await?;
            match r.as_slice() {
                [tag, wait] if tag == "retry" => {
                    let wait: u64 = wait.parse().unwrap_or(0);
                    let route = route_for(b, queue, &kind, wait, false);
                    publish_job(q, b, queue, &route, &body.job, &next_entry).await?;
                    record(sh, queue, Outcome::Retried, took);
                    tracing::debug!(queue = %queue, job = %body.job, attempt, error = %e, "attempt failed; retry scheduled");
                }
                [tag, nid, nq] if tag == "dead" => {
                    let route = Route::Direct(b.names.dead(queue));
                    publish_job(q, b, queue, &route, &body.job, &next_entry).await?;
                    publish_notify(sh, b, nid, nq, &notify_entry).await?;
                    record(sh, queue, Outcome::Dead, took);
                    tracing::info!(queue = %queue, job = %body.job, attempt, error = %e, "job moved to the dead-letter queue");
                }
                _ => {
                    record(sh, queue, Outcome::Stale, took);
                }
            }
        }
    }
    Ok(Done::Ack)
}
