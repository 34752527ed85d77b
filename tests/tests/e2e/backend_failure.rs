//! Scenario 3: a backend is killed under load, then comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::load::{KeepAlive, Load, Report, Spec};
use crate::{E2e, no_failures};

const VICTIM: &str = "be2";

#[test]
fn killed_backend_is_taken_out_without_breaking_the_others_and_comes_back() -> Result<()> {
    let mut e = E2e::start("backend-kill")?;
    let t0 = Instant::now();
    // Long-lived keep-alive connections, spread over the three backends by the balancer.
    let keep = KeepAlive::start(e.client(), e.vip, "bk-ka", 12, Duration::from_millis(200))?;
    let mut sticky: BTreeMap<usize, String> = BTreeMap::new();
    for (i, id) in keep.first_ids.iter().enumerate() {
        sticky.insert(i, e.ledger.wait_for(&e.system, id)?);
    }
    let survivors = sticky.values().filter(|b| *b != VICTIM).count();
    ensure!(
        survivors > 0,
        "no keep-alive connection landed on a surviving backend: {sticky:?}"
    );

    let mut spec = Spec::new("bk");
    spec.workers = 3;
    spec.max_time = Duration::from_secs(120);
    let load = Load::start(e.client(), e.vip, spec)?;
    load.wait_more(300, Duration::from_secs(20))?;

    let killed = Instant::now();
    e.system.signal_daemon(VICTIM, "app", libc::SIGKILL)?;
    e.wait_until(
        &format!("lb1 to report {VICTIM} unhealthy"),
        Duration::from_secs(20),
        || Ok(e.health_of("lb1", VICTIM)?.starts_with("unhealthy")),
    )?;
    // lbd answers its API under the lock it updates the maps with: from now on no new flow
    // goes to the victim.
    let out = Instant::now();
    load.wait_more(500, Duration::from_secs(30))?;
    // The restart truncates the victim's log: record who answered what before it.
    e.ledger.scan(&e.system)?;

    e.system.provision(VICTIM)?;
    let rejoin = e.wait_until(
        &format!("lb1 to report {VICTIM} healthy again"),
        Duration::from_secs(30),
        || Ok(e.health_of("lb1", VICTIM)?.starts_with("healthy")),
    )?;
    let back = Instant::now();
    // Slow start may hold the new weight back for a while: wait until it answers requests.
    // Its log starts empty at the restart, so every id found there now is new.
    let before_restart = e.ledger.ids_of(VICTIM).count();
    let (system, ledger) = (&e.system, &mut e.ledger);
    crate::poll(
        &format!("{VICTIM} to answer 20 new connections again"),
        Duration::from_secs(30),
        || {
            ledger.scan(system)?;
            Ok(ledger.ids_of(VICTIM).count() >= before_restart + 20)
        },
    )?;
    let report = load.finish()?;
    let keep = keep.finish()?;
    // Only the answers after the restart are looked up: the SIGKILL lost the victim's last
    // unwritten lines (up to 100 ms of them), and its restart truncated its log.
    e.ledger.scan_for(
        &e.system,
        report
            .outcomes
            .iter()
            .filter(|o| o.ok() && o.start >= back)
            .map(|o| o.id.as_str()),
    )?;

    let before: Vec<_> = report.outcomes.iter().filter(|o| o.start < out).collect();
    let lost_before = before.iter().filter(|o| !o.ok()).count();
    let after = Report {
        outcomes: report
            .outcomes
            .iter()
            .filter(|o| o.start >= out)
            .cloned()
            .collect(),
    };
    let (by_after, _) = e.per_backend(after.outcomes.iter().filter(|o| o.start >= back));
    e.say(&format!(
        "{VICTIM} SIGKILLed: out of lb1's table after {} ms; {lost_before} of {} requests \
         started before that failed, {} of {} after it; back: healthy {} ms after its restart, \
         new connections after that: {by_after:?}",
        (out - killed).as_millis(),
        before.len(),
        after.failed().len(),
        after.outcomes.len(),
        rejoin.as_millis()
    ));
    no_failures(
        "new connections started after the health-check window",
        &after,
        t0,
    )
    .map_err(|err| anyhow::anyhow!("{err}\n{}", e.logs(&[("lb1", "lbd")])))?;

    // The keep-alive connections to the other backends never noticed.
    let mut kept = BTreeMap::<String, (usize, usize)>::new();
    for o in &keep.outcomes {
        let be = &sticky[&o.lane];
        let entry = kept.entry(be.clone()).or_default();
        if o.ok() {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
        ensure!(
            be == VICTIM || o.ok(),
            "keep-alive connection {} to {be} broke when {VICTIM} died: {:?}",
            o.lane,
            o.result
        );
    }
    e.say(&format!(
        "keep-alive connections (requests ok, failed) per backend: {kept:?}"
    ));
    ensure!(
        kept.iter()
            .filter(|(b, _)| *b != VICTIM)
            .all(|(_, (ok, _))| *ok > 0),
        "keep-alive connections to the surviving backends made no requests: {kept:?}"
    );
    Ok(())
}
