//! Scenario 6: a backend drains, first by the operator (`lbctl backend drain` on both
//! balancers), then by itself (the app's SIGTERM shutdown: drain, not-ready, finish in-flight
//! requests, deregister).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::load::{KeepAlive, Load, Spec};
use crate::served::strip_ansi;
use crate::{E2e, no_failures, poll};

const DRAINED: &str = "be3";
const STOPPED: &str = "be1";

/// New-connection requests of the load (tag `dr`) answered by `be`.
fn load_ids_on(e: &E2e, be: &str) -> usize {
    e.ledger
        .ids_of(be)
        .filter(|id| id.starts_with("dr-") && !id.starts_with("dr-ka"))
        .count()
}

#[test]
fn draining_backend_finishes_its_connections_and_takes_no_new_ones() -> Result<()> {
    let mut e = E2e::start("drain")?;
    let t0 = Instant::now();
    let drained_addr = e.addr_of(DRAINED)?.to_string();
    // 24 connections: the chance that none lands on the drained backend is (2/3)^24 < 1e-4.
    let keep = KeepAlive::start(e.client(), e.vip, "dr-ka", 24, Duration::from_millis(100))?;
    let mut sticky: BTreeMap<usize, String> = BTreeMap::new();
    for (i, id) in keep.first_ids.iter().enumerate() {
        sticky.insert(i, e.ledger.wait_for(&e.system, id)?);
    }
    let on_drained = sticky.values().filter(|b| *b == DRAINED).count();
    ensure!(
        on_drained > 0,
        "no keep-alive connection landed on {DRAINED}: {sticky:?}"
    );

    let mut spec = Spec::new("dr");
    spec.workers = 3;
    spec.max_time = Duration::from_secs(120);
    let load = Load::start(e.client(), e.vip, spec)?;
    load.wait_more(300, Duration::from_secs(20))?;

    // (a) The operator drains the backend on both balancers.
    for lb in e.system.balancers() {
        e.lbctl(&lb, &["backend", "drain", &e.vip_name, &drained_addr])
            .with_context(|| format!("lbctl backend drain on {lb}"))?;
    }
    let drained = Instant::now();
    for lb in e.system.balancers() {
        let h = e.health_of(&lb, DRAINED)?;
        ensure!(
            h == "healthy/draining",
            "{DRAINED} on {lb} after drain: {h}"
        );
    }
    load.wait_more(600, Duration::from_secs(30))?;
    // The app re-registers every 10 s. That refresh must not undo the operator's drain: the
    // app learns of the drain from lbd's answer (and logs it once), and lbd keeps it.
    e.wait_until(
        "the drained backend's app to re-register and report the operator's drain",
        Duration::from_secs(40),
        || {
            Ok(e.system
                .log_tail(DRAINED, "app", 100_000)
                .contains("drained by an operator"))
        },
    )
    .map_err(|err| anyhow::anyhow!("{err}\n{}", e.logs(&[(DRAINED, "app")])))?;
    for lb in e.system.balancers() {
        let h = e.health_of(&lb, DRAINED)?;
        ensure!(
            h == "healthy/draining",
            "{DRAINED} on {lb} after its app re-registered: {h}"
        );
    }
    let keep = keep.finish()?;

    // The drained backend's connections go on; it gets no new ones.
    e.ledger.scan_for(&e.system, keep.answered_ids())?;
    no_failures("keep-alive connections while draining", &keep, t0)?;
    let mut kept_on_drained = 0;
    for o in keep.outcomes.iter().filter(|o| o.start >= drained) {
        if sticky[&o.lane] == DRAINED {
            let by = e.ledger.backend(&o.id);
            ensure!(
                by == Some(DRAINED),
                "request {} on a keep-alive connection to {DRAINED} was answered by {by:?}",
                o.id
            );
            kept_on_drained += 1;
        }
    }
    ensure!(
        kept_on_drained > 0,
        "no request went over the drained backend's keep-alive connections after the drain"
    );

    // Undrained: it takes new connections again.
    let undrained = Instant::now();
    for lb in e.system.balancers() {
        e.lbctl(&lb, &["backend", "undrain", &e.vip_name, &drained_addr])
            .with_context(|| format!("lbctl backend undrain on {lb}"))?;
    }
    let new_before_undrain = load_ids_on(&e, DRAINED);
    {
        let (system, ledger) = (&e.system, &mut e.ledger);
        poll(
            &format!("{DRAINED} to take new connections after undrain"),
            Duration::from_secs(30),
            || {
                ledger.scan(system)?;
                Ok(ledger
                    .ids_of(DRAINED)
                    .filter(|id| id.starts_with("dr-") && !id.starts_with("dr-ka"))
                    .count()
                    >= new_before_undrain + 20)
            },
        )?;
    }

    // (b) The app's own shutdown on another backend, under the same load.
    let terminated = Instant::now();
    e.system.signal_daemon(STOPPED, "app", libc::SIGTERM)?;
    e.system
        .wait_gone(STOPPED, "app", Duration::from_secs(30))
        .with_context(|| format!("{STOPPED}'s app did not exit after SIGTERM"))?;
    let exited = terminated.elapsed();
    load.wait_more(300, Duration::from_secs(30))?;
    let report = load.finish()?;
    // STOPPED wrote its last lines at its exit; the others within 100 ms.
    e.ledger.scan_for(&e.system, report.answered_ids())?;

    // New connections started while drained (between the drain and the undrain): none may
    // have reached the drained backend.
    let leaked: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.start >= drained && o.start < undrained)
        .filter(|o| e.ledger.backend(&o.id) == Some(DRAINED))
        .map(|o| o.id.as_str())
        .collect();
    let while_drained = report
        .outcomes
        .iter()
        .filter(|o| o.start >= drained && o.start < undrained)
        .count();
    let (by, _) = e.per_backend(
        report
            .outcomes
            .iter()
            .filter(|o| o.start >= drained && o.start < undrained),
    );
    e.say(&format!(
        "{DRAINED} drained: {kept_on_drained} requests on its {on_drained} keep-alive \
         connections still answered by it; {while_drained} new connections while drained per \
         backend: {by:?}; {STOPPED} SIGTERM: exited after {} ms; {} requests, {} failed",
        exited.as_millis(),
        report.outcomes.len(),
        report.failed().len()
    ));
    ensure!(
        leaked.is_empty(),
        "{} new connections reached {DRAINED} while it was drained: {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
    no_failures(
        "new connections while draining and during the app's shutdown",
        &report,
        t0,
    )
    .map_err(|err| anyhow::anyhow!("{err}\n{}", e.logs(&[(STOPPED, "app"), ("lb1", "lbd")])))?;
    let log = strip_ansi(&std::fs::read_to_string(
        e.system.host_dir(STOPPED).join("app.log"),
    )?);
    ensure!(
        log.contains("shutdown complete") && log.contains("http_finished: true"),
        "{STOPPED}'s app did not finish its in-flight requests and shut down cleanly:\n{}",
        e.system.log_tail(STOPPED, "app", 20)
    );
    for lb in e.system.balancers() {
        let h = e.health_of(&lb, STOPPED)?;
        ensure!(
            h == "absent",
            "{STOPPED} is still a backend on {lb} after its shutdown: {h}"
        );
    }
    Ok(())
}
