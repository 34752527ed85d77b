//! The router's routes have one next hop per balancer (IPv4 and IPv6); every balancer holds
//! the same forwarding state whatever order it learned the backends in; 3,000 new connections
//! spread over the three balancers (their own per-VIP counters) and over all backends (the
//! apps' logs); and ICMP "fragmentation needed" about a flow reaches its backend through a
//! balancer that never saw the flow.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::load::{Load, Spec};
use crate::served::Ledger;
use crate::{BgpLab, no_failures};

/// With three balancers (and three backends) each share is binomial around 1,000 (standard
/// deviation ~26). The band is wider than that: on a loaded shared machine a BFD session
/// (100 ms x 3) may flap for a moment and the router then sends that balancer's share to the
/// others (a run saw 1025 / 1115 / 867). 20% still fails a balancer or backend left out or
/// favoured.
const CONNECTIONS: usize = 3000;
const TOLERANCE: f64 = 0.20;

#[test]
fn three_balancers_announce_agree_and_share_the_load() -> Result<()> {
    let lab = BgpLab::start("spread", &[])?;
    let balancers = lab.system.balancers();

    // One next hop per balancer, in both families, each the balancer's own address.
    let topo = lab.system.lab().topology();
    for vip in [lab.vip.ip(), lab.vip6.ip()] {
        let hops = lab.next_hops(vip)?;
        let mut want: Vec<IpAddr> = balancers
            .iter()
            .map(|b| {
                let n = topo.node(b).expect("balancer in the topology");
                if vip.is_ipv4() {
                    IpAddr::V4(n.ipv4())
                } else {
                    IpAddr::V6(n.ipv6())
                }
            })
            .collect();
        want.sort();
        ensure!(
            hops == want,
            "router's next hops for {vip}: {hops:?}, want {want:?}"
        );
        lab.say(&format!("router: {vip} via {hops:?}"));
    }
    // Each lbd reports its two sessions up and the two addresses announced.
    for lb in &balancers {
        let bgp = lab.bgp(lb)?;
        let sessions = bgp["sessions"].as_array().context("sessions")?;
        ensure!(
            sessions.len() == 2 && sessions.iter().all(|s| s["state"] == "established"),
            "{lb}: sessions {sessions:?}"
        );
        let prefixes = bgp["prefixes"].as_array().context("prefixes")?;
        ensure!(
            prefixes.len() == 2 && prefixes.iter().all(|p| p["announced"] == true),
            "{lb}: prefixes {prefixes:?}"
        );
    }

    same_tables_whatever_the_order(&lab)?;
    spread(&lab)?;
    crate::icmp::frag_needed_reaches_the_flows_backend(&lab)?;
    Ok(())
}

/// Each balancer forgets the IPv4 VIP's backends and gets them back in another order, through
/// the API; then the pinned maps of all three must hold the same forwarding state.
fn same_tables_whatever_the_order(lab: &BgpLab) -> Result<()> {
    let backends = lab.system.backends();
    let addrs: Vec<String> = backends
        .iter()
        .map(|b| Ok(lab.system.lab().host(b)?.ipv4().to_string()))
        .collect::<Result<_>>()?;
    let orders: [[usize; 3]; 3] = [[0, 1, 2], [2, 1, 0], [1, 2, 0]];
    for (lb, order) in lab.system.balancers().iter().zip(orders) {
        for a in &addrs {
            let mut c = lab.system.lbctl(lb);
            c.args(["backend", "del", &lab.vip_name, a]);
            tests::exec::run(&mut c)?;
        }
        for i in order {
            let mut c = lab.system.lbctl(lb);
            c.args(["backend", "add", &lab.vip_name, &addrs[i]]);
            tests::exec::run(&mut c)?;
        }
    }
    for lb in lab.system.balancers() {
        lab.system
            .wait_healthy(&lb, backends.len() * 2, Duration::from_secs(30))?;
    }
    lab.wait_next_hops(3, Duration::from_secs(30))?;
    let mut digests = BTreeMap::new();
    for lb in lab.system.balancers() {
        let state = lab.forwarding(&lb)?;
        let slots = state["backends"].as_array().map(Vec::len).unwrap_or(0);
        ensure!(
            slots == 2 * backends.len(),
            "{lb}: {slots} backend slots in the pinned maps, want {} (two VIPs)",
            2 * backends.len()
        );
        digests.insert(lb, state);
    }
    let first = digests.values().next().context("no balancer")?.clone();
    for (lb, state) in &digests {
        ensure!(
            *state == first,
            "{lb}'s forwarding state differs from the first balancer's:\n{state:#}\nvs\n{first:#}"
        );
    }
    lab.say(&format!(
        "backends added in three orders: the pinned maps of {} balancers hold the same forwarding state (digest {})",
        digests.len(),
        first["digest"]
    ));
    Ok(())
}

fn spread(lab: &BgpLab) -> Result<()> {
    let balancers = lab.system.balancers();
    let before: Vec<u64> = balancers
        .iter()
        .map(|b| lab.new_conns(b))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    let mut spec = Spec::new("bgp-spread");
    spec.max_requests = CONNECTIONS;
    spec.max_time = Duration::from_secs(120);
    spec.pace = Duration::ZERO;
    let report = Load::start(lab.client(), lab.vip, spec)?.join()?;
    no_failures("new connections through the VIP", &report, t0)?;
    ensure!(
        report.ok() == CONNECTIONS,
        "only {} of {CONNECTIONS} requests were made within the time bound",
        report.ok()
    );
    let fair = CONNECTIONS as f64 / 3.0;
    let mut shares = Vec::new();
    let mut per_lb = Vec::new();
    for (lb, was) in balancers.iter().zip(before) {
        let n = lab.new_conns(lb)? - was;
        shares.push(format!("{lb} {n}"));
        per_lb.push((lb.clone(), n));
    }
    let mut ledger = Ledger::default();
    ledger.scan_for(&lab.system, report.answered_ids())?;
    let mut by: BTreeMap<String, usize> =
        lab.system.backends().into_iter().map(|b| (b, 0)).collect();
    for o in report.outcomes.iter().filter(|o| o.ok()) {
        let be = ledger
            .backend(&o.id)
            .with_context(|| format!("request {} is in no backend's log", o.id))?;
        *by.entry(be.to_string()).or_default() += 1;
    }
    lab.say(&format!(
        "{CONNECTIONS} new connections in {:.1} s: balancers (their VIP counters) {}; backends {by:?}",
        t0.elapsed().as_secs_f64(),
        shares.join(", ")
    ));
    for (lb, n) in per_lb {
        let off = (n as f64 - fair).abs() / fair;
        ensure!(
            off <= TOLERANCE,
            "{lb} counted {n} new connections, {:.1}% off its fair share {fair:.0}: {}\n{}",
            off * 100.0,
            shares.join(", "),
            lab.logs(&[("router", "bird")])
        );
    }
    for (be, n) in &by {
        let off = (*n as f64 - fair).abs() / fair;
        ensure!(
            off <= TOLERANCE,
            "{be} answered {n} requests, {:.1}% off its fair share: {by:?}",
            off * 100.0
        );
    }
    Ok(())
}
