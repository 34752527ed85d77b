//! Dead letters: list, replay, purge (kept by the transport: a stream on Redis, a queue on
//! RabbitMQ).

use serde::Serialize;

use super::job::Attempt;
use super::keys::validate_queue_name;
use super::{Queue, QueueError};

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
        self.transport().dlq_list(self, queue, after, count).await
    }

    /// Puts one dead letter back on its queue with a fresh attempt budget. Returns the job id,
    /// or `None` if the entry does not exist (or its job was purged).
    pub async fn dlq_replay(&self, queue: &str, entry: &str) -> Result<Option<String>, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        self.transport().dlq_replay(self, queue, entry).await
    }

    /// Replays every dead letter of `queue` there now (a replayed job that fails for good
    /// again is left for the next replay); returns the job ids replayed.
    pub async fn dlq_replay_all(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        self.transport().dlq_replay_all(self, queue).await
    }

    /// Deletes every dead letter of `queue` and its job record; returns how many.
    pub async fn dlq_purge(&self, queue: &str) -> Result<u64, QueueError> {
        validate_queue_name(queue).map_err(QueueError::Invalid)?;
        self.transport().dlq_purge(self, queue).await
    }
}
