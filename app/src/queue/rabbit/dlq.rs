//! Dead letters on RabbitMQ: the `p.Q.dead` queue holds one message per dead job; the job
//! hash in Redis holds its error and history. Listing reads messages without acknowledging
//! them (closing the channel puts them back); replay and purge acknowledge what they took.
//! A dead letter's `entry` is its job id.

use std::collections::HashMap;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use redis::AsyncCommands;

use super::broker::{Broker, Route};
use super::produce::{Body, broker_err, new_entry, outbox_of, publish_job};
use super::scripts;
use crate::queue::{DeadLetter, JobRecord, JobState, Queue, QueueError, retry};

/// Most messages one list or replay looks at.
const SCAN_MAX: usize = 10_000;

fn amqp(e: lapin::Error) -> QueueError {
    QueueError::Broker(e.to_string())
}

type Taken = (lapin::message::Delivery, Option<Body>, Option<JobRecord>);

/// Like [`next`], also returning how many messages the queue held after this one.
async fn next_counted(
    q: &Queue,
    ch: &Channel,
    dead: &str,
) -> Result<Option<(Taken, u64)>, QueueError> {
    let Some(m) = ch
        .basic_get(dead.into(), BasicGetOptions::default())
        .await
        .map_err(amqp)?
    else {
        return Ok(None);
    };
    let remaining = u64::from(m.message_count);
    let (body, job) = decode(q, &m.delivery.data).await?;
    Ok(Some(((m.delivery, body, job), remaining)))
}

async fn decode(q: &Queue, data: &[u8]) -> Result<(Option<Body>, Option<JobRecord>), QueueError> {
    let body: Option<Body> = serde_json::from_slice(data).ok();
    let job = match &body {
        Some(b) => {
            let mut conn = q.connection();
            let h: HashMap<String, String> = conn.hgetall(q.keys().job(&b.job)).await?;
            let entry_ok = h.get("entry") == Some(&b.entry);
            JobRecord::from_hash(h)?.filter(|j| entry_ok && j.state == JobState::Dead)
        }
        None => None,
    };
    Ok((body, job))
}

/// The next dead-letter message, its body and its job (None when the queue is empty).
async fn next(q: &Queue, ch: &Channel, dead: &str) -> Result<Option<Taken>, QueueError> {
    Ok(next_counted(q, ch, dead).await?.map(|(taken, _)| taken))
}

fn letter(j: JobRecord, queue: &str) -> DeadLetter {
    DeadLetter {
        entry: j.id.clone(),
        job_id: j.id,
        queue: queue.to_string(),
        kind: j.kind,
        error: j.last_error.unwrap_or_default(),
        attempts: j.attempts,
        dead_ms: j.updated_ms,
        history: j.history,
    }
}

pub(super) async fn list(
    q: &Queue,
    b: &Broker,
    queue: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let (_link, ch) = b.channel().await.map_err(broker_err)?;
    let mut out = Vec::new();
    let mut skipping = after.is_some();
    let r = async {
        for _ in 0..SCAN_MAX {
            let Some((_d, _body, job)) = next(q, &ch, &b.names.dead(queue)).await? else {
                break;
            };
            let Some(job) = job else { continue };
            if skipping {
                skipping = Some(job.id.as_str()) != after;
                continue;
            }
            out.push(letter(job, queue));
            if out.len() >= count.max(1) {
                break;
            }
        }
        Ok::<_, QueueError>(())
    }
    .await;
    // Closing the channel returns every message taken without an ack, in order.
    let _ = ch.close(200, "listed".into()).await;
    r.map(|()| out)
}

/// Replays the dead letter of one job; None when it is not in the dead-letter queue.
pub(super) async fn replay(
    q: &Queue,
    b: &Broker,
    queue: &str,
    job_id: &str,
) -> Result<Option<String>, QueueError> {
    if !is_job_id(job_id) {
        return Err(QueueError::Invalid(format!(
            "dead-letter entry {job_id:?} is not a job id"
        )));
    }
    let (_link, ch) = b.channel().await.map_err(broker_err)?;
    let r = async {
        for _ in 0..SCAN_MAX {
            let Some((d, body, job)) = next(q, &ch, &b.names.dead(queue)).await? else {
                return Ok(None);
            };
            if let (Some(body), Some(_)) = (&body, &job)
                && body.job == job_id
            {
                let id = replay_one(q, b, queue, body).await?;
                d.acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(amqp)?;
                return Ok(id);
            }
        }
        Ok(None)
    }
    .await;
    let _ = ch.close(200, "replayed".into()).await;
    r
}

async fn replay_one(
    q: &Queue,
    b: &Broker,
    queue: &str,
    body: &Body,
) -> Result<Option<String>, QueueError> {
    let entry = new_entry();
    let mut inv = scripts::REPLAY_S.key(q.keys().job(&body.job));
    inv.key(outbox_of(q, &body.job))
        .arg(&body.entry)
        .arg(&entry);
    let id: String = retry::redis(q, "replay", |mut c| {
        let inv = &inv;
        async move { inv.invoke_async(&mut c).await }
    })
    .await?;
    if id.is_empty() {
        return Ok(None);
    }
    publish_job(
        q,
        b,
        queue,
        &Route::Direct(b.names.work(queue)),
        &id,
        &entry,
    )
    .await?;
    Ok(Some(id))
}

/// Replays every dead letter; stale ones (their job moved on) are dropped.
pub(super) async fn replay_all(
    q: &Queue,
    b: &Broker,
    queue: &str,
) -> Result<Vec<String>, QueueError> {
    take_all(q, b, queue, Take::Replay).await
}

/// Deletes every dead letter and its job record.
pub(super) async fn purge(q: &Queue, b: &Broker, queue: &str) -> Result<u64, QueueError> {
    let ids = take_all(q, b, queue, Take::Purge).await?;
    Ok(ids.len() as u64)
}

/// What [`take_all`] does with each dead letter before acknowledging it.
#[derive(Clone, Copy, PartialEq)]
enum Take {
    /// Publish the job again. Only the dead letters there now: a replayed job that fails
    /// for good again comes back at the tail and is left for the next replay.
    Replay,
    /// Delete the job record, until the queue is empty.
    Purge,
}

/// Takes and acknowledges the dead letters of `queue`; returns the ids of the jobs replayed
/// or purged (stale letters are dropped without counting).
async fn take_all(
    q: &Queue,
    b: &Broker,
    queue: &str,
    what: Take,
) -> Result<Vec<String>, QueueError> {
    let (_link, ch) = b.channel().await.map_err(broker_err)?;
    let mut ids = Vec::new();
    let r = async {
        let mut left: Option<u64> = None;
        while left != Some(0) {
            let Some(((d, body, job), remaining)) =
                next_counted(q, &ch, &b.names.dead(queue)).await?
            else {
                break;
            };
            match (what, &body, job) {
                (Take::Replay, Some(body), Some(_)) => {
                    if let Some(id) = replay_one(q, b, queue, body).await? {
                        ids.push(id);
                    }
                }
                (Take::Purge, _, Some(job)) => {
                    let mut conn = q.connection();
                    let _: i64 = conn.del(q.keys().job(&job.id)).await?;
                    ids.push(job.id);
                }
                _ => {}
            }
            if what == Take::Replay {
                left = Some(left.unwrap_or(remaining + 1) - 1);
            }
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(amqp)?;
        }
        Ok::<_, QueueError>(())
    }
    .await;
    let reason = match what {
        Take::Replay => "replayed",
        Take::Purge => "purged",
    };
    let _ = ch.close(200, reason.into()).await;
    r.map(|()| ids)
}

/// Job ids: a partition tag, a dot and 32 hex digits, `.nN` appended for notification jobs.
fn is_job_id(s: &str) -> bool {
    crate::queue::keys::job_tag(s).is_some()
}
