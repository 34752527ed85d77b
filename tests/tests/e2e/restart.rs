//! Scenario 5: `lbd` is restarted on the master balancer under load.
//!
//! The procedure is the one an operator runs (and what `systemctl restart lbd` does):
//! stop the daemon cleanly (`lbctl shutdown`, or SIGTERM), then start it again with the same
//! configuration. What keeps traffic flowing:
//! - the XDP program and its maps are pinned and attached through a pinned link, so they keep
//!   forwarding while no `lbd` runs; the new `lbd` adopts them (checked against its state file)
//!   instead of loading empty ones;
//! - VRRP: the stopping master sends a priority-0 advert and releases the VIP, so lb2 takes it
//!   over after its skew time (~0.65 s) instead of the full master-down interval; lb1's
//!   program still forwards what reaches it meanwhile. The restarted lb1 comes back as backup
//!   and, having the higher priority with preemption, takes the VIP back;
//! - both balancers hold the same backends, and Maglev gives both the same table, so a flow
//!   that moves from one balancer to the other keeps its backend.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::load::{KeepAlive, Load, Spec};
use crate::{E2e, no_failures};

#[test]
fn lbd_restart_on_the_master_loses_no_request() -> Result<()> {
    let e = E2e::start("lbd-restart")?;
    let t0 = Instant::now();
    let keep = KeepAlive::start(e.client(), e.vip, "rs-ka", 9, Duration::from_millis(100))?;
    let mut spec = Spec::new("rs");
    spec.workers = 3;
    spec.max_time = Duration::from_secs(120);
    let load = Load::start(e.client(), e.vip, spec)?;
    load.wait_more(300, Duration::from_secs(20))?;

    let stopped = Instant::now();
    e.lbctl("lb1", &["shutdown"])
        .context("lbctl shutdown on lb1")?;
    e.system.wait_gone("lb1", "lbd", Duration::from_secs(20))?;
    let down = Instant::now();
    let lb2_master = e.wait_until("lb2 to take the VIP", Duration::from_secs(15), || {
        Ok(e.system.is_master("lb2"))
    });
    load.wait_more(200, Duration::from_secs(20))?;
    e.system.provision("lb1")?;
    let started = Instant::now();
    let status = e.system.lbctl_json("lb1", ["status"])?;
    e.system
        .wait_healthy("lb1", e.system.vip_backends(), Duration::from_secs(30))?;
    let master_again = e.wait_until("lb1 to take the VIP back", Duration::from_secs(30), || {
        Ok(e.system.is_master("lb1"))
    })?;
    load.wait_more(500, Duration::from_secs(30))?;
    let report = load.finish()?;
    let keep = keep.finish()?;

    e.say(&format!(
        "lbd on lb1 stopped ({} ms to exit), lb2 master: {}, lbd started again after {} ms \
         without a daemon, lb1 master again {} ms later; {} new-connection requests ({} failed), \
         {} keep-alive requests on 9 connections ({} failed)",
        (down - stopped).as_millis(),
        match &lb2_master {
            Ok(d) => format!("after {} ms", d.as_millis()),
            Err(err) => format!("never ({err})"),
        },
        (started - down).as_millis(),
        master_again.as_millis(),
        report.outcomes.len(),
        report.failed().len(),
        keep.outcomes.len(),
        keep.failed().len(),
    ));
    let logs = || e.logs(&[("lb1", "lbd"), ("lb2", "lbd")]);
    no_failures("new connections across the lbd restart", &report, t0)
        .map_err(|err| anyhow::anyhow!("{err}\n{}", logs()))?;
    no_failures("keep-alive connections across the lbd restart", &keep, t0)
        .map_err(|err| anyhow::anyhow!("{err}\n{}", logs()))?;
    let adopted = status["interfaces"]
        .as_array()
        .is_some_and(|i| !i.is_empty() && i.iter().all(|i| i["adopted"] == true));
    ensure!(
        adopted,
        "the restarted lbd did not adopt the pinned XDP link: status {status}\n{}",
        logs()
    );
    lb2_master.context("lb2 never took the VIP while lbd on lb1 was down")?;
    Ok(())
}
