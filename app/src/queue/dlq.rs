//! Dead letters: list, replay, purge.

use redis::streams::StreamRangeReply;
use serde::Serialize;

use super::job::Attempt;
use super::keys::validate_queue_name;
use super::{Queue, QueueError};

/// One entry of a dead-letter stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// What replay takes: the dead-letter stream entry id on Redis, the job id on RabbitMQ.
    pub entry: String,
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    pub error: String,
    pub attempts: u32,
    pub dead_ms: u64,
    pub history: Vec<Attempt>,
}

impl Queue {
    /// Up to `count` dead letters of `queue`, oldest first, after entry `after` (exclusive).
    pub async fn dlq_list(
        &self,
        queue: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        if let Some(b) = self.broker() {
            return super::rabbit::dlq::list(self, &b, queue, after, count).await;
        }
        let start = match after {
            Some(a) => format!("({a}"),
            None => "-".to_string(),
        };
        let mut conn = self.connection();
        let r: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys().dlq(queue))
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

    /// Puts one dead letter back on its queue with a fresh attempt budget. Returns the job id,
    /// or `None` if the entry does not exist (or its job was purged).
    pub async fn dlq_replay(&self, queue: &str, entry: &str) -> Result<Option<String>, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        if let Some(b) = self.broker() {
            if !is_job_id(entry) {
                return Err(QueueError::Invalid(format!(
                    "dead-letter entry {entry:?} is not a job id"
                )));
            }
            return super::rabbit::dlq::replay(self, &b, queue, entry).await;
        }
        if !is_stream_id(entry) {
            return Err(QueueError::Invalid(format!(
                "dead-letter entry {entry:?} is not a stream id like 1700000000000-0"
            )));
        }
        let mut conn = self.connection();
        let id: String = self
            .inner
            .scripts
            .replay
            .key(self.keys().dlq(queue))
            .arg(entry)
            .arg(self.keys().prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok((!id.is_empty()).then_some(id))
    }

    /// Replays every dead letter of `queue`; returns the job ids replayed.
    pub async fn dlq_replay_all(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        if let Some(b) = self.broker() {
            return super::rabbit::dlq::replay_all(self, &b, queue).await;
        }
        // Only the dead letters there now: a replayed job that fails for good again comes
        // back with a newer entry id and is left for the next replay.
        let mut conn = self.connection();
        let last: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.keys().dlq(queue))
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
            let batch = self.dlq_list(queue, after.as_deref(), 500).await?;
            let Some(tail) = batch.last() else {
                return Ok(replayed);
            };
            after = Some(tail.entry.clone());
            for d in &batch {
                if stream_id(&d.entry).is_none_or(|id| id > end) {
                    return Ok(replayed);
                }
                if let Some(id) = self.dlq_replay(queue, &d.entry).await? {
                    replayed.push(id);
                }
            }
        }
    }

    /// Deletes every dead letter of `queue` and its job record; returns how many.
    pub async fn dlq_purge(&self, queue: &str) -> Result<u64, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        if let Some(b) = self.broker() {
            return super::rabbit::dlq::purge(self, &b, queue).await;
        }
        let mut conn = self.connection();
        let mut total = 0u64;
        loop {
            let n: u64 = self
                .inner
                .scripts
                .purge
                .key(self.keys().dlq(queue))
                .arg(self.keys().prefix())
                .arg(500)
                .invoke_async(&mut conn)
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }
}

/// A stream id as (ms, seq), for ordering.
fn stream_id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Job ids: 32 hex digits, `.nN` appended for notification jobs.
fn is_job_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
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
