//! The ledger of a chaos run: every request the client sent, when, what it asked for, how it
//! was answered (status, `Retry-After`, the backend from `x-served-by`) or how it failed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What a request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `GET /users/{id}`.
    Read {
        /// The user's id.
        user: i64,
    },
    /// `PUT /users/{id}` with a new name.
    Update {
        /// The user's id.
        user: i64,
        /// The name sent.
        name: String,
    },
    /// `POST /users`.
    Create {
        /// The new user's e-mail (unique per run).
        email: String,
    },
    /// `POST /tasks` (an `increment`) with this idempotency key and body.
    Task {
        /// The `Idempotency-Key`.
        key: String,
        /// The JSON body (sent again as it was).
        body: String,
    },
    /// `POST /orders` with this idempotency key and body.
    Order {
        /// The `Idempotency-Key`.
        key: String,
        /// The JSON body (sent again as it was).
        body: String,
    },
    /// `GET /ping` on a new connection.
    Ping,
}

impl Op {
    /// A short name of the request's kind, for summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Update { .. } => "update",
            Op::Create { .. } => "create",
            Op::Task { .. } => "task",
            Op::Order { .. } => "order",
            Op::Ping => "ping",
        }
    }

    /// The idempotency key of a task or order.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Op::Task { key, .. } | Op::Order { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Where a task or order is posted.
    pub fn post_path(&self) -> Option<&'static str> {
        match self {
            Op::Task { .. } => Some("/tasks"),
            Op::Order { .. } => Some("/orders"),
            _ => None,
        }
    }

    /// Whether the users API answers it (the database behind the cache).
    pub fn is_users_api(&self) -> bool {
        matches!(
            self,
            Op::Read { .. } | Op::Update { .. } | Op::Create { .. }
        )
    }
}

/// How a request ended.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTTP answer.
    Status {
        /// The status code.
        code: u16,
        /// Whether it carried `Retry-After`.
        retry_after: bool,
        /// `x-served-by`: the backend's instance id.
        backend: Option<String>,
        /// The body as JSON (`null` when it is not JSON).
        body: serde_json::Value,
    },
    /// No answer: the error's kind and text.
    Failed {
        /// What kind of failure.
        kind: FailKind,
        /// The error as text.
        text: String,
    },
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailKind {
    /// No answer within the client's timeout: a hang.
    Timeout,
    /// Connection refused.
    Refused,
    /// Connection reset or closed before the answer ended.
    Reset,
    /// Anything else.
    Other,
}

impl FailKind {
    /// The kind of an I/O error of the client.
    pub fn of(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::TimedOut | K::WouldBlock => FailKind::Timeout,
            K::ConnectionRefused => FailKind::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                FailKind::Reset
            }
            _ => FailKind::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FailKind::Timeout => "timeout",
            FailKind::Refused => "refused",
            FailKind::Reset => "reset",
            FailKind::Other => "error",
        }
    }
}

/// One request of the ledger.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its `x-request-id`.
    pub id: String,
    /// What it asked for.
    pub op: Op,
    /// When it was sent.
    pub sent: Instant,
    /// How long until the answer (or the failure).
    pub took: Duration,
    /// How it ended.
    pub answer: Answer,
}

impl Entry {
    /// The status code, if answered.
    pub fn code(&self) -> Option<u16> {
        match self.answer {
            Answer::Status { code, .. } => Some(code),
            Answer::Failed { .. } => None,
        }
    }

    /// Answered with a 2xx.
    pub fn ok(&self) -> bool {
        self.code().is_some_and(|c| (200..300).contains(&c))
    }

    /// The backend that answered (`x-served-by`).
    pub fn backend(&self) -> Option<&str> {
        match &self.answer {
            Answer::Status { backend, .. } => backend.as_deref(),
            Answer::Failed { .. } => None,
        }
    }

    /// The failure class in the summary: `503`, `500`, `timeout`, ... (`None`: a 2xx).
    pub fn failure(&self) -> Option<String> {
        match &self.answer {
            Answer::Status { code, .. } if (200..300).contains(code) => None,
            Answer::Status {
                code: 503,
                retry_after: false,
                ..
            } => Some("503 without Retry-After".into()),
            Answer::Status { code, .. } => Some(code.to_string()),
            Answer::Failed { kind, .. } => Some(kind.name().into()),
        }
    }

    /// One line for failure messages, with the time since `t0`.
    pub fn describe(&self, t0: Instant) -> String {
        let at = self.sent.saturating_duration_since(t0).as_millis();
        let what = match &self.answer {
            Answer::Status {
                code,
                backend,
                body,
                ..
            } => format!(
                "{code} from {} {}",
                backend.as_deref().unwrap_or("?"),
                body.to_string().chars().take(120).collect::<String>()
            ),
            Answer::Failed { kind, text } => format!("{} ({text})", kind.name()),
        };
        format!(
            "{} {} at +{at} ms ({} ms): {what}",
            self.id,
            self.op.kind(),
            self.took.as_millis()
        )
    }
}

/// What a scenario's check found, beside the requests' own answers.
#[derive(Debug, Default, Clone)]
pub struct Effects {
    /// Effects applied more than once (a task counted twice, a saga step repeated).
    pub duplicates: Vec<String>,
    /// Accepted writes whose effect is missing afterwards.
    pub lost: Vec<String>,
}

/// The ledger summary a scenario prints: sent, ok, failed by kind, duplicates, lost.
pub fn summary(name: &str, entries: &[Entry], effects: &Effects) -> String {
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_op: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut slowest: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut by_backend: BTreeMap<&str, usize> = BTreeMap::new();
    for e in entries {
        let slot = by_op.entry(e.op.kind()).or_default();
        slot.0 += 1;
        match e.failure() {
            None => slot.1 += 1,
            Some(f) => *failed.entry(f).or_default() += 1,
        }
        if let Some(b) = e.backend() {
            *by_backend.entry(b).or_default() += 1;
        }
        let max = slowest.entry(e.op.kind()).or_default();
        *max = (*max).max(e.took);
    }
    let ok = entries.iter().filter(|e| e.ok()).count();
    let mut s = format!(
        "{name}: sent {}, ok {ok}, failed {failed:?}, duplicates {}, lost {}",
        entries.len(),
        effects.duplicates.len(),
        effects.lost.len()
    );
    let ops: Vec<String> = by_op
        .iter()
        .map(|(k, (n, ok))| {
            let max = slowest.get(k).copied().unwrap_or_default().as_millis();
            format!("{k} {ok}/{n} (slowest {max} ms)")
        })
        .collect();
    let _ = write!(
        s,
        "\n    ok/sent by kind: {}; answered by {by_backend:?}",
        ops.join(", ")
    );
    for (what, list) in [("duplicate", &effects.duplicates), ("lost", &effects.lost)] {
        for l in list.iter().take(5) {
            let _ = write!(s, "\n    {what}: {l}");
        }
    }
    s
}
