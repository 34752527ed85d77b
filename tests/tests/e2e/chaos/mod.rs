//! `cargo xtask test chaos` (issue 19): faults in the lab under a mixed load from the client
//! (user reads and writes, tasks, orders), with a ledger of every request: sent, answered with
//! what status and `Retry-After`, by which backend (`x-served-by`). After each fault the
//! scenario checks what the answers promised (`verify`) and prints its ledger summary.
//!
//! Two labs, each a sequence of scenarios:
//! - services: Redis SIGKILLed then restarted; PostgreSQL SIGKILLed for 10 s then restarted;
//!   the services host's link down for 5 s;
//! - balancers and backends: one backend's app killed and restarted every 2 s for 30 s
//!   (swaps per minute reported); both balancers' lbd SIGKILLed and restarted, one after the
//!   other.

mod faults;
mod verify;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;

use crate::E2e;
use crate::http::Request;
use faults::Fault;
use tests::mixed::ledger::{self, Answer, Effects, Entry, Op};
use tests::mixed::{Mix, Traffic, Users};

/// Workers of the chaos client and the pause between two requests of one: about 120
/// requests/s through the VIP, below the app's per-client rate limit on any one backend.
const WORKERS: usize = 4;
const PACE: Duration = Duration::from_millis(30);
/// Units of the SKU each scenario's orders buy (more than they can buy: none runs out).
const STOCK: i64 = 100_000;

/// What a scenario may answer with 503 + `Retry-After` instead of 2xx.
#[derive(Debug, Clone, Copy)]
struct Refusable {
    reads: bool,
    user_writes: bool,
    queue: bool,
}

impl Refusable {
    const NOTHING: Self = Self {
        reads: false,
        user_writes: false,
        queue: false,
    };
    /// Tasks and orders (their state lives in Redis).
    const QUEUE: Self = Self {
        queue: true,
        ..Self::NOTHING
    };
    /// User creates and updates (the database).
    const USER_WRITES: Self = Self {
        user_writes: true,
        ..Self::NOTHING
    };
    /// Every write: users, tasks, orders.
    const WRITES: Self = Self {
        user_writes: true,
        queue: true,
        reads: false,
    };
}

/// Requests that did not get their 2xx and that nothing excuses: 500s, 503s without
/// `Retry-After`, hangs, refused or reset connections, other 4xx/5xx, and 503s of what the
/// fault may not refuse.
fn unexcused<'a>(entries: &'a [Entry], fault: &dyn Fault) -> Vec<&'a Entry> {
    let may = fault.may();
    entries
        .iter()
        .filter(|e| {
            let refusable = match &e.op {
                Op::Read { .. } => may.reads,
                Op::Update { .. } | Op::Create { .. } => may.user_writes,
                Op::Task { .. } | Op::Order { .. } => may.queue,
                Op::Ping => false,
            };
            let failed = match &e.answer {
                Answer::Status { code, .. } if (200..300).contains(code) => false,
                Answer::Status {
                    code: 503,
                    retry_after: true,
                    ..
                } => !refusable,
                _ => true,
            };
            failed && !fault.excuses(e)
        })
        .collect()
}

/// Runs the mixed load around `fault`, then settles and checks; prints the ledger summary.
fn scenario(
    e: &E2e,
    users: &mut Users,
    history: &mut Vec<Entry>,
    fault: &mut dyn Fault,
) -> Result<()> {
    let name = fault.name();
    let tag = format!("{}-{name}", e.system.lab().prefix());
    let sku = format!("{tag}-sku");
    let counter = format!("{tag}-counter");
    let put = json!({ "available": STOCK }).to_string();
    let path = format!("/orders/stock/{sku}");
    // Setting stock is an admin route of the app.
    let token = e.system.token()?;
    let set = verify::call(
        e,
        e.vip,
        Op::Ping,
        Request::put(&path, &put, &format!("{tag}-s")).authorized(&token),
    )?;
    ensure!(set.ok(), "setting the stock of {sku}: {set:?}");
    let mix = Mix {
        tag: tag.clone(),
        readers: users.readers.clone(),
        owned: users.owned.clone(),
        counter: counter.clone(),
        sku: sku.clone(),
        pace: PACE,
        max_time: Duration::from_secs(600),
    };
    let t0 = Instant::now();
    let traffic = Traffic::start(e.client(), e.vip, mix)?;
    traffic.wait_more(100, Duration::from_secs(30))?;
    fault
        .run(e, &traffic)
        .with_context(|| format!("scenario {name}: the fault"))?;
    // Load goes on after the recovery.
    traffic.wait_more(200, Duration::from_secs(60))?;
    let entries = traffic.finish()?;
    e.say(&format!(
        "{name}: load and fault over after {:.1} s; settling",
        t0.elapsed().as_secs_f64()
    ));

    let mut effects = Effects::default();
    let tasks = verify::accept_all(e, &entries, "task")?;
    verify::tasks_ran_once(e, &tasks, &counter, &mut effects)?;
    let orders = verify::accept_all(e, &entries, "order")?;
    let (confirmed, cancelled) = verify::orders_settled(e, &orders, &sku, STOCK, &mut effects)?;
    for x in &entries {
        if let (
            Op::Create { .. },
            Answer::Status {
                code: 201, body, ..
            },
        ) = (&x.op, &x.answer)
            && let Some(id) = body["id"].as_i64()
        {
            users.first.insert(id, "chaos".into());
        }
    }
    history.extend(entries.iter().cloned());
    let want = verify::allowed_names(&users.first, history);
    verify::users_read_back(e, &want, &tag, &mut effects)?;

    e.say(&ledger::summary(name, &entries, &effects));
    e.say(&format!(
        "{name}: {} tasks, {} orders ({confirmed} confirmed, {cancelled} cancelled), {} users \
         read back on every backend {}",
        tasks.len(),
        orders.len(),
        want.len(),
        fault.report(e)?
    ));
    let bad = unexcused(&entries, fault);
    ensure!(
        bad.is_empty(),
        "{name}: {} requests failed in a way the fault does not excuse:\n  {}",
        bad.len(),
        bad.iter()
            .take(8)
            .map(|x| x.describe(t0))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    ensure!(
        effects.duplicates.is_empty() && effects.lost.is_empty(),
        "{name}: duplicates {:?}, lost {:?}",
        effects.duplicates,
        effects.lost
    );
    Ok(())
}

/// Starts a lab, creates the users, and runs `faults` one after the other.
fn run_scenarios(
    test: &'static str,
    faults: Vec<Box<dyn Fault>>,
    logs: &[(&str, &str)],
) -> Result<()> {
    let e = E2e::start(test)?;
    let tag = format!("{}-{test}", e.system.lab().prefix());
    let mut users = Users::create(&e.system, e.vip, &tag, WORKERS)?;
    let mut history = Vec::new();
    for mut fault in faults {
        scenario(&e, &mut users, &mut history, fault.as_mut())
            .map_err(|err| anyhow::anyhow!("{err:#}\n{}", e.logs(logs)))?;
    }
    Ok(())
}

#[test]
fn services_die_and_come_back_and_nothing_accepted_is_lost() -> Result<()> {
    run_scenarios(
        "chaos-services",
        vec![
            Box::new(faults::RedisKilled {
                down: Duration::from_secs(5),
            }),
            Box::new(faults::PostgresKilled {
                down: Duration::from_secs(10),
            }),
            Box::new(faults::LinkDown {
                host: "svc",
                down: Duration::from_secs(5),
            }),
        ],
        &[("svc", "redis"), ("svc", "postgres"), ("be1", "app")],
    )
}

#[test]
fn backends_flap_and_balancers_restart_without_failed_requests() -> Result<()> {
    // The lab's health checks (vagrant/provision/balancer.sh): interval 1 s, fall 2, timeout
    // 0.5 s: a dead backend is out of the table within interval x fall + timeout.
    let window = Duration::from_millis(1000 * 2 + 500);
    run_scenarios(
        "chaos-balancers",
        vec![
            Box::new(faults::Flapping::new("be3", window)),
            Box::new(faults::LbdKilledOnBoth),
        ],
        &[("lb1", "lbd"), ("lb2", "lbd"), ("be3", "app")],
    )
}
