//! Scenario 4: the master balancer dies under load; the backup takes the VIP over.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::load::{Load, Spec};
use crate::{E2e, poll};

/// Generous liveness bound: VRRP with 1 s adverts takes over after ~3.6 s.
const RESUME_BOUND: Duration = Duration::from_secs(15);

#[test]
fn backup_balancer_takes_over_when_the_master_dies() -> Result<()> {
    let e = E2e::start("balancer-kill")?;
    master_dies_under_load(&e, e.vip, "bal")
}

/// lb1 (the VRRP master) dies while the client sends new connections to `vip` (request ids
/// start with `tag`); lb2 must take the VIP and answer everything asked after it resumed.
pub(crate) fn master_dies_under_load(e: &E2e, vip: SocketAddr, tag: &str) -> Result<()> {
    e.wait_until("lb2 to be the VRRP backup", Duration::from_secs(30), || {
        Ok(e.system.vrrp_states("lb2")?.iter().all(|s| s == "backup"))
    })?;
    let t0 = Instant::now();
    let mut spec = Spec::new(tag);
    spec.workers = 2;
    spec.pace = Duration::from_millis(10);
    // New connections that cannot get through during the takeover give up after this; the
    // gap is measured between successful answers, so it does not depend on this bound.
    spec.timeout = Duration::from_secs(2);
    spec.max_time = Duration::from_secs(90);
    let load = Load::start(e.client(), vip, spec)?;
    load.wait_more(200, Duration::from_secs(20))?;

    // The node dies: its link goes down first (no goodbye advert gets out, and its pinned XDP
    // program, which would outlive a killed lbd, is cut off with it), then lbd is killed.
    let lb1 = e.system.lab().host("lb1")?;
    lb1.exec(["ip", "link", "set", lb1.iface(), "down"])
        .context("taking lb1's link down")?;
    // From here on nothing reaches lb1 (a request started while `ip` ran may still have).
    let killed = Instant::now();
    e.system.signal_daemon("lb1", "lbd", libc::SIGKILL)?;
    let takeover = e.wait_until("lb2 to become VRRP master", RESUME_BOUND, || {
        Ok(e.system.is_master("lb2"))
    })?;
    let ok_at_master = load.ok();
    let resumed = poll(
        "requests to be answered through lb2",
        RESUME_BOUND.saturating_sub(killed.elapsed()),
        || Ok(load.ok() >= ok_at_master + 100),
    )
    .map_err(|err| {
        anyhow::anyhow!(
            "service did not resume within {RESUME_BOUND:?} of lb1's death: {err}\n{}",
            e.logs(&[("lb2", "lbd")])
        )
    })?;
    let report = load.finish()?;

    let gap = report
        .longest_gap_after(killed)
        .context("no request was answered after lb1 died")?;
    let first_ok = report
        .outcomes
        .iter()
        .filter(|o| o.ok() && o.start > killed)
        .map(|o| o.end)
        .min()
        .context("no request was answered after lb1 died")?;
    let failed = report.failed();
    e.say(&format!(
        "{vip}: lb1 died (link down + SIGKILL lbd): lb2 master after {} ms, first answer to a request \
         sent after the death {} ms after it, longest gap between two answers {} ms; {} of {} requests failed \
         (timed out during the takeover); 100 answers after {} ms more",
        takeover.as_millis(),
        (first_ok - killed).as_millis(),
        gap.as_millis(),
        failed.len(),
        report.outcomes.len(),
        resumed.as_millis()
    ));
    ensure!(
        first_ok - killed <= RESUME_BOUND,
        "requests resumed only {} ms after lb1 died",
        (first_ok - killed).as_millis()
    );
    ensure!(
        e.system.is_master("lb2"),
        "lb2 is no longer master: {:?}",
        e.system.vrrp_states("lb2")
    );
    // Once lb2 answers, everything it is asked gets an answer.
    let late = report.failed_after(first_ok);
    ensure!(
        late.is_empty(),
        "{} requests started after service resumed through lb2 failed: {}",
        late.len(),
        report.describe_failures(&late, t0)
    );
    Ok(())
}
