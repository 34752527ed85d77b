//! Job types: what a producer asks for and what the job hash holds.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::QueueError;

/// Where a job is in its life. Terminal states are `Succeeded` and `Dead`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the delayed schedule for its first run.
    Scheduled,
    /// In the stream, waiting for a worker.
    Queued,
    /// A worker runs it now.
    Running,
    /// The last attempt failed; a retry waits in the delayed schedule.
    Failed,
    Succeeded,
    /// Out of attempts (or failed permanently): it is in the dead-letter stream.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Failed => "failed",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "scheduled" => JobState::Scheduled,
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "failed" => JobState::Failed,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            other => return Err(QueueError::Decode(format!("unknown job state {other:?}"))),
        })
    }
}

/// The longest delay a job may ask for: a year. A larger one is a unit mistake (seconds
/// given as ms, ms as µs), and would overflow the scheduler's clock arithmetic.
pub const MAX_DELAY_MS: u64 = 366 * 24 * 3600 * 1000;

/// The latest Unix time (ms) a job may be scheduled at: the end of year 9999.
pub const MAX_RUN_AT_MS: u64 = 253_402_300_799_999;

/// The most attempts a job may ask for.
pub const MAX_ATTEMPTS: u32 = 1000;

/// When a job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    #[default]
    Now,
    /// At this Unix time in milliseconds.
    At(u64),
    /// This many milliseconds after Redis accepted it.
    After(u64),
}

/// A request to enqueue one job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub schedule: Schedule,
    /// `None` means the queue's configured maximum.
    pub max_attempts: Option<u32>,
    /// A repeated key returns the first job instead of a new one.
    pub idempotency_key: Option<String>,
    /// Jobs of one ordering key go to one partition, so with one job of the queue at a time
    /// (concurrency 1) they run in the order they were enqueued. Without it the idempotency
    /// key, else nothing, decides the partition.
    pub ordering_key: Option<String>,
    /// When the job ends (succeeded or dead), a `notify` job with `{"job_id": ...}` is
    /// enqueued on this queue in the same atomic step.
    pub notify_queue: Option<String>,
}

impl Schedule {
    /// Refuses a time past [`MAX_RUN_AT_MS`] or a delay past [`MAX_DELAY_MS`].
    pub fn check(self) -> Result<Self, String> {
        match self {
            Schedule::At(ms) if ms > MAX_RUN_AT_MS => Err(format!(
                "run_at_ms {ms} is past the end of year 9999 ({MAX_RUN_AT_MS})"
            )),
            Schedule::After(ms) if ms > MAX_DELAY_MS => Err(format!(
                "delay_ms {ms} is more than a year ({MAX_DELAY_MS})"
            )),
            ok => Ok(ok),
        }
    }
}

impl NewJob {
    pub fn new(
        queue: impl Into<String>,
        kind: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            queue: queue.into(),
            kind: kind.into(),
            payload,
            schedule: Schedule::Now,
            max_attempts: None,
            idempotency_key: None,
            ordering_key: None,
            notify_queue: None,
        }
    }

    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    pub fn notify_queue(mut self, queue: impl Into<String>) -> Self {
        self.notify_queue = Some(queue.into());
        self
    }
}

/// What an enqueue returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// False when an idempotency key matched an earlier job (`id` is that job).
    pub created: bool,
}

/// One attempt as recorded in the job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub consumer: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// "succeeded", "failed", "lost" (the worker vanished) or "replayed".
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The job hash, decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub queue: String,
    pub kind: String,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_ms: u64,
    pub updated_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub history: Vec<Attempt>,
}

impl JobRecord {
    /// Decodes the fields of `HGETALL`; `None` when the hash does not exist.
    pub fn from_hash(mut h: HashMap<String, String>) -> Result<Option<Self>, QueueError> {
        if h.is_empty() {
            return Ok(None);
        }
        let mut take = |k: &str| h.remove(k).filter(|v| !v.is_empty());
        let num = |v: Option<String>, k: &str| -> Result<u64, QueueError> {
            v.as_deref()
                .unwrap_or("0")
                .parse()
                .map_err(|_| QueueError::Decode(format!("job field {k} is not a number")))
        };
        let json = |v: Option<String>, k: &str| -> Result<Option<serde_json::Value>, QueueError> {
            v.map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| QueueError::Decode(format!("job field {k}: {e}")))
        };
        let id = take("id").ok_or_else(|| QueueError::Decode("job hash without id".into()))?;
        let state: JobState = take("state").as_deref().unwrap_or("queued").parse()?;
        let history = match take("history") {
            Some(s) => serde_json::from_str(&s)
                .map_err(|e| QueueError::Decode(format!("job field history: {e}")))?,
            None => Vec::new(),
        };
        let run_at = take("run_at_ms");
        let progress = take("progress");
        let attempts = num(take("attempts"), "attempts")? as u32;
        let mut history = history;
        // The Redis Streams backend records a success as plain fields instead of appending
        // to `history` (cheaper per job): it is the history's last record.
        if let (JobState::Succeeded, Some(consumer)) = (state, take("succeeded_by")) {
            history.push(Attempt {
                attempt: attempts,
                consumer,
                started_ms: num(take("started_ms"), "started_ms")?,
                finished_ms: num(take("finished_ms"), "finished_ms")?,
                outcome: "succeeded".into(),
                error: None,
            });
        }
        // A finished job is done: 100 whatever its handler last reported.
        let progress = match state {
            JobState::Succeeded => Some("100".to_string()),
            _ => progress,
        };
        Ok(Some(JobRecord {
            id,
            queue: take("queue").unwrap_or_default(),
            kind: take("kind").unwrap_or_default(),
            state,
            payload: json(take("payload"), "payload")?.unwrap_or(serde_json::Value::Null),
            attempts,
            max_attempts: num(take("max_attempts"), "max_attempts")? as u32,
            created_ms: num(take("created_ms"), "created_ms")?,
            updated_ms: num(take("updated_ms"), "updated_ms")?,
            run_at_ms: run_at.map(|v| num(Some(v), "run_at_ms")).transpose()?,
            progress: progress
                .map(|v| num(Some(v), "progress").map(|p| p.min(100) as u8))
                .transpose()?,
            result: json(take("result"), "result")?,
            last_error: take("last_error"),
            history,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_hash() {
        let h: HashMap<String, String> = [
            ("id", "j1"),
            ("queue", "tasks"),
            ("kind", "echo"),
            ("state", "dead"),
            ("payload", "{\"a\":1}"),
            ("attempts", "3"),
            ("max_attempts", "3"),
            ("created_ms", "10"),
            ("updated_ms", "20"),
            ("last_error", "boom"),
            ("history", "[{\"attempt\":1,\"consumer\":\"c\",\"started_ms\":1,\"finished_ms\":2,\"outcome\":\"failed\",\"error\":\"boom\"}]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = JobRecord::from_hash(h).unwrap().unwrap();
        assert_eq!(r.state, JobState::Dead);
        assert_eq!(r.attempts, 3);
        assert_eq!(r.history.len(), 1);
        assert_eq!(r.last_error.as_deref(), Some("boom"));
        assert!(JobRecord::from_hash(HashMap::new()).unwrap().is_none());
    }

    /// A success recorded as plain fields (Redis Streams) is the history's last record; a
    /// succeeded hash without them (RabbitMQ appends the record itself) gets nothing added.
    #[test]
    fn a_success_recorded_as_fields_ends_the_history() {
        let hash = |extra: &[(&str, &str)]| -> HashMap<String, String> {
            [
                ("id", "j1"),
                ("state", "succeeded"),
                ("attempts", "2"),
                ("started_ms", "30"),
                ("finished_ms", "40"),
                ("updated_ms", "40"),
                ("history", "[{\"attempt\":1,\"consumer\":\"c\",\"started_ms\":1,\"finished_ms\":2,\"outcome\":\"failed\",\"error\":\"boom\"}]"),
            ]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let r = JobRecord::from_hash(hash(&[("succeeded_by", "w1")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.progress, Some(100));
        assert_eq!(r.history.len(), 2);
        assert_eq!(
            r.history[1],
            Attempt {
                attempt: 2,
                consumer: "w1".into(),
                started_ms: 30,
                finished_ms: 40,
                outcome: "succeeded".into(),
                error: None,
            }
        );
        let r = JobRecord::from_hash(hash(&[("progress", "100")]))
            .unwrap()
            .unwrap();
        assert_eq!(r.history.len(), 1);
        // Only a succeeded job's fields are a record (a running one has started_ms too).
        let mut running = hash(&[("succeeded_by", "w1"), ("progress", "40")]);
        running.insert("state".into(), "running".into());
        let r = JobRecord::from_hash(running).unwrap().unwrap();
        assert_eq!((r.history.len(), r.progress), (1, Some(40)));
    }

    #[test]
    fn schedules_past_the_bounds_are_refused() {
        assert_eq!(Schedule::Now.check(), Ok(Schedule::Now));
        assert!(Schedule::After(MAX_DELAY_MS).check().is_ok());
        let e = Schedule::After(MAX_DELAY_MS + 1).check().unwrap_err();
        assert!(e.contains("delay_ms"), "{e}");
        assert!(Schedule::After(u64::MAX).check().is_err());
        assert!(Schedule::At(MAX_RUN_AT_MS).check().is_ok());
        let e = Schedule::At(MAX_RUN_AT_MS + 1).check().unwrap_err();
        assert!(e.contains("run_at_ms"), "{e}");
    }
}
