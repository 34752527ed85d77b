//! Coalescing of one process's script calls, for both transports: concurrent enqueues (one
//! ENQUEUE call for the jobs waiting at that moment) and a pool's completions (one COMPLETE
//! call). Redis runs the
//! scripts on one thread, and a script call costs a round trip, an argument parse and a Lua
//! call before it does any work: for a no-op job that fixed part was most of its Redis time
//! (see app/docs/queue.md, "Where the Redis time goes").
//!
//! No timer: a batch is what queued up while the previous call ran, at most [`MAX_BATCH`]
//! items, so an idle queue pays no delay and a busy one gets big batches. Items of one batch
//! go into one call per partition (a script's keys share one hash slot). Each caller waits
//! for its own answer, so a job's permit is held (and its entry pending) until its
//! completion is recorded and acknowledged.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::queue::{Queue, QueueError, retry};

/// Most items in one script call (also bounds Lua's `unpack` of one stream's entries).
pub(crate) const MAX_BATCH: usize = 128;

type Reply<O> = oneshot::Sender<Result<O, QueueError>>;

/// Items of one batch that share a partition go into one call.
pub(crate) trait Grouped {
    fn tag(&self) -> &str;
}

/// A task that runs `flush` on the items submitted while its previous call ran.
pub(crate) struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<(I, Reply<O>)>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// Why a submitted item got no answer from the batcher.
pub(crate) enum Refused<I> {
    /// The batcher's task is gone (its runtime ended): the item was not sent.
    Gone(I),
    /// The call failed (after the repeats `retry::redis` makes), or its answer was lost.
    Failed(QueueError),
}

impl<I, O> Batcher<I, O>
where
    I: Grouped + Send + 'static,
    O: Send + 'static,
{
    /// Spawns the batcher's task on the current runtime. It ends once every clone of the
    /// returned handle is dropped and the items already submitted are flushed.
    pub(crate) fn spawn<F, Fut>(flush: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, QueueError>> + Send,
    {
        Self::spawn_lingering(flush, Duration::ZERO)
    }

    /// Like [`Batcher::spawn`], but a batch waits `linger` after its first item for more:
    /// for items nobody waits on ([`Lazy::post`]), where a bigger batch costs no latency.
    pub(crate) fn spawn_lingering<F, Fut>(flush: F, linger: Duration) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<O>, QueueError>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(I, Reply<O>)>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                }
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(x) => batch.push(x),
                        Err(_) => break,
                    }
                }
                for group in by_tag(batch) {
                    let (items, replies): (Vec<I>, Vec<Reply<O>>) = group.into_iter().unzip();
                    let n = items.len();
                    match flush(items).await {
                        Ok(outs) if outs.len() == n => {
                            for (r, o) in replies.into_iter().zip(outs) {
                                let _ = r.send(Ok(o));
                            }
                        }
                        Ok(outs) => {
                            let e = format!("a batch of {n} got {} answers", outs.len());
                            for r in replies {
                                let _ = r.send(Err(QueueError::Decode(e.clone())));
                            }
                        }
                        Err(e) => {
                            for r in replies {
                                let _ = r.send(Err(share(&e)));
                            }
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Submits one item and waits for its answer.
    pub(crate) async fn submit(&self, item: I) -> Result<O, Refused<I>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((item, _))) = self.tx.send((item, tx)) {
            return Err(Refused::Gone(item));
        }
        match rx.await {
            Ok(r) => r.map_err(Refused::Failed),
            Err(_) => Err(Refused::Failed(QueueError::Decode(
                "the batch call was dropped before it answered".into(),
            ))),
        }
    }
}

/// One job of a batched script call whose keys and arguments are all per job.
pub(crate) struct Item {
    pub q: Queue,
    pub tag: String,
    pub keys: Vec<String>,
    pub args: Vec<String>,
}

impl Grouped for Item {
    fn tag(&self) -> &str {
        &self.tag
    }
}

/// One call of `script` for items of one partition: each item's keys and arguments in turn.
pub(crate) async fn call<T: redis::FromRedisValue>(
    script: &redis::Script,
    op: &'static str,
    items: Vec<Item>,
) -> Result<Vec<T>, QueueError> {
    let Some(q) = items.first().map(|i| i.q.clone()) else {
        return Ok(Vec::new());
    };
    let mut inv = script.prepare_invoke();
    for it in &items {
        push_item(&mut inv, &it.keys, &it.args);
    }
    retry::script(&q, op, &inv).await
}

/// Appends one item's keys and arguments to a batch's script call.
pub(crate) fn push_item<K: redis::ToRedisArgs, A: redis::ToRedisArgs>(
    inv: &mut redis::ScriptInvocation<'_>,
    keys: &[K],
    args: &[A],
) {
    for k in keys {
        inv.key(k);
    }
    for a in args {
        inv.arg(a);
    }
}

/// The call a [`Lazy`] batcher makes for a batch.
pub(crate) type FlushFn<I, O> = fn(Vec<I>) -> BoxFuture<'static, Result<Vec<O>, QueueError>>;

/// A batcher of a process-wide handle (a transport): spawned on the runtime of its first
/// caller, and again when that runtime has ended (a caller then goes alone).
pub(crate) struct Lazy<I, O> {
    slot: Mutex<Option<Batcher<I, O>>>,
    flush: FlushFn<I, O>,
    linger: Duration,
}

impl<I, O> Lazy<I, O>
where
    I: Grouped + Send + 'static,
    O: Send + 'static,
{
    pub(crate) fn new(flush: FlushFn<I, O>) -> Self {
        Self::lingering(flush, Duration::ZERO)
    }

    /// A batcher whose batches wait `linger` for more items (see [`Batcher::spawn_lingering`]).
    pub(crate) fn lingering(flush: FlushFn<I, O>, linger: Duration) -> Self {
        Self {
            slot: Mutex::new(None),
            flush,
            linger,
        }
    }

    fn batcher(&self) -> Batcher<I, O> {
        let mut g = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let (flush, linger) = (self.flush, self.linger);
        g.get_or_insert_with(|| Batcher::spawn_lingering(flush, linger))
            .clone()
    }

    /// Submits one item without waiting for its answer; a failed call is logged. For
    /// bookkeeping whose loss is covered elsewhere (a CONFIRMED lost leaves the job in the
    /// outbox, which sends its message again).
    pub(crate) fn post(&self, item: I, op: &'static str) {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(sent)) = self.batcher().tx.send((item, tx)) {
            // The batcher's runtime ended: start one on this runtime and send again.
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
            let _ = self.batcher().tx.send(sent);
        }
        tokio::spawn(log_failure(rx, op));
    }

    pub(crate) async fn submit(&self, item: I) -> Result<O, QueueError> {
        let b = self.batcher();
        match b.submit(item).await {
            Ok(o) => Ok(o),
            Err(Refused::Failed(e)) => Err(e),
            Err(Refused::Gone(item)) => {
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = None;
                (self.flush)(vec![item])
                    .await?
                    .pop()
                    .ok_or_else(|| QueueError::Decode("a batch of one got no answer".into()))
            }
        }
    }
}

async fn log_failure<O>(rx: oneshot::Receiver<Result<O, QueueError>>, op: &'static str) {
    if let Ok(Err(e)) = rx.await {
        tracing::warn!(op, error = %e, "a posted batch call failed");
    }
}

/// Splits a batch by partition, keeping the order of each partition's items (an
/// idempotency key repeated within a batch finds the first job).
fn by_tag<I: Grouped, R>(batch: Vec<(I, R)>) -> Vec<Vec<(I, R)>> {
    let mut groups: Vec<Vec<(I, R)>> = Vec::new();
    for x in batch {
        match groups.iter_mut().find(|g| g[0].0.tag() == x.0.tag()) {
            Some(g) => g.push(x),
            None => groups.push(vec![x]),
        }
    }
    groups
}

/// One call's error for each of its callers.
fn share(e: &QueueError) -> QueueError {
    match e {
        QueueError::Redis(e) => QueueError::Redis(e.clone()),
        QueueError::Broker(m) => QueueError::Broker(m.clone()),
        QueueError::Invalid(m) => QueueError::Invalid(m.clone()),
        QueueError::Decode(m) => QueueError::Decode(m.clone()),
        QueueError::Config { field, reason } => QueueError::config(field, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct T(&'static str, u32);
    impl Grouped for T {
        fn tag(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn groups_keep_order_per_partition() {
        let batch = vec![
            (T("a", 1), ()),
            (T("b", 2), ()),
            (T("a", 3), ()),
            (T("b", 4), ()),
        ];
        let g: Vec<Vec<u32>> = by_tag(batch)
            .into_iter()
            .map(|g| g.into_iter().map(|(t, _)| t.1).collect())
            .collect();
        assert_eq!(g, vec![vec![1, 3], vec![2, 4]]);
    }

    #[tokio::test]
    async fn concurrent_submits_share_calls_and_get_their_own_answers() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let b: Batcher<T, u32> = Batcher::spawn(move |items: Vec<T>| {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { Ok(items.iter().map(|t| t.1 * 10).collect()) }
        });
        let answers = futures::future::join_all((0..50).map(|i| {
            let b = b.clone();
            async move { b.submit(T(if i % 2 == 0 { "a" } else { "b" }, i)).await }
        }))
        .await;
        for (i, a) in answers.into_iter().enumerate() {
            assert!(matches!(a, Ok(v) if v == i as u32 * 10), "answer {i}");
        }
        // 50 submits queued before the task ran: one batch, one call per partition.
        assert!(calls.load(std::sync::atomic::Ordering::Relaxed) < 50);
    }

    static POSTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static POST_CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn count_posted(items: Vec<T>) -> BoxFuture<'static, Result<Vec<u32>, QueueError>> {
        use std::sync::atomic::Ordering::SeqCst;
        POST_CALLS.fetch_add(1, SeqCst);
        POSTED.fetch_add(items.iter().map(|t| t.1).sum::<u32>(), SeqCst);
        Box::pin(async move { Ok(items.iter().map(|t| t.1).collect()) })
    }

    #[tokio::test]
    async fn posted_items_are_flushed_without_a_caller_waiting() {
        use std::sync::atomic::Ordering::SeqCst;
        let lazy: Lazy<T, u32> = Lazy::lingering(count_posted, Duration::from_millis(20));
        for i in 1..=10 {
            lazy.post(T("a", i), "test");
        }
        // A submit behind the posts: its answer comes once the batch with the posts ran.
        assert!(matches!(lazy.submit(T("a", 0)).await, Ok(0)));
        assert_eq!(POSTED.load(SeqCst), 55, "every posted item was flushed");
        // All were queued before the batcher's task first ran: one lingering batch.
        assert_eq!(POST_CALLS.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_call_fails_each_of_its_items() {
        let b: Batcher<T, u32> =
            Batcher::spawn(|_items: Vec<T>| async { Err(QueueError::Decode("boom".into())) });
        let r = b.submit(T("a", 1)).await;
        assert!(matches!(r, Err(Refused::Failed(QueueError::Decode(m))) if m == "boom"));
    }
}
