//! Producer side of the RabbitMQ backend: enqueue (record in Redis, then a confirmed
//! publish), re-sending from the outbox, and queue sizes.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::broker::{Broker, Route};
use super::records::Confirm;
use super::scripts;
use super::topology::{self, level_for};
use crate::queue::batch::Item;
use crate::queue::client::QueueStats;
use crate::queue::keys::job_tag;
use crate::queue::transport::Prepared;
use crate::queue::{Enqueued, Queue, QueueError, retry};

/// The body of every message: which job, and which message of it (the fence).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Body<S = String> {
    pub job: S,
    pub entry: S,
}

pub(crate) fn new_entry() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub(crate) fn broker_err(e: super::broker::BrokerError) -> QueueError {
    QueueError::Broker(e.to_string())
}

/// Where the next message of a job goes.
pub(crate) fn route_for(
    b: &Broker,
    queue: &str,
    kind: &str,
    wait_ms: u64,
    first_run: bool,
) -> Route {
    if wait_ms > 0 {
        Route::Direct(b.names.delay(queue, level_for(wait_ms)))
    } else if first_run {
        Route::Topic {
            queue: queue.to_string(),
            kind: kind.to_string(),
        }
    } else {
        Route::Direct(b.names.work(queue))
    }
}

/// Publishes (confirmed) the message `entry` of job `id`. Its job leaves the outbox in a
/// CONFIRMED call this does not wait for (see `records`).
pub(crate) async fn publish_job(
    q: &Queue,
    b: &Broker,
    queue: &str,
    route: &Route,
    id: &str,
    entry: &str,
) -> Result<(), QueueError> {
    let body = serde_json::to_vec(&Body { job: id, entry })
        .map_err(|e| QueueError::Invalid(e.to_string()))?;
    b.publish(queue, route, entry, &body)
        .await
        .map_err(broker_err)?;
    let tag = job_tag(id).unwrap_or_default();
    b.records.confirmed.post(
        Confirm {
            q: q.clone(),
            tag: tag.to_string(),
            keys: [q.keys().job(id), q.keys().outbox(tag)],
            id: id.to_string(),
            entry: entry.to_string(),
        },
        "confirmed",
    );
    Ok(())
}

/// The outbox of the partition job `id` is in.
pub(crate) fn outbox_of(q: &Queue, id: &str) -> String {
    q.keys().outbox(job_tag(id).unwrap_or_default())
}

pub(super) async fn enqueue(
    q: &Queue,
    b: &Broker,
    a: Prepared<'_>,
) -> Result<Enqueued, QueueError> {
    let k = q.keys();
    let mut args = a.args(q.settings().idempotency_ttl_s);
    args.push(new_entry());
    debug_assert_eq!(args.len(), super::scripts::ENQUEUE_ARGS);
    let (id, created, must_publish, entry, wait) = b
        .records
        .enqueue
        .submit(Item {
            q: q.clone(),
            tag: a.tag.to_string(),
            keys: vec![
                k.job(&a.id),
                k.idempotency(a.tag, a.queue, a.idem),
                k.outbox(a.tag),
            ],
            args,
        })
        .await?;
    if must_publish == 1 {
        let route = route_for(b, a.queue, a.kind, wait, true);
        publish_job(q, b, a.queue, &route, &id, &entry).await?;
    }
    Ok(Enqueued {
        id,
        created: created == 1,
    })
}

/// How long a message may wait for its confirm before the outbox sends it again.
const OUTBOX_AGE_MS: u64 = 5_000;

/// Re-sends messages whose publish was never confirmed (lost with the broker, or the
/// process died between Redis and the broker), in every partition. Returns how many were
/// sent.
pub(crate) async fn flush_outbox(q: &Queue, b: &Broker) -> Result<usize, QueueError> {
    let mut sent = 0;
    for tag in q.partition_tags().await? {
        sent += flush_partition(q, b, &tag).await?;
    }
    if sent > 0 {
        tracing::info!(sent, "re-sent unconfirmed messages from the outbox");
    }
    Ok(sent)
}

async fn flush_partition(q: &Queue, b: &Broker, tag: &str) -> Result<usize, QueueError> {
    let k = q.keys();
    let outbox = k.outbox(tag);
    let mut conn = q.connection();
    let ids: Vec<String> = scripts::OUTBOX_DUE_S
        .key(&outbox)
        .arg(OUTBOX_AGE_MS)
        .arg(200)
        .invoke_async(&mut conn)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut take = scripts::OUTBOX_TAKE_S.key(&outbox);
    for id in &ids {
        take.key(k.job_in(tag, id));
    }
    for id in &ids {
        take.arg(id);
    }
    let flat: Vec<String> = take.invoke_async(&mut conn).await?;
    let mut sent = 0;
    for row in flat.chunks_exact(7) {
        let (id, queue, kind, state, entry) = (&row[0], &row[1], &row[2], &row[3], &row[4]);
        let wait: u64 = row[5].parse().unwrap_or(0);
        let attempts: u64 = row[6].parse().unwrap_or(0);
        let route = if state == "dead" {
            Route::Direct(b.names.dead(queue))
        } else {
            route_for(b, queue, kind, wait, attempts == 0 && state == "queued")
        };
        publish_job(q, b, queue, &route, id, entry).await?;
        sent += 1;
    }
    Ok(sent)
}

/// Most running-set members one stats call checks for leftovers (see `scripts::STATS`).
const STATS_CHECK_MAX: usize = 1_000;

/// The jobs of `queue` running in partition `tag` (its running set, leftovers dropped).
async fn running_count(q: &Queue, tag: &str, queue: &str) -> Result<u64, QueueError> {
    let k = q.keys();
    let running = k.running(tag, queue);
    retry::redis(q, "stats", |mut c| {
        let running = &running;
        async move {
            let n: usize = c.scard(running).await?;
            if n == 0 {
                return Ok(0);
            }
            let ids: Vec<String> = if n <= STATS_CHECK_MAX {
                c.smembers(running).await?
            } else {
                c.srandmember_multiple(running, STATS_CHECK_MAX as isize)
                    .await?
            };
            let mut inv = scripts::STATS_S.key(running);
            for id in &ids {
                inv.key(k.job_in(tag, id));
            }
            for id in &ids {
                inv.arg(id);
            }
            inv.invoke_async(&mut c).await
        }
    })
    .await
}

/// Queue sizes with the Redis backend's meaning. The broker reports ready messages (`lag`:
/// waiting for a delivery) and the delay and dead-letter queues; AMQP 0-9-1 does not report
/// unacknowledged ones, so `pending` is the queue's running set in Redis (jobs START marked
/// `running` and no COMPLETE or FAIL ended yet), and `length` = `lag` + `pending` like the
/// stream's entries on Redis.
pub(super) async fn stats(q: &Queue, b: &Broker, queue: &str) -> Result<QueueStats, QueueError> {
    let (link, ch) = b.channel().await.map_err(broker_err)?;
    b.ensure(&link, queue).await.map_err(broker_err)?;
    let r = topology::ready_count(&ch, &b.names, queue).await;
    let _ = ch.close(200, "stats".into()).await;
    let (work, delayed, dead) = r.map_err(|e| QueueError::Broker(e.to_string()))?;
    let mut pending = 0;
    for tag in q.partition_tags().await? {
        pending += running_count(q, &tag, queue).await?;
    }
    Ok(QueueStats {
        queue: queue.to_string(),
        length: work + pending,
        pending,
        lag: work,
        delayed,
        dead,
    })
}
