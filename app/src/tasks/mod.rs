//! Asynchronous tasks (design seed 4.3): `POST /tasks` queues a job and answers 202 at once;
//! `GET /tasks/{id}` shows its state; an optional callback URL gets a signed POST when the
//! task ends (see `callback`).

mod api;
pub mod callback;
mod kinds;
pub mod target;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::queue::{JobRecord, JobState, NewJob, Queue, QueueError, Registry, Schedule};

pub use api::{api, routes};
pub use callback::{SIGNATURE_HEADER, sign};
pub use kinds::counter_key;

/// Queue of the tasks themselves.
pub const TASKS_QUEUE: &str = "tasks";
/// Queue of the callback deliveries.
pub const CALLBACKS_QUEUE: &str = "callbacks";

/// `[tasks]` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSettings {
    /// HMAC-SHA256 key of callback signatures. Empty: tasks with a callback URL are refused.
    pub callback_secret: String,
    /// Timeout of one callback delivery (ms).
    pub callback_timeout_ms: u64,
    /// Let callbacks go to loopback and link-local addresses (refused by default: see
    /// `target`).
    pub callback_allow_local: bool,
    /// More addresses (`ADDR` or `ADDR/PREFIX`) no callback may go to: the balancers' own,
    /// beside the control planes of `registration`, which are always refused.
    pub callback_denied: Vec<String>,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            callback_secret: String::new(),
            callback_timeout_ms: 5_000,
            callback_allow_local: false,
            callback_denied: Vec::new(),
        }
    }
}

impl TaskSettings {
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.callback_timeout_ms == 0 || self.callback_timeout_ms > 120_000 {
            return Err(QueueError::config(
                "tasks.callback_timeout_ms",
                "must be between 1 and 120000",
            ));
        }
        for d in &self.callback_denied {
            target::parse_net(d).map_err(|e| QueueError::config("tasks.callback_denied", e))?;
        }
        Ok(())
    }

    /// The callback policy: these settings and the `extra` refused hosts.
    pub fn policy(&self, extra: &[IpAddr]) -> target::Policy {
        let mut denied: Vec<ipnet::IpNet> = self
            .callback_denied
            .iter()
            .filter_map(|d| target::parse_net(d).ok())
            .collect();
        denied.extend(extra.iter().map(|a| ipnet::IpNet::from(*a)));
        target::Policy {
            allow_local: self.callback_allow_local,
            denied,
        }
    }
}

/// What a client submits.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// One of the built-in kinds (`echo`, `sleep`, `fail`, `flaky`, `increment`).
    #[schema(schema_with = kinds::schema)]
    pub kind: String,
    /// The kind's input (`sleep`: `{"ms": N}`, ...); 422 when the kind refuses it.
    #[serde(default)]
    pub input: serde_json::Value,
    pub callback_url: Option<String>,
    /// Run no earlier than this Unix time (ms).
    #[schema(maximum = 253_402_300_799_999u64)]
    pub run_at_ms: Option<u64>,
    /// Run no earlier than this many ms from now (at most a year).
    #[schema(maximum = 31_622_400_000u64)]
    pub delay_ms: Option<u64>,
    /// Attempts before the task is dead (default: the queue's setting).
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    /// Same as the `Idempotency-Key` header.
    #[schema(min_length = 1, max_length = 200)]
    pub idempotency_key: Option<String>,
}

/// The stored job payload: the client's input plus where to report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub input: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a worker (or for its time, when delayed).
    Queued,
    Running,
    Succeeded,
    /// The last attempt failed; a retry is scheduled.
    Failed,
    /// Out of attempts: a dead letter.
    Dead,
}

/// A task as `GET /tasks/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub id: String,
    pub kind: String,
    pub state: TaskState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub progress: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub history: Vec<crate::queue::Attempt>,
}

impl TaskView {
    fn from_job(j: JobRecord) -> Self {
        let env: Option<Envelope> = serde_json::from_value(j.payload.clone()).ok();
        let state = match j.state {
            // A delayed task has simply not started yet.
            JobState::Scheduled | JobState::Queued => TaskState::Queued,
            JobState::Running => TaskState::Running,
            JobState::Failed => TaskState::Failed,
            JobState::Succeeded => TaskState::Succeeded,
            JobState::Dead => TaskState::Dead,
        };
        let progress = match j.state {
            JobState::Succeeded => 100,
            _ => j.progress.unwrap_or(0),
        };
        TaskView {
            id: j.id,
            kind: j.kind,
            state,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            progress,
            result: j.result,
            error: j.last_error,
            run_at_ms: j.run_at_ms,
            callback_url: env.and_then(|e| e.callback_url),
            created_ms: j.created_ms,
            updated_ms: j.updated_ms,
            history: j.history,
        }
    }
}

/// Submits and reads tasks.
#[derive(Clone)]
pub struct TaskService {
    queue: Queue,
    settings: TaskSettings,
    policy: Arc<target::Policy>,
}

impl TaskService {
    pub fn new(queue: Queue, settings: TaskSettings) -> Self {
        Self::with_refused_hosts(queue, settings, &[])
    }

    /// Also refuses callbacks to `hosts` (the balancers' addresses, from the composition
    /// root).
    pub fn with_refused_hosts(queue: Queue, settings: TaskSettings, hosts: &[IpAddr]) -> Self {
        let policy = Arc::new(settings.policy(hosts));
        Self {
            queue,
            settings,
            policy,
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Queues a task. Returns the task id and whether it is new (false: the idempotency key
    /// matched an earlier task, whose id is returned).
    pub async fn submit(
        &self,
        req: TaskRequest,
        header_key: Option<String>,
    ) -> Result<(String, bool), QueueError> {
        if !kinds::KINDS.contains(&req.kind.as_str()) {
            return Err(QueueError::Invalid(format!(
                "unknown kind {:?}; known kinds: {}",
                req.kind,
                kinds::KINDS.join(", ")
            )));
        }
        kinds::validate_input(&req.kind, &req.input).map_err(QueueError::Invalid)?;
        if let Some(url) = &req.callback_url {
            callback::validate_url(url).map_err(QueueError::Invalid)?;
            callback::check_literal(url, &self.policy).map_err(QueueError::Invalid)?;
            if self.settings.callback_secret.is_empty() {
                return Err(QueueError::Invalid(
                    "callback_url needs tasks.callback_secret to be configured".into(),
                ));
            }
        }
        let schedule = match (req.run_at_ms, req.delay_ms) {
            (Some(_), Some(_)) => {
                return Err(QueueError::Invalid(
                    "give run_at_ms or delay_ms, not both".into(),
                ));
            }
            (Some(at), None) => Schedule::At(at),
            (None, Some(d)) => Schedule::After(d),
            (None, None) => Schedule::Now,
        };
        let key = match (header_key, req.idempotency_key) {
            (Some(h), Some(b)) if h != b => {
                return Err(QueueError::Invalid(
                    "Idempotency-Key header and idempotency_key differ".into(),
                ));
            }
            (h, b) => h.or(b),
        };
        let has_callback = req.callback_url.is_some();
        let env = Envelope {
            input: req.input,
            callback_url: req.callback_url,
        };
        let payload = serde_json::to_value(env).map_err(|e| QueueError::Invalid(e.to_string()))?;
        let mut job = NewJob::new(TASKS_QUEUE, req.kind, payload).schedule(schedule);
        job.max_attempts = req.max_attempts;
        job.idempotency_key = key;
        if has_callback {
            job = job.notify_queue(CALLBACKS_QUEUE);
        }
        let e = self.queue.enqueue(job).await?;
        Ok((e.id, e.created))
    }

    /// The task, or `None` if unknown (or not a task).
    pub async fn get(&self, id: &str) -> Result<Option<TaskView>, QueueError> {
        // An id that is not ours is simply not found (`Queue::get` checks its form).
        Ok(self
            .queue
            .get(id)
            .await?
            .filter(|j| j.queue == TASKS_QUEUE)
            .map(TaskView::from_job))
    }

    /// The handlers of the `tasks` and `callbacks` queues.
    pub fn registry(&self) -> Result<Registry, QueueError> {
        let reg = kinds::registry();
        let cb = callback::Deliverer::new(&self.settings, self.policy.clone())?;
        Ok(reg.on(CALLBACKS_QUEUE, "notify", cb))
    }
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::TaskRequest;
    use crate::queue::{MAX_ATTEMPTS, MAX_DELAY_MS, MAX_RUN_AT_MS};

    /// The document's bounds are literals (attributes take no paths): they must be the
    /// queue's, or schemathesis and clients learn limits the queue does not apply.
    #[test]
    fn the_documented_bounds_are_the_queues() {
        let doc = serde_json::to_value(TaskRequest::schema()).expect("JSON");
        let prop = |name: &str, key: &str| doc["properties"][name][key].as_u64();
        assert_eq!(prop("delay_ms", "maximum"), Some(MAX_DELAY_MS));
        assert_eq!(prop("run_at_ms", "maximum"), Some(MAX_RUN_AT_MS));
        assert_eq!(prop("max_attempts", "minimum"), Some(1));
        assert_eq!(
            prop("max_attempts", "maximum"),
            Some(u64::from(MAX_ATTEMPTS))
        );
        assert_eq!(prop("idempotency_key", "maxLength"), Some(200));
    }
}
