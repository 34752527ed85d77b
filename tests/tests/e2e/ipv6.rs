//! The same service on the IPv6 VIP (issue 17): `lbd` serves one VIP per family, every backend
//! registers with both (its IPv6 address for the IPv6 VIP), VRRP runs one router per family,
//! and the backends answer from the VIP on `lo` (direct server return) over IPv6 too.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::api::user_read_back_from_cache;
use crate::balancer_failure::master_dies_under_load;
use crate::load::{Load, Spec};
use crate::{E2e, no_failures};

/// New connections over IPv6; each backend's count is binomial around n/3 (standard deviation
/// ~18 for 1,500), so a 15% band (±75) is ~4 standard deviations.
const CONNECTIONS: usize = 1500;
const TOLERANCE: f64 = 0.15;

#[test]
fn ipv6_vip_spreads_over_every_backend_and_serves_the_cached_api() -> Result<()> {
    let mut e = E2e::start("ipv6-spread")?;
    let vip6 = e.vip6;
    let t0 = Instant::now();
    let mut spec = Spec::new("v6spread");
    spec.max_requests = CONNECTIONS;
    spec.max_time = Duration::from_secs(120);
    spec.pace = Duration::ZERO;
    let report = Load::start(e.client(), vip6, spec)?.join()?;
    no_failures(&format!("new connections through {vip6}"), &report, t0)?;
    ensure!(
        report.ok() == CONNECTIONS,
        "only {} of {CONNECTIONS} requests through {vip6} were made within the time bound",
        report.ok()
    );
    e.ledger.scan_for(&e.system, report.answered_ids())?;
    let (by, unknown) = e.per_backend(&report.outcomes);
    ensure!(
        unknown == 0,
        "{unknown} answered requests are in no backend's log"
    );
    let fair = CONNECTIONS as f64 / by.len() as f64;
    let shares: Vec<String> = by.iter().map(|(b, n)| format!("{b} {n}")).collect();
    e.say(&format!(
        "{CONNECTIONS} new connections through {vip6}: {}",
        shares.join(", ")
    ));
    for (b, n) in &by {
        let off = (*n as f64 - fair).abs() / fair;
        ensure!(
            off <= TOLERANCE,
            "{b} got {n} of {CONNECTIONS} connections through {vip6}, {:.1}% off its fair share: {}",
            off * 100.0,
            shares.join(", ")
        );
    }
    // Every balancer lists each backend for the IPv6 VIP by its IPv6 address.
    for lb in e.system.balancers() {
        let health = e.system.lbctl_json(&lb, ["health"])?;
        for be in e.system.backends() {
            let addr = e.system.lab().host(&be)?.ipv6().to_string();
            let entry = health
                .as_array()
                .into_iter()
                .flatten()
                .find(|b| b["address"] == addr.as_str());
            ensure!(
                entry.is_some_and(|b| b["health"] == "healthy"),
                "{lb} has no healthy entry for {be} at {addr}: {health}"
            );
        }
    }
    user_read_back_from_cache(&mut e, vip6, "v6api")?;
    Ok(())
}

#[test]
fn ipv6_vip_moves_to_the_backup_when_the_master_dies() -> Result<()> {
    let e = E2e::start("ipv6-balancer-kill")?;
    master_dies_under_load(&e, e.vip6, "v6bal")
}
