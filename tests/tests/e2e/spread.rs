//! Scenario 1: new connections through the VIP reach every backend in equal shares.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::load::{Load, Spec};
use crate::{E2e, no_failures};

/// New connections sent; with equal weights each backend's count is binomial around n/3
/// (standard deviation ~26 for 3,000), so a 10% band (±100) is ~4 standard deviations: a
/// failure means a skewed table, not bad luck.
const CONNECTIONS: usize = 3000;
const TOLERANCE: f64 = 0.10;

#[test]
fn vip_spreads_new_connections_evenly_over_all_backends() -> Result<()> {
    let mut e = E2e::start("spread")?;
    let t0 = Instant::now();
    let mut spec = Spec::new("spread");
    spec.max_requests = CONNECTIONS;
    spec.max_time = Duration::from_secs(120);
    spec.pace = Duration::ZERO;
    let report = Load::start(e.client(), e.vip, spec)?.join()?;
    let took = t0.elapsed();
    no_failures("new connections through the VIP", &report, t0)?;
    ensure!(
        report.ok() == CONNECTIONS,
        "only {} of {CONNECTIONS} requests were made within the time bound",
        report.ok()
    );
    e.ledger.scan_for(&e.system, report.answered_ids())?;
    let (by, unknown) = e.per_backend(&report.outcomes);
    ensure!(
        unknown == 0,
        "{unknown} answered requests are in no backend's log"
    );
    let fair = CONNECTIONS as f64 / by.len() as f64;
    let shares: Vec<String> = by
        .iter()
        .map(|(b, n)| format!("{b} {n} ({:.1}%)", *n as f64 * 100.0 / CONNECTIONS as f64))
        .collect();
    e.say(&format!(
        "{CONNECTIONS} new connections in {:.1} s ({:.0}/s), equal weights: {}",
        took.as_secs_f64(),
        CONNECTIONS as f64 / took.as_secs_f64(),
        shares.join(", ")
    ));
    for (b, n) in &by {
        let off = (*n as f64 - fair).abs() / fair;
        ensure!(
            off <= TOLERANCE,
            "{b} got {n} of {CONNECTIONS} connections, {:.1}% off its fair share {fair:.0} (allowed {:.0}%): {}",
            off * 100.0,
            TOLERANCE * 100.0,
            shares.join(", ")
        );
    }
    Ok(())
}
