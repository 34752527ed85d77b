//! The balancer tier changes under load, in one lab: scale out from two balancers to three,
//! scale in with `lbctl shutdown`, a balancer's restart, a dead balancer (link down, lbd
//! SIGKILLed), and every backend failing then one returning. New connections keep coming in
//! a loop throughout, and 50 keep-alive connections to the IPv4 VIP and 20 to the IPv6 one stay
//! open: none may break.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::load::{KeepAlive, Load, Spec};
use crate::{BgpLab, no_failures, poll};

/// Keep-alive connections held through every change (IPv4 VIP, IPv6 VIP).
const KEEP_ALIVE: usize = 50;
const KEEP_ALIVE_V6: usize = 20;
/// Bound of every convergence wait (sessions, BFD, health checks take seconds).
const CONVERGE: Duration = Duration::from_secs(30);

#[test]
fn balancers_come_and_go_under_load_without_breaking_a_connection() -> Result<()> {
    let lab = BgpLab::start("failures", &["lb3"])?;
    let t0 = Instant::now();
    let hold =
        |vip, tag, n| KeepAlive::start(lab.client(), vip, tag, n, Duration::from_millis(100));
    let keep = hold(lab.vip, "bgp-ka", KEEP_ALIVE)?;
    // The IPv6 path too: ECMP over the IPv6 next hops, and lb1's IPv6 session relearned
    // after its link comes back.
    let keep6 = hold(lab.vip6, "bgp-ka6", KEEP_ALIVE_V6)?;
    let mut spec = Spec::new("bgp-new");
    spec.workers = 2;
    spec.pace = Duration::from_millis(20);
    // A SYN lost with a dead balancer is sent again after 1 s, then 3 s: the retry reaches a
    // live balancer once the route is withdrawn, well inside this bound.
    spec.timeout = Duration::from_secs(8);
    spec.max_time = Duration::from_secs(240);
    let load = Load::start(lab.client(), lab.vip, spec)?;
    load.wait_more(100, Duration::from_secs(20))?;

    // Scale out: lb3 starts and announces.
    let out_at = Instant::now();
    lab.system.provision("lb3")?;
    lab.wait_next_hops(3, CONVERGE)?;
    let digest = lab.same_tables("lb3 announcing after its start")?;
    lab.say(&format!(
        "scale out 2 -> 3: lb3 provisioned and announcing {} ms after its start, with the \
         others' forwarding state (digest {digest})",
        out_at.elapsed().as_millis()
    ));
    load.wait_more(200, Duration::from_secs(20))?;

    // Scale in: lb2 withdraws, drains, stops.
    let in_at = Instant::now();
    lab.system.lbctl("lb2").arg("shutdown").output()?;
    let withdrawn = lab.wait_next_hops(2, Duration::from_secs(10))?;
    lab.system
        .wait_gone("lb2", "lbd", Duration::from_secs(20))
        .map_err(|e| {
            anyhow::anyhow!(
                "lb2's lbd did not stop after its drain: {e}\n{}",
                lab.logs(&[("lb2", "lbd"), ("lb2", "bird")])
            )
        })?;
    lab.say(&format!(
        "scale in: lb2 withdrawn from the router {} ms after `lbctl shutdown`, lbd gone after {} ms",
        withdrawn.as_millis(),
        in_at.elapsed().as_millis()
    ));
    load.wait_more(200, Duration::from_secs(20))?;
    let scaled_at = Instant::now();

    // lb2 comes back (adopting its pinned data plane) and announces again, with the others'
    // tables.
    lab.system.provision("lb2")?;
    lab.wait_next_hops(3, CONVERGE)?;
    lab.same_tables("lb2 announcing after its restart")?;
    load.wait_more(200, Duration::from_secs(20))?;

    // lb1 dies: its link goes down (BFD tells the router), then lbd is killed. Its BIRD,
    // orphaned, stays; the restarted lbd adopts it.
    // The router notices a dead balancer through BFD (100 ms x 3 in the lab) only on
    // sessions whose BFD is up; otherwise the hold timer (3 s) does. Wait for BFD on lb1's
    // sessions, so the gap reported is the one the design promises.
    let mut sessions = serde_json::Value::Null;
    poll("BFD up on both of lb1's sessions", CONVERGE, || {
        sessions = lab.bgp("lb1")?["sessions"].clone();
        Ok(sessions
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["bfd_up"] == true)))
    })
    .map_err(|e| anyhow::anyhow!("{e}: {sessions}\n{}", lab.logs(&[("lb1", "bird")])))?;
    let lb1 = lab.system.lab().host("lb1")?;
    lb1.exec(["ip", "link", "set", lb1.iface(), "down"])?;
    let killed = Instant::now();
    lab.system.signal_daemon("lb1", "lbd", libc::SIGKILL)?;
    let detected = lab.wait_next_hops(2, Duration::from_secs(15))?;
    load.wait_more(200, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(2));
    let report = load.finish()?;
    let keep_report = keep.finish()?;
    let keep6_report = keep6.finish()?;

    let broken = keep_report.broken_lanes();
    let broken6 = keep6_report.broken_lanes();
    let stall = keep_report
        .longest_stall(killed)
        .max(keep6_report.longest_stall(killed));
    let gap = report.longest_gap_after(killed);
    let late_new = report.failed_after(killed);
    lab.say(&format!(
        "lb1 dead (link down + lbd SIGKILL): router withdrew it after {} ms (BFD); longest \
         stall of a keep-alive connection {} ms, longest gap between two answers to new \
         connections {} ms; {} of {KEEP_ALIVE} IPv4 and {} of {KEEP_ALIVE_V6} IPv6 keep-alive \
         connections broken, {} of {} new connections failed",
        detected.as_millis(),
        stall.map_or(0, |d| d.as_millis()),
        gap.map_or(0, |d| d.as_millis()),
        broken.len(),
        broken6.len(),
        report.failed().len(),
        report.outcomes.len()
    ));
    ensure!(
        broken.is_empty(),
        "{} keep-alive connections broke: {}",
        broken.len(),
        keep_report.describe_failures(&broken, t0)
    );
    ensure!(
        broken6.is_empty(),
        "{} IPv6 keep-alive connections broke: {}",
        broken6.len(),
        keep6_report.describe_failures(&broken6, t0)
    );
    no_failures(
        "new connections through scale-out, scale-in, restart and a dead balancer",
        &report,
        t0,
    )?;
    ensure!(
        late_new.is_empty() && report.ok() > 0,
        "requests did not resume after lb1 died"
    );
    ensure!(
        report
            .outcomes
            .iter()
            .any(|o| o.ok() && o.start > scaled_at),
        "no request was answered after the scale-in"
    );

    // lb1 comes back: its link, then lbd, which adopts the BIRD that outlived the killed one.
    lb1.exec(["ip", "link", "set", lb1.iface(), "up"])?;
    lab.system.provision("lb1")?;
    // The orphaned BIRD announces lb1's table again as soon as the link is up; what counts is
    // the new lbd: it answers, adopted that BIRD, and announces both addresses itself.
    let mut last = serde_json::Value::Null;
    poll(
        "lb1's new lbd to announce both VIP addresses",
        CONVERGE,
        || {
            last = lab.bgp("lb1").unwrap_or_default();
            Ok(last["prefixes"]
                .as_array()
                .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["announced"] == true)))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}: {last}\n{}", lab.logs(&[("lb1", "lbd")])))?;
    lab.wait_next_hops(3, CONVERGE)?;
    let speaker = &last["speaker"];
    ensure!(
        speaker["adopted"] == true,
        "lb1's new lbd should have adopted the BIRD its killed predecessor started: {speaker}"
    );

    all_backends_fail_then_one_returns(&lab)
}

/// Every backend's app dies: every balancer withdraws both VIPs (no backend can take a new
/// flow); be1 comes back: the VIPs are announced again by all three.
fn all_backends_fail_then_one_returns(lab: &BgpLab) -> Result<()> {
    let (v4, v6) = (lab.vip.ip(), lab.vip6.ip());
    for be in lab.system.backends() {
        lab.system.signal_daemon(&be, "app", libc::SIGKILL)?;
    }
    let gone = poll("the router to lose both VIP routes", CONVERGE, || {
        Ok(lab.next_hops(v4)?.is_empty() && lab.next_hops(v6)?.is_empty())
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", lab.logs(&[("lb1", "lbd"), ("router", "bird")])))?;
    for lb in lab.system.balancers() {
        let bgp = lab.bgp(&lb)?;
        let prefixes = bgp["prefixes"].as_array().context("prefixes")?;
        ensure!(
            prefixes.iter().all(|p| p["announced"] == false
                && p["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("no backend"))),
            "{lb}: {prefixes:?}"
        );
    }
    let back_at = Instant::now();
    lab.system.provision("be1")?;
    lab.wait_next_hops(3, CONVERGE)?;
    let vip = lab.vip;
    let answered = lab
        .client()
        .in_netns(move || {
            crate::http::once(
                vip,
                &crate::http::Request::get("/ping", "bgp-back"),
                Duration::from_secs(5),
            )
            .map(|r| r.status)
        })?
        .context("a request after be1 returned")?;
    ensure!(answered == 200, "after be1 returned: status {answered}");
    lab.say(&format!(
        "all backends failed: every balancer withdrew both VIPs within {} ms; be1 back: \
         announced again by all three {} ms after its start",
        gone.as_millis(),
        back_at.elapsed().as_millis()
    ));
    Ok(())
}
