//! Deliveries of stream entries: START (one call for the entries one read returned, one per
//! entry behind a rate permit, or inside the COMPLETE call that read them), the handler,
//! then COMPLETE (coalesced with the pool's other completions and fused with the next read,
//! see `super::complete`) or FAIL, with a heartbeat that keeps each entry from being
//! reclaimed while its job runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use redis::ScriptInvocation;
use tokio::sync::OwnedSemaphorePermit;

use super::complete::{Completer, Completion, Next, complete_batch};
use super::scripts;
use crate::queue::batch::Refused;
use crate::queue::process::{Outcome, Run, failure_args, record, run_attempt};
use crate::queue::worker::{PoolStats, Shared};
use crate::queue::{Queue, QueueError, rate, retry};

/// One entry read from the stream of `queue` in partition `tag`.
pub(super) struct Delivery {
    pub queue: Arc<str>,
    pub tag: Arc<str>,
    pub entry: String,
    pub job_id: String,
    /// Names this delivery in the job hash while it runs (START's `owner`).
    pub owner: String,
}

impl Delivery {
    pub(super) fn new(
        sh: &Shared,
        queue: &Arc<str>,
        tag: &Arc<str>,
        entry: String,
        job_id: String,
    ) -> Self {
        let owner = format!("{}#{:08x}", sh.consumer, rand::random::<u32>());
        Self::with_owner(queue, tag, entry, job_id, owner)
    }

    /// An entry COMPLETE read and started as `owner`.
    pub(super) fn with_owner(
        queue: &Arc<str>,
        tag: &Arc<str>,
        entry: String,
        job_id: String,
        owner: String,
    ) -> Self {
        Self {
            queue: queue.clone(),
            tag: tag.clone(),
            entry,
            job_id,
            owner,
        }
    }
}

/// What START answered for one delivery.
pub(super) enum Started {
    Run(Run, Option<Notify>),
    /// Reclaimed from a vanished worker during its last attempt: bury it.
    Lost(Option<Notify>),
    /// The job moved on; the entry was dropped.
    Skip,
}

impl Started {
    pub(super) fn parse(q: &Queue, d: &Delivery, r: &[String]) -> Self {
        match r {
            [tag, a, m, kind, payload, nq, replays] if tag == "run" => Started::Run(
                Run::from_reply(a, m, kind, payload),
                Notify::of(q, d, nq, replays),
            ),
            [tag, nq, replays] if tag == "lost" => Started::Lost(Notify::of(q, d, nq, replays)),
            _ => Started::Skip,
        }
    }
}

/// One START call for deliveries of one stream.
async fn start(sh: &Shared, ds: &[Delivery]) -> Result<Vec<Started>, QueueError> {
    let Some(first) = ds.first() else {
        return Ok(Vec::new());
    };
    let q = &sh.queue;
    let k = q.keys();
    let mut inv = scripts::START_S.key(k.stream(&first.tag, &first.queue));
    inv.arg(&q.settings().group).arg(&sh.consumer);
    for d in ds {
        inv.key(k.job(&d.job_id)).arg(&d.entry).arg(&d.owner);
    }
    let r: Vec<Vec<String>> = retry::script(q, "start", &inv).await?;
    if r.len() != ds.len() {
        return Err(QueueError::Decode(format!(
            "START of {} entries gave {} answers",
            ds.len(),
            r.len()
        )));
    }
    Ok(ds
        .iter()
        .zip(&r)
        .map(|(d, r)| Started::parse(q, d, r))
        .collect())
}

/// Starts entries of one stream and runs each granted job in a task of its own. Without a
/// rate limit the entries start in one call; with one, each waits for its rate permit and
/// starts alone.
pub(super) async fn start_all(
    sh: Arc<Shared>,
    ds: Vec<(Delivery, OwnedSemaphorePermit)>,
    done: Completer,
) {
    let Some((first, _)) = ds.first() else {
        return;
    };
    if sh.queue.settings().rate_limit(&first.queue).is_some() {
        for (d, permit) in ds {
            sh.tracker
                .spawn(run_delivery(sh.clone(), d, None, permit, done.clone()));
        }
        return;
    }
    let (ds, permits): (Vec<Delivery>, Vec<OwnedSemaphorePermit>) = ds.into_iter().unzip();
    match start(&sh, &ds).await {
        Ok(started) => {
            for ((d, st), permit) in ds.into_iter().zip(started).zip(permits) {
                sh.tracker
                    .spawn(run_delivery(sh.clone(), d, Some(st), permit, done.clone()));
            }
        }
        Err(e) => {
            // The entries stay pending: they are reclaimed and their jobs run then.
            tracing::warn!(entries = ds.len(), error = %e, "starting jobs failed");
        }
    }
}

/// Runs one delivery to its end, or leaves it un-acknowledged when the pool aborts. Its
/// permit is released once its outcome is recorded, or passes to the entry its COMPLETE
/// call read, which this task runs next.
pub(super) async fn run_delivery(
    sh: Arc<Shared>,
    mut d: Delivery,
    mut started: Option<Started>,
    mut permit: OwnedSemaphorePermit,
    done: Completer,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = sh.abort.cancelled() => {
                PoolStats::inc(&sh.stats.abandoned);
                tracing::warn!(queue = %d.queue, job = %d.job_id, "job abandoned at shutdown; another worker will reclaim it");
                None
            }
            r = deliver(&sh, &d, started, permit, &done) => match r {
                Ok(next) => next,
                Err(e) => {
                    // The entry is still pending: it is reclaimed and the job runs again.
                    tracing::warn!(queue = %d.queue, job = %d.job_id, error = %e, "job bookkeeping failed");
                    None
                }
            },
            _ = heartbeat(&sh, &d) => None,
        };
        let Some(next) = next else {
            return;
        };
        (d, started, permit) = next;
    }
}

/// Resets the entry's idle time every quarter of `claim_idle_ms` while this consumer owns it.
async fn heartbeat(sh: &Shared, d: &Delivery) -> Infallible {
    let every = Duration::from_millis((sh.queue.settings().claim_idle_ms / 4).max(50));
    let stream = sh.queue.keys().stream(&d.tag, &d.queue);
    let mut conn = sh.queue.connection();
    loop {
        tokio::time::sleep(every).await;
        let r: redis::RedisResult<i64> = scripts::HEARTBEAT_S
            .key(&stream)
            .arg(&sh.queue.settings().group)
            .arg(&sh.consumer)
            .arg(&d.entry)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::debug!(entry = %d.entry, error = %e, "heartbeat failed");
        }
    }
}

/// The notification job a job creates when it ends: its id (the job's, with the run), its
/// hash, and the stream of its queue in the job's partition. Scripts declare both keys.
pub(super) struct Notify {
    id: String,
    key: String,
    stream: String,
}

impl Notify {
    /// From START's `notify_queue` and `replays` (None when the job notifies no queue).
    fn of(q: &Queue, d: &Delivery, queue: &str, replays: &str) -> Option<Self> {
        if queue.is_empty() {
            return None;
        }
        let id = format!("{}.n{replays}", d.job_id);
        Some(Self {
            key: q.keys().job(&id),
            stream: q.keys().stream(&d.tag, queue),
            id,
        })
    }

    /// Appends the notification keys to a script's KEYS and returns its id for ARGV.
    pub(super) fn declare(n: &Option<Self>, inv: &mut ScriptInvocation<'_>) -> String {
        match n {
            Some(n) => {
                inv.key(&n.key).key(&n.stream);
                n.id.clone()
            }
            None => String::new(),
        }
    }
}

async fn deliver(
    sh: &Arc<Shared>,
    d: &Delivery,
    started: Option<Started>,
    permit: OwnedSemaphorePermit,
    done: &Completer,
) -> Result<Option<Next>, QueueError> {
    let q = &sh.queue;
    let s = q.settings();
    let k = q.keys();
    let queue = &d.queue;
    let (job_key, stream) = (k.job(&d.job_id), k.stream(&d.tag, queue));

    let mut rate_window = None;
    let started = match started {
        Some(st) => st,
        None => {
            if let Some(limit) = s.rate_limit(queue) {
                rate_window = Some(rate::permit(q, queue, limit).await?);
            }
            let mut st = start(sh, std::slice::from_ref(d)).await?;
            st.pop().unwrap_or(Started::Skip)
        }
    };
    let (run, notify) = match started {
        Started::Run(run, notify) => (run, notify),
        Started::Lost(notify) => {
            let mut bury = scripts::BURY_LOST_S.key(&job_key);
            bury.key(&stream).key(k.dlq(&d.tag, queue));
            let nid = Notify::declare(&notify, &mut bury);
            bury.arg(&d.entry).arg(&s.group).arg(nid);
            let r: String = retry::script(q, "bury", &bury).await?;
            if r == "dead" {
                record(sh, queue, Outcome::Dead, None);
                tracing::warn!(queue = %queue, job = %d.job_id, "job dead: its workers kept vanishing");
            } else {
                PoolStats::inc(&sh.stats.stale);
            }
            return Ok(None);
        }
        Started::Skip => {
            PoolStats::inc(&sh.stats.stale);
            return Ok(None);
        }
    };
    let attempt = run.attempt;
    let (result, took) = run_attempt(sh, queue, &d.job_id, run, rate_window).await;
    match result {
        Ok(out) => {
            let c = Completion {
                tag: d.tag.clone(),
                queue: d.queue.clone(),
                job_key,
                stream,
                entry: d.entry.clone(),
                result: out,
                notify,
                permit: Some(permit),
            };
            let r = match done.submit(c).await {
                Ok(r) => r,
                Err(Refused::Failed(e)) => return Err(e),
                // The pool's batcher ended (its runtime is going away): complete alone.
                Err(Refused::Gone(c)) => complete_batch(sh, vec![c])
                    .await?
                    .pop()
                    .ok_or_else(|| QueueError::Decode("COMPLETE gave no answer".into()))?,
            };
            let outcome = if r.status == "ok" {
                Outcome::Succeeded
            } else {
                Outcome::Stale
            };
            record(sh, queue, outcome, took);
            return Ok(r.next);
        }
        Err(e) => {
            let (delay_ms, permanent) = failure_args(sh, attempt, &e);
            let mut fail = scripts::FAIL_S.key(&job_key);
            fail.key(&stream)
                .key(k.delayed(&d.tag, queue))
                .key(k.dlq(&d.tag, queue));
            let nid = Notify::declare(&notify, &mut fail);
            fail.arg(&d.entry)
                .arg(&s.group)
                .arg(e.to_string())
                .arg(delay_ms)
                .arg(permanent)
                .arg(&sh.consumer)
                .arg(nid);
            let r: Vec<String> = retry::script(q, "fail", &fail).await?;
            match r.first().map(String::as_str) {
                Some("retry") => {
                    record(sh, queue, Outcome::Retried, took);
                    tracing::debug!(queue = %queue, job = %d.job_id, attempt, error = %e, "attempt failed; retry scheduled");
                }
                Some("dead") => {
                    record(sh, queue, Outcome::Dead, took);
                    tracing::info!(queue = %queue, job = %d.job_id, attempt, error = %e, "job moved to the dead-letter stream");
                }
                _ => {
                    record(sh, queue, Outcome::Stale, took);
                }
            }
        }
    }
    Ok(None)
}
