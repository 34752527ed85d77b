//! After a fault: what the ledger promises must be true. Every user answered 201 exists and
//! reads back its latest acknowledged value (or a later one the client sent without getting
//! an answer) through every backend; every task and order ends up accepted (the client sends a
//! refused one again with its key), runs to its end, and has its effect exactly once; the
//! stock adds up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::E2e;
use crate::http::Request;
use tests::mixed::ledger::{Answer, Effects, Entry, Op};
use tests::mixed::{self, accepted};

/// How long the system may take to settle after a fault (jobs a dead Redis connection left
/// pending are reclaimed after the queue's `claim_idle_ms`, 30 s).
const SETTLE: Duration = Duration::from_secs(120);

/// One request from the client to `addr` (a backend directly, or the VIP), recorded.
pub fn call(e: &E2e, addr: SocketAddr, op: Op, req: Request<'_>) -> Result<Entry> {
    Ok(mixed::call(e.client(), addr, op, req)?)
}

/// The JSON body of a 200 answer.
fn body_200(e: &Entry) -> Option<&Value> {
    match &e.answer {
        Answer::Status {
            code: 200, body, ..
        } => Some(body),
        _ => None,
    }
}

/// Names user `u` may hold after `entries`: the last name acknowledged (or its first name when
/// no update was), and any name sent after that without an acknowledgement (the write may
/// have landed and only its answer been lost).
pub fn allowed_names(
    first: &BTreeMap<i64, String>,
    entries: &[Entry],
) -> BTreeMap<i64, BTreeSet<String>> {
    let mut out: BTreeMap<i64, BTreeSet<String>> = first
        .iter()
        .map(|(u, n)| (*u, BTreeSet::from([n.clone()])))
        .collect();
    for e in entries {
        if let Op::Update { user, name } = &e.op {
            let set = out.entry(*user).or_default();
            if e.ok() {
                set.clear();
            }
            set.insert(name.clone());
        }
    }
    out
}

/// Every user in `want` reads back one of its allowed names on every backend (polled while
/// caches converge, bounded); the ones that do not are lost writes.
pub fn users_read_back(
    e: &E2e,
    want: &BTreeMap<i64, BTreeSet<String>>,
    tag: &str,
    effects: &mut Effects,
) -> Result<()> {
    let backends: Vec<(String, SocketAddr)> = e
        .system
        .backends()
        .into_iter()
        .map(|b| Ok((b.clone(), SocketAddr::new(e.addr_of(&b)?, e.vip.port()))))
        .collect::<Result<_>>()?;
    let mut left: Vec<(i64, &String, SocketAddr)> = want
        .keys()
        .flat_map(|u| backends.iter().map(move |(b, a)| (*u, b, *a)))
        .collect();
    let mut round = 0;
    let mut last: BTreeMap<(i64, String), String> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for (u, b, addr) in left {
            let id = format!("{tag}-check{round}-{u}-{b}");
            let path = format!("/users/{u}");
            let got = call(e, addr, Op::Read { user: u }, Request::get(&path, &id))?;
            let name = body_200(&got).and_then(|v| v["name"].as_str().map(str::to_string));
            if name.as_ref().is_some_and(|n| want[&u].contains(n)) {
                continue;
            }
            last.insert(
                (u, b.clone()),
                name.unwrap_or_else(|| format!("{:?}", got.failure())),
            );
            still.push((u, b, addr));
        }
        left = still;
        round += 1;
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for (u, b, _) in left {
        effects.lost.push(format!(
            "user {u} on {b} reads {:?}, want one of {:?}",
            last.get(&(u, b.clone())),
            want[&u]
        ));
    }
    Ok(())
}

/// Sends every task or order of `entries` that was never accepted again with its key until
/// it is (bounded), and returns key -> id for all of them.
pub fn accept_all(e: &E2e, entries: &[Entry], kind: &str) -> Result<BTreeMap<String, String>> {
    let mut ids = BTreeMap::new();
    let bodies: BTreeMap<&str, &Op> = entries
        .iter()
        .filter_map(|x| x.op.idempotency_key().map(|k| (k, &x.op)))
        .collect();
    for (key, id) in accepted(entries, kind) {
        let id = match id {
            Some(id) => id,
            None => {
                let op = (*bodies.get(key.as_str()).context("the key's request")?).clone();
                resend(e, &key, op)?
            }
        };
        ids.insert(key, id);
    }
    Ok(ids)
}

fn resend(e: &E2e, key: &str, op: Op) -> Result<String> {
    let (path, body) = match &op {
        Op::Task { body, .. } => ("/tasks", body.clone()),
        Op::Order { body, .. } => ("/orders", body.clone()),
        _ => bail!("only tasks and orders are sent again"),
    };
    let deadline = std::time::Instant::now() + SETTLE;
    for attempt in 0.. {
        let id = format!("{key}-again{attempt}");
        let req = Request::post(path, &body, &id).idempotent(key);
        let got = call(e, e.vip, op.clone(), req)?;
        if let Answer::Status {
            code: 202, body, ..
        } = &got.answer
            && let Some(id) = body["id"].as_str()
        {
            return Ok(id.to_string());
        }
        if std::time::Instant::now() >= deadline {
            bail!("{path} with key {key} still not accepted: {got:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    unreachable!("the loop returns")
}

/// Polls `GET path` through the VIP until `done` says the JSON is final (bounded).
fn wait_final(e: &E2e, path: &str, done: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = std::time::Instant::now() + SETTLE;
    for round in 0.. {
        let id = format!("final{round}{path}");
        let got = call(e, e.vip, Op::Ping, Request::get(path, &id))?;
        if let Some(v) = body_200(&got)
            && done(v)
        {
            return Ok(v.clone());
        }
        if std::time::Instant::now() >= deadline {
            bail!("{path} not final after {SETTLE:?}: {got:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    unreachable!("the loop returns")
}

/// Every task ran to success, and the phase's counter counts each exactly once.
pub fn tasks_ran_once(
    e: &E2e,
    ids: &BTreeMap<String, String>,
    counter: &str,
    effects: &mut Effects,
) -> Result<()> {
    for (key, id) in ids {
        let v = wait_final(e, &format!("/tasks/{id}"), |v| {
            matches!(v["state"].as_str(), Some("succeeded" | "dead"))
        })?;
        if v["state"] != "succeeded" {
            effects
                .lost
                .push(format!("task {key} ({id}) is {}", v["state"]));
        }
    }
    let svc = e.system.lab().host("svc")?;
    let out = svc.exec([
        "redis-cli",
        "-h",
        &svc.ipv4().to_string(),
        "GET",
        // The app's key (app::tasks::kinds::counter_key): the name is a cluster hash tag.
        &format!("q:counter:{{{counter}}}"),
    ])?;
    let value: i64 = out.trim().parse().unwrap_or(0);
    let want = ids.len() as i64;
    if value > want {
        effects.duplicates.push(format!(
            "counter {counter} is {value} after {want} tasks: {} effects counted twice",
            value - want
        ));
    } else if value < want {
        effects.lost.push(format!(
            "counter {counter} is {value} after {want} tasks: {} effects missing",
            want - value
        ));
    }
    Ok(())
}

/// Every order reached `confirmed` or `cancelled` with each saga step (and compensation) once,
/// and the SKU's stock adds up: available + held = initial, held = units of confirmed orders.
pub fn orders_settled(
    e: &E2e,
    ids: &BTreeMap<String, String>,
    sku: &str,
    initial: i64,
    effects: &mut Effects,
) -> Result<(usize, usize)> {
    let (mut confirmed, mut cancelled, mut units) = (0, 0, 0i64);
    for (key, id) in ids {
        let v = wait_final(e, &format!("/orders/{id}"), |v| {
            matches!(v["state"].as_str(), Some("confirmed" | "cancelled"))
        })?;
        let mut steps: BTreeMap<String, usize> = BTreeMap::new();
        for h in v["history"].as_array().into_iter().flatten() {
            let step = format!(
                "{}:{}",
                h["step"].as_str().unwrap_or("?"),
                h["status"].as_str().unwrap_or("?")
            );
            *steps.entry(step).or_default() += 1;
        }
        for (step, n) in &steps {
            if *n > 1 {
                effects
                    .duplicates
                    .push(format!("order {key} ({id}): {step} {n} times"));
            }
        }
        if v["state"] == "confirmed" {
            confirmed += 1;
            units += v["quantity"].as_i64().unwrap_or(0);
            for step in ["reserve_stock:done", "take_payment:done", "confirm:done"] {
                if !steps.contains_key(step) {
                    effects
                        .lost
                        .push(format!("order {key} ({id}) confirmed without {step}"));
                }
            }
        } else {
            cancelled += 1;
        }
    }
    let path = format!("/orders/stock/{sku}");
    let stock = call(e, e.vip, Op::Ping, Request::get(&path, "stock-check"))?;
    let stock = body_200(&stock).context("GET /orders/stock")?.clone();
    let (available, held) = (
        stock["available"].as_i64().unwrap_or(-1),
        stock["held"].as_i64().unwrap_or(-1),
    );
    if available + held != initial || held != units {
        effects.lost.push(format!(
            "stock of {sku}: available {available} + held {held} != {initial} initial, or held != \
             {units} units of {confirmed} confirmed orders"
        ));
    }
    Ok((confirmed, cancelled))
}
