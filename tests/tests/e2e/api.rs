//! Scenario 2: the cached users API and the task queue through the VIP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::E2e;
use crate::http::{self, Request, Response};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of the new user; all but the first must be answered by a cache (L1 or L2).
const READS: usize = 6;

/// One request from the client through `addr` on a new connection.
pub(crate) fn call(e: &E2e, addr: SocketAddr, req: Request<'_>) -> Result<Response> {
    let (m, p, b, id) = (
        req.method.to_string(),
        req.path.to_string(),
        req.body.map(str::to_string),
        req.id.to_string(),
    );
    e.client()
        .in_netns(move || {
            let req = Request {
                method: &m,
                path: &p,
                body: b.as_deref(),
                id: &id,
                close: true,
                idempotency_key: None,
                bearer: None,
            };
            http::once(addr, &req, TIMEOUT)
        })?
        .with_context(|| format!("{} {} through {addr}", req.method, req.path))
}

/// Cache counters summed over every backend (read at each backend's own address, not the VIP).
pub(crate) fn cache_counters(e: &E2e, tag: &str) -> Result<(f64, f64)> {
    let (mut hits, mut loads) = (0.0, 0.0);
    for be in e.system.backends() {
        let addr = SocketAddr::new(e.addr_of(&be)?, e.vip.port());
        let r = call(e, addr, Request::get("/metrics", &format!("{tag}-{be}")))?;
        ensure!(r.status == 200, "{be} /metrics: status {}", r.status);
        let (h, l) = tests::metrics::user_cache(&r.text());
        hits += h;
        loads += l;
    }
    Ok((hits, loads))
}

/// Creates a user through `vip`, reads it back through `vip` [`READS`] times and checks the
/// reads came from the cache; returns its id. Request ids start with `tag`.
pub(crate) fn user_read_back_from_cache(e: &mut E2e, vip: SocketAddr, tag: &str) -> Result<i64> {
    let body = json!({
        "name": "E2E User",
        "email": format!("e2e-{tag}-{}@example.com", std::process::id())
    })
    .to_string();
    let created = call(
        e,
        vip,
        Request::post("/users", &body, &format!("{tag}-create")),
    )?;
    ensure!(
        created.status == 201,
        "POST /users through {vip}: {} {}",
        created.status,
        created.text()
    );
    let user = created.json()?;
    let id = user["id"]
        .as_i64()
        .context("the created user has a numeric id")?;

    // A write deletes the cached value twice (at once, and delayed_delete_ms = 500 ms later);
    // read after the second delete so it cannot drop what these reads cache.
    std::thread::sleep(Duration::from_millis(1500));
    let (hits0, loads0) = cache_counters(e, &format!("{tag}-metrics0"))?;
    let path = format!("/users/{id}");
    let mut readers = Vec::new();
    for i in 0..READS {
        let rid = format!("{tag}-read-{i}");
        let r = call(e, vip, Request::get(&path, &rid))?;
        ensure!(
            r.status == 200,
            "GET {path} #{i} through {vip}: {} {}",
            r.status,
            r.text()
        );
        ensure!(
            r.json()? == user,
            "GET {path} #{i} answered {} instead of {user}",
            r.text()
        );
        readers.push(e.ledger.wait_for(&e.system, &rid)?);
    }
    let (hits1, loads1) = cache_counters(e, &format!("{tag}-metrics1"))?;
    let (hits, loads) = (hits1 - hits0, loads1 - loads0);
    e.say(&format!(
        "user {id} through {vip}: {READS} reads answered by {readers:?}: {hits} cache hits (L1+L2), {loads} database loads"
    ));
    ensure!(
        loads <= 1.0,
        "{READS} reads of one user loaded it {loads} times from the database: the cache did not serve them"
    );
    ensure!(
        hits >= (READS - 1) as f64,
        "only {hits} of the {READS} reads were cache hits (at most the first may miss)"
    );
    Ok(id)
}

#[test]
fn cached_api_and_queue_work_through_the_vip() -> Result<()> {
    let mut e = E2e::start("api")?;
    let vip = e.vip;
    let id = user_read_back_from_cache(&mut e, vip, "api")?;

    // A task through the queue, its result read from another backend.
    let input = json!({"user": id, "note": "e2e"});
    let body = json!({"kind": "echo", "input": input}).to_string();
    let submitted = call(&e, vip, Request::post("/tasks", &body, "api-task"))?;
    ensure!(
        submitted.status == 202,
        "POST /tasks: {} {}",
        submitted.status,
        submitted.text()
    );
    let task = submitted.json()?;
    let task_id = task["id"]
        .as_str()
        .context("the task has an id")?
        .to_string();
    let submitter = e.ledger.wait_for(&e.system, "api-task")?;
    let path = format!("/tasks/{task_id}");
    let start = Instant::now();
    let mut seen: Vec<(String, String)> = Vec::new();
    for i in 0.. {
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "task {task_id} not read as succeeded from a backend other than {submitter} within 30 s: {seen:?}"
        );
        let rid = format!("api-status-{i}");
        let r = call(&e, vip, Request::get(&path, &rid))?;
        ensure!(r.status == 200, "GET {path}: {} {}", r.status, r.text());
        let status: Value = r.json()?;
        let state = status["state"].as_str().unwrap_or("?").to_string();
        let reader = e.ledger.wait_for(&e.system, &rid)?;
        seen.push((reader.clone(), state.clone()));
        if state == "dead" {
            bail!("task {task_id} died: {status}");
        }
        if state == "succeeded" && reader != submitter {
            ensure!(
                status["result"] == input,
                "task {task_id}: result {} instead of the echoed input {input}",
                status["result"]
            );
            e.say(&format!(
                "task {task_id} submitted on {submitter}, result read on {reader} after {} reads in {:.0} ms",
                i + 1,
                start.elapsed().as_secs_f64() * 1e3
            ));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unreachable!("the loop returns or fails")
}
