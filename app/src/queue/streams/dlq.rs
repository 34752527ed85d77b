//! Dead letters on Redis Streams: each partition's `{p}:dlq:{t}:{queue}` stream holds one
//! entry per dead job (its id, last error, attempts and history). A dead letter's `entry`,
//! what replay takes, is `{tag}.{stream id}`; lists merge the partitions oldest first.

use redis::streams::{StreamId, StreamRangeReply};

use super::scripts;
use crate::queue::{DeadLetter, Queue, QueueError, retry};

/// A dead-letter entry: its id in its partition's stream, and the partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    /// (ms, seq) of the stream id, then the partition's tag: the order lists follow.
    ms: u64,
    seq: u64,
    tag: String,
}

impl Entry {
    fn parse(tags: &[String], s: &str) -> Result<Self, QueueError> {
        let bad = || {
            QueueError::Invalid(format!(
                "dead-letter entry {s:?} is not a partition tag and a stream id like p-0-0.1700000000000-0"
            ))
        };
        let (tag, id) = s.split_once('.').ok_or_else(bad)?;
        if !tags.iter().any(|t| t == tag) {
            return Err(bad());
        }
        let (ms, seq) = stream_id(id).ok_or_else(bad)?;
        Ok(Self {
            ms,
            seq,
            tag: tag.to_string(),
        })
    }

    fn id(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }

    fn name(&self) -> String {
        format!("{}.{}", self.tag, self.id())
    }
}

/// A stream id as (ms, seq).
fn stream_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    let digits = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
    if !(digits(ms) && digits(seq)) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Up to `count` entries of partition `tag`'s dead-letter stream from `start` (XRANGE syntax).
async fn range(
    q: &Queue,
    tag: &str,
    queue: &str,
    start: &str,
    count: usize,
) -> Result<Vec<(Entry, StreamId)>, QueueError> {
    let dlq = q.keys().dlq(tag, queue);
    let r: StreamRangeReply = retry::redis(q, "dlq", |mut c| {
        let dlq = &dlq;
        async move {
            redis::cmd("XRANGE")
                .arg(dlq)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(count.max(1))
                .query_async(&mut c)
                .await
        }
    })
    .await?;
    Ok(r.ids
        .into_iter()
        .filter_map(|e| {
            let (ms, seq) = stream_id(&e.id)?;
            Some((
                Entry {
                    ms,
                    seq,
                    tag: tag.to_string(),
                },
                e,
            ))
        })
        .collect())
}

fn letter(entry: &Entry, e: &StreamId) -> DeadLetter {
    let s = |k: &str| e.get::<String>(k).unwrap_or_default();
    DeadLetter {
        job_id: s("job"),
        queue: s("queue"),
        kind: s("kind"),
        error: s("error"),
        attempts: s("attempts").parse().unwrap_or(0),
        dead_ms: s("dead_ms").parse().unwrap_or(0),
        history: serde_json::from_str(&s("history")).unwrap_or_default(),
        entry: entry.name(),
    }
}

pub(super) async fn list(
    q: &Queue,
    queue: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let tags = q.partition_tags().await?;
    let after = after.map(|a| Entry::parse(&tags, a)).transpose()?;
    let mut all = Vec::new();
    for tag in &tags {
        // Entries after the cursor in the merged order: in partitions whose tag sorts up to
        // the cursor's, strictly after its stream id; in the others, from it.
        let start = match &after {
            Some(a) if *tag <= a.tag => format!("({}", a.id()),
            Some(a) => a.id(),
            None => "-".to_string(),
        };
        all.extend(range(q, tag, queue, &start, count).await?);
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all
        .iter()
        .take(count.max(1))
        .map(|(entry, e)| letter(entry, e))
        .collect())
}

pub(super) async fn replay(
    q: &Queue,
    queue: &str,
    entry: &str,
) -> Result<Option<String>, QueueError> {
    let entry = Entry::parse(&q.partition_tags().await?, entry)?;
    replay_entry(q, queue, &entry).await
}

async fn replay_entry(q: &Queue, queue: &str, entry: &Entry) -> Result<Option<String>, QueueError> {
    let tag = &entry.tag;
    let found = range(q, tag, queue, &entry.id(), 1).await?;
    let Some(job) = found
        .first()
        .filter(|(e, _)| e == entry)
        .and_then(|(_, e)| e.get::<String>("job"))
    else {
        return Ok(None);
    };
    let k = q.keys();
    let mut inv = scripts::REPLAY_S.key(k.dlq(tag, queue));
    inv.key(k.job_in(tag, &job))
        .key(k.stream(tag, queue))
        .arg(entry.id())
        .arg(&job);
    let id: String = retry::redis(q, "replay", |mut c| {
        let inv = &inv;
        async move { inv.invoke_async(&mut c).await }
    })
    .await?;
    Ok((!id.is_empty()).then_some(id))
}

/// Replays the dead letters there now: a replayed job that fails for good again comes back
/// with a newer entry id and is left for the next replay.
pub(super) async fn replay_all(q: &Queue, queue: &str) -> Result<Vec<String>, QueueError> {
    let mut replayed = Vec::new();
    for tag in q.partition_tags().await? {
        let dlq = q.keys().dlq(&tag, queue);
        let last: StreamRangeReply = retry::redis(q, "dlq", |mut c| {
            let dlq = &dlq;
            async move {
                redis::cmd("XREVRANGE")
                    .arg(dlq)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            }
        })
        .await?;
        let Some(end) = last.ids.first().and_then(|e| stream_id(&e.id)) else {
            continue;
        };
        let mut start = "-".to_string();
        'partition: loop {
            let batch = range(q, &tag, queue, &start, 500).await?;
            let Some((tail, _)) = batch.last() else {
                break;
            };
            start = format!("({}", tail.id());
            for (entry, _) in &batch {
                if (entry.ms, entry.seq) > end {
                    break 'partition;
                }
                if let Some(id) = replay_entry(q, queue, entry).await? {
                    replayed.push(id);
                }
            }
        }
    }
    Ok(replayed)
}

pub(super) async fn purge(q: &Queue, queue: &str) -> Result<u64, QueueError> {
    let k = q.keys();
    let mut total = 0u64;
    for tag in q.partition_tags().await? {
        loop {
            let batch = range(q, &tag, queue, "-", 200).await?;
            if batch.is_empty() {
                break;
            }
            let mut inv = scripts::PURGE_S.key(k.dlq(&tag, queue));
            for (_, e) in &batch {
                inv.key(k.job_in(&tag, &e.get::<String>("job").unwrap_or_default()));
            }
            for (_, e) in &batch {
                inv.arg(&e.id);
            }
            let n: u64 = retry::redis(q, "purge", |mut c| {
                let inv = &inv;
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
            total += n;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::stream_id;

    #[test]
    fn stream_ids() {
        assert_eq!(stream_id("1700000000000-0"), Some((1_700_000_000_000, 0)));
        assert_eq!(stream_id("17"), None);
        assert_eq!(stream_id("abc-1"), None);
        assert_eq!(stream_id("1-"), None);
        assert_eq!(stream_id(""), None);
        assert!(stream_id("10-2") > stream_id("9-5"));
        assert!(stream_id("10-2") < stream_id("10-10"));
    }
}
