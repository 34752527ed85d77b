//! Names of the Redis keys the queue uses. One place, so scripts and readers agree.
//!
//! `{p}` is the configured prefix:
//! - `{p}:job:{id}`          hash: the job record (state, attempts, payload, history, ...)
//! - `{p}:stream:{queue}`    stream: jobs ready to run (entries hold only the job id)
//! - `{p}:delayed:{queue}`   sorted set: job id -> due time (ms); delayed jobs and retries
//! - `{p}:dlq:{queue}`       stream: dead letters (job id, last error, attempt history)
//! - `{p}:idem:{queue}:{k}`  string: idempotency key -> first job id
//! - `{p}:rate:{queue}:{s}`  counter: jobs started in the one-second window `s`
//! - `{p}:running:{queue}`   set (RabbitMQ backend): ids of the queue's jobs in state
//!   `running`, changed by the same scripts that change the state (`stats().pending`)

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The job hash prefix; Lua scripts append the id.
    pub fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }

    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    pub fn stream(&self, queue: &str) -> String {
        format!("{}:stream:{queue}", self.prefix)
    }

    pub fn delayed(&self, queue: &str) -> String {
        format!("{}:delayed:{queue}", self.prefix)
    }

    pub fn dlq(&self, queue: &str) -> String {
        format!("{}:dlq:{queue}", self.prefix)
    }

    /// Ids of the queue's running jobs (RabbitMQ backend; the Redis backend reads XPENDING).
    pub fn running(&self, queue: &str) -> String {
        format!("{}:running:{queue}", self.prefix)
    }

    pub fn idempotency(&self, queue: &str, key: &str) -> String {
        format!("{}:idem:{queue}:{key}", self.prefix)
    }

    /// Prefix of the rate-limit window counters; the script appends the window.
    pub fn rate_prefix(&self, queue: &str) -> String {
        format!("{}:rate:{queue}:", self.prefix)
    }

    /// Prefix for handler-owned keys (effect fences and the like).
    pub fn scoped(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
}

/// Queue names become parts of Redis keys and URL paths: keep them plain.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    let ok_len = (1..=64).contains(&name.len());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(format!(
            "queue name {name:?} must be 1-64 characters of [A-Za-z0-9._-]"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = Keys::new("q");
        assert_eq!(k.job("abc"), "q:job:abc");
        assert_eq!(k.stream("tasks"), "q:stream:tasks");
        assert_eq!(k.idempotency("tasks", "x"), "q:idem:tasks:x");
        assert_eq!(k.running("tasks"), "q:running:tasks");
        assert!(validate_queue_name("tasks").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("a b").is_err());
        assert!(validate_queue_name("a:b").is_err());
    }
}
