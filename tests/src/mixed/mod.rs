//! A mixed load (the chaos tests' and the soak's client): workers in the client's namespace
//! sending a mix of requests through the VIP, each on a new connection (so the balancer chooses a backend for every one), every one
//! written to the ledger. Reads go to users every worker knows; each worker updates only its
//! own users (one writer per user, so "the latest value" is well defined); tasks and orders
//! carry idempotency keys, and one refused with 503 is sent again with the same key after
//! its `Retry-After`, as a client of the API is told to.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{LabError, Result};
use crate::http::{self, Request};
use crate::netns::Host;
use crate::system::System;

pub mod ledger;

use ledger::{Answer, Entry, FailKind, Op};

/// Longer than the app's own request timeout (10 s): a request still unanswered after this
/// is a hang.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `req` on a new connection and records it.
pub fn send(addr: SocketAddr, op: Op, req: &Request<'_>) -> Entry {
    let sent = Instant::now();
    let answer = match http::once(addr, req, CLIENT_TIMEOUT) {
        Ok(r) => Answer::Status {
            code: r.status,
            retry_after: r.header("retry-after").is_some(),
            backend: r.header("x-served-by").map(str::to_string),
            body: serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        },
        Err(e) => Answer::Failed {
            kind: FailKind::of(&e),
            text: e.to_string(),
        },
    };
    Entry {
        id: req.id.to_string(),
        op,
        sent,
        took: sent.elapsed(),
        answer,
    }
}

/// [`send`] from inside `client`'s namespace.
pub fn call(client: &Host, addr: SocketAddr, op: Op, req: Request<'_>) -> Result<Entry> {
    client.in_netns(move || send(addr, op, &req))
}

/// The users a mixed load reads and writes, created through the VIP before it starts.
#[derive(Debug, Clone)]
pub struct Users {
    /// id -> the name it was created with.
    pub first: BTreeMap<i64, String>,
    /// Users every worker reads (read once through every backend, so every cache holds them).
    pub readers: Vec<i64>,
    /// Users each worker updates: `owned[w]` for worker `w`, 4 each.
    pub owned: Vec<Vec<i64>>,
}

impl Users {
    /// Creates 16 readers and 4 users per worker through `vip`, and reads the readers once
    /// through every backend of `system` (directly, at the VIP's port).
    pub fn create(system: &System, vip: SocketAddr, tag: &str, workers: usize) -> Result<Self> {
        let client = system.lab().host("client")?;
        let fail = |reason: String| LabError::Option {
            option: "mixed load: creating users".into(),
            reason,
        };
        let mut first = BTreeMap::new();
        let mut ids = Vec::new();
        for i in 0..16 + 4 * workers {
            let name = format!("{tag}-user{i}");
            let body = json!({ "name": name, "email": format!("{tag}-{i}@example.com") });
            let (body, id) = (body.to_string(), format!("{tag}-setup-{i}"));
            let op = Op::Create {
                email: String::new(),
            };
            let got = call(client, vip, op, Request::post("/users", &body, &id))?;
            let uid = match &got.answer {
                Answer::Status {
                    code: 201, body, ..
                } => body["id"].as_i64(),
                _ => None,
            }
            .ok_or_else(|| fail(format!("user {i}: {got:?}")))?;
            first.insert(uid, name);
            ids.push(uid);
        }
        let readers = ids[..16].to_vec();
        let owned = ids[16..].chunks(4).map(<[i64]>::to_vec).collect();
        for be in system.backends() {
            let addr = SocketAddr::new(system.lab().host(&be)?.ipv4().into(), vip.port());
            for u in &readers {
                let (path, id) = (format!("/users/{u}"), format!("{tag}-warm-{be}-{u}"));
                let got = call(
                    client,
                    addr,
                    Op::Read { user: *u },
                    Request::get(&path, &id),
                )?;
                if !got.ok() {
                    return Err(fail(format!("warming user {u} on {be}: {got:?}")));
                }
            }
        }
        Ok(Self {
            first,
            readers,
            owned,
        })
    }
}

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct Mix {
    /// Prefix of request ids, idempotency keys and e-mails (unique per run).
    pub tag: String,
    /// Users every worker reads (warm in the caches).
    pub readers: Vec<i64>,
    /// Users each worker updates: `owned[w]` for worker `w`.
    pub owned: Vec<Vec<i64>>,
    /// The `increment` counter of this phase's tasks.
    pub counter: String,
    /// The SKU this phase's orders buy.
    pub sku: String,
    /// Pause between two requests of one worker.
    pub pace: Duration,
    /// Each worker stops by itself after this long, whatever the caller does.
    pub max_time: Duration,
}

/// A task or order that was not accepted yet: sent again with the same key and body.
#[derive(Debug, Clone)]
struct Pending {
    op: Op,
    body: String,
    not_before: Instant,
}

/// Requests of one kind a worker makes, in turn.
const CYCLE: [&str; 10] = [
    "read", "read", "update", "read", "task", "read", "order", "read", "update", "create",
];

/// A running mixed load; [`Traffic::finish`] stops it and returns the ledger entries.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<Entry>>>,
}

impl Traffic {
    /// Starts one worker per entry of `mix.owned`, in `client`'s namespace, towards `addr`.
    /// Bounded: each worker stops by itself after `mix.max_time`.
    pub fn start(client: &Host, addr: SocketAddr, mix: Mix) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for w in 0..mix.owned.len() {
            let (stop, sent, mix) = (stop.clone(), sent.clone(), mix.clone());
            threads.push(client.spawn_thread(move || worker(w, addr, &mix, &stop, &sent))?);
        }
        Ok(Self {
            stop,
            sent,
            threads,
        })
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests than now were sent (bounded).
    pub fn wait_more(&self, n: usize, timeout: Duration) -> Result<()> {
        let want = self.sent() + n;
        let deadline = Instant::now() + timeout;
        while self.sent() < want {
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    command: format!("the client to send {n} more requests"),
                    timeout,
                    detail: format!(" ({} of {want} sent)", self.sent()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the workers after their current request; every entry, in order of sending.
    pub fn finish(mut self) -> Result<Vec<Entry>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in std::mem::take(&mut self.threads) {
            all.extend(t.join().map_err(|_| LabError::Option {
                option: "mixed load".into(),
                reason: "a client worker panicked".into(),
            })?);
        }
        all.sort_by_key(|e| e.sent);
        Ok(all)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn worker(
    w: usize,
    addr: SocketAddr,
    mix: &Mix,
    stop: &AtomicBool,
    sent: &AtomicUsize,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut retry: VecDeque<Pending> = VecDeque::new();
    let deadline = Instant::now() + mix.max_time;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let id = format!("{}-w{w}-{n}", mix.tag);
        // A refused task or order whose Retry-After has passed goes first.
        let due = retry
            .front()
            .is_some_and(|p| p.not_before <= Instant::now());
        let (op, method, path, body) = if due {
            let p = retry.pop_front().expect("checked");
            let path = p.op.post_path().unwrap_or_default();
            (p.op, "POST", path.to_string(), Some(p.body))
        } else {
            next_request(w, n, mix)
        };
        let key = op.idempotency_key().map(str::to_string);
        let mut req = Request {
            method,
            path: &path,
            body: body.as_deref(),
            id: &id,
            close: true,
            idempotency_key: None,
            bearer: None,
        };
        if let Some(k) = &key {
            req = req.idempotent(k);
        }
        let e = send(addr, op.clone(), &req);
        if key.is_some() && !e.ok() {
            retry.push_back(Pending {
                op,
                body: body.unwrap_or_default(),
                not_before: Instant::now() + RETRY_AFTER,
            });
        }
        sent.fetch_add(1, Ordering::Relaxed);
        out.push(e);
        n += 1;
        std::thread::sleep(mix.pace);
    }
    out
}

/// When a refused task or order is sent again (the app's `Retry-After` says 1 s).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `n`-th request of worker `w`: (op, method, path, body).
fn next_request(w: usize, n: usize, mix: &Mix) -> (Op, &'static str, String, Option<String>) {
    let pick = |list: &[i64]| list[(n / CYCLE.len() + n * 7 + w) % list.len()];
    match CYCLE[n % CYCLE.len()] {
        "update" if !mix.owned[w].is_empty() => {
            let user = pick(&mix.owned[w]);
            let name = format!("{}-w{w}-v{n}", mix.tag);
            let body = json!({ "name": name }).to_string();
            (
                Op::Update { user, name },
                "PUT",
                format!("/users/{user}"),
                Some(body),
            )
        }
        "create" => {
            let email = format!("{}-w{w}-{n}@example.com", mix.tag);
            let body = json!({ "name": "chaos", "email": email }).to_string();
            (Op::Create { email }, "POST", "/users".into(), Some(body))
        }
        "task" => {
            let key = format!("{}-w{w}-t{n}", mix.tag);
            let body = json!({
                "kind": "increment",
                "input": { "counter": mix.counter, "by": 1 },
            })
            .to_string();
            (
                Op::Task {
                    key,
                    body: body.clone(),
                },
                "POST",
                "/tasks".into(),
                Some(body),
            )
        }
        "order" => {
            let key = format!("{}-w{w}-o{n}", mix.tag);
            let body =
                json!({ "sku": mix.sku, "quantity": 1 + n % 3, "amount_cents": 500 }).to_string();
            (
                Op::Order {
                    key,
                    body: body.clone(),
                },
                "POST",
                "/orders".into(),
                Some(body),
            )
        }
        _ => {
            let user = pick(&mix.readers);
            (Op::Read { user }, "GET", format!("/users/{user}"), None)
        }
    }
}

/// Per idempotency key: the id the API gave the task or order once it accepted it (`None`:
/// never accepted).
pub fn accepted(entries: &[Entry], kind: &str) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    for e in entries {
        let key = match (&e.op, kind) {
            (Op::Task { key, .. }, "task") | (Op::Order { key, .. }, "order") => key,
            _ => continue,
        };
        let id = match &e.answer {
            Answer::Status {
                code: 202, body, ..
            } => body["id"].as_str().map(str::to_string),
            _ => None,
        };
        let slot = out.entry(key.clone()).or_default();
        if slot.is_none() {
            *slot = id;
        }
    }
    out
}
