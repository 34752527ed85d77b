//! Dead letters on Redis Streams: the `{p}:dlq:{queue}` stream holds one entry per dead
//! job (its id, last error, attempts and history); the entry id is what replay takes.

use redis::streams::StreamRangeReply;

use super::scripts;
use crate::queue::{DeadLetter, Queue, QueueError};

pub(super) async fn list(
    q: &Queue,
    queue: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let start = match after {
        Some(a) if is_stream_id(a) => format!("({a}"),
        Some(a) => {
            return Err(QueueError::Invalid(format!(
                "after {a:?} is not a dead-letter entry id like 1700000000000-0"
            )));
        }
        None => "-".to_string(),
    };
    let mut conn = q.connection();
    let r: StreamRangeReply = redis::cmd("XRANGE")
        .arg(q.keys().dlq(queue))
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn)
        .await?;
    r.ids
        .into_iter()
        .map(|e| {
            let s = |k: &str| e.get::<String>(k).unwrap_or_default();
            let history = serde_json::from_str(&s("history")).unwrap_or_default();
            Ok(DeadLetter {
                job_id: s("job"),
                queue: s("queue"),
                kind: s("kind"),
                error: s("error"),
                attempts: s("attempts").parse().unwrap_or(0),
                dead_ms: s("dead_ms").parse().unwrap_or(0),
                history,
                entry: e.id,
            })
        })
        .collect()
}

pub(super) async fn replay(
    q: &Queue,
    queue: &str,
    entry: &str,
) -> Result<Option<String>, QueueError> {
    if !is_stream_id(entry) {
        return Err(QueueError::Invalid(format!(
            "dead-letter entry {entry:?} is not a stream id like 1700000000000-0"
        )));
    }
    let mut conn = q.connection();
    let id: String = scripts::REPLAY_S
        .key(q.keys().dlq(queue))
        .arg(entry)
        .arg(q.keys().prefix())
        .invoke_async(&mut conn)
        .await?;
    Ok((!id.is_empty()).then_some(id))
}

pub(super) async fn replay_all(q: &Queue, queue: &str) -> Result<Vec<String>, QueueError> {
    // Only the dead letters there now: a replayed job that fails for good again comes
    // back with a newer entry id and is left for the next replay.
    let mut conn = q.connection();
    let last: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(q.keys().dlq(queue))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    let Some(end) = last.ids.first().and_then(|e| stream_id(&e.id)) else {
        return Ok(Vec::new());
    };
    let mut replayed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let batch = list(q, queue, after.as_deref(), 500).await?;
        let Some(tail) = batch.last() else {
            return Ok(replayed);
        };
        after = Some(tail.entry.clone());
        for d in &batch {
            if stream_id(&d.entry).is_none_or(|id| id > end) {
                return Ok(replayed);
            }
            if let Some(id) = replay(q, queue, &d.entry).await? {
                replayed.push(id);
            }
        }
    }
}

pub(super) async fn purge(q: &Queue, queue: &str) -> Result<u64, QueueError> {
    let mut conn = q.connection();
    let mut total = 0u64;
    loop {
        let n: u64 = scripts::PURGE_S
            .key(q.keys().dlq(queue))
            .arg(q.keys().prefix())
            .arg(500)
            .invoke_async(&mut conn)
            .await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// A stream id as (ms, seq), for ordering.
fn stream_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn is_stream_id(s: &str) -> bool {
    let mut parts = s.splitn(2, '-');
    let ms = parts.next().unwrap_or("");
    let seq = parts.next().unwrap_or("0");
    !ms.is_empty()
        && ms.chars().all(|c| c.is_ascii_digit())
        && !seq.is_empty()
        && seq.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids() {
        assert!(super::is_stream_id("1700000000000-0"));
        assert!(super::is_stream_id("17"));
        assert!(!super::is_stream_id("abc"));
        assert!(!super::is_stream_id("1-"));
        assert!(!super::is_stream_id(""));
        assert!(super::stream_id("10-2") > super::stream_id("9-5"));
        assert!(super::stream_id("10-2") < super::stream_id("10-10"));
    }
}
