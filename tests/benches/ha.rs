//! `cargo xtask bench ha`: what a client sees when an active balancer dies, with the
//! balancers active-active over BGP/ECMP beside the VRRP pair, in the same topology (the BGP
//! lab of `vagrant/topology.json`: the client behind a BIRD router), with the same clients.
//!
//! - BGP: lb1, lb2 and lb3 announce the VIP; the router spreads flows over them (BFD 100 ms x 3,
//!   hold 3 s). lb1 dies.
//! - VRRP: lb1 (master) and lb2 (backup) run `[vrrp]` (1 s adverts); the router reaches the VIP
//!   on its segment by ARP. lb1, the master, dies.
//!
//! A trial: 50 keep-alive connections send a request every 100 ms and two workers open a new
//! connection every 20 ms; lb1's link goes down, then its lbd is SIGKILLed. Measured: the
//! service gap (the longest time without an answer to a new connection), the longest stall of
//! a keep-alive connection, keep-alive connections broken, new connections failed. Then lb1
//! comes back and the next trial waits until the balancers are as before.

use tests::http;
#[path = "../tests/e2e/load.rs"]
#[allow(dead_code)]
mod load;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use load::{KeepAlive, Load, Spec};
use tests::stats::median;
use tests::{HaMode, System, SystemOptions};

const KEEP_ALIVE: usize = 50;
const BOUND: Duration = Duration::from_secs(40);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Bgp,
    Vrrp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Bgp => "BGP/ECMP (3 active, BFD 300 ms)",
            Mode::Vrrp => "VRRP (master + backup, 1 s adverts)",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Mode::Bgp => "bgp",
            Mode::Vrrp => "vrrp",
        }
    }
}

#[derive(Default, Clone)]
struct Trial {
    gap_ms: f64,
    stall_ms: f64,
    broken: usize,
    failed: usize,
    requests: usize,
}

fn poll(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() > BOUND {
            bail!("waited {BOUND:?} for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn next_hops(system: &System, vip: &str) -> usize {
    let Ok(router) = system.lab().host("router") else {
        return 0;
    };
    router
        .exec(["ip", "-j", "route", "show", vip])
        .ok()
        .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
        .and_then(|v| v.as_array().cloned())
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    r["nexthops"]
                        .as_array()
                        .map_or(usize::from(r["gateway"].is_string()), Vec::len)
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The balancers are as at the start: three next hops (BGP) or lb1 master (VRRP).
fn settled(system: &System, mode: Mode, vip: &str) -> bool {
    match mode {
        Mode::Bgp => next_hops(system, vip) == 3,
        Mode::Vrrp => system.is_master("lb1") && !system.is_master("lb2"),
    }
}

fn trial(system: &System, mode: Mode, vip: std::net::SocketAddr) -> Result<Trial> {
    let client = system.lab().host("client")?;
    let keep = KeepAlive::start(client, vip, "ha-ka", KEEP_ALIVE, Duration::from_millis(100))?;
    let mut spec = Spec::new("ha-new");
    spec.workers = 2;
    spec.pace = Duration::from_millis(20);
    spec.timeout = Duration::from_secs(8);
    spec.max_time = Duration::from_secs(60);
    let load = Load::start(client, vip, spec)?;
    load.wait_more(100, Duration::from_secs(20))?;
    let lb1 = system.lab().host("lb1")?;
    lb1.exec(["ip", "link", "set", "eth0", "down"])?;
    let killed = Instant::now();
    system.signal_daemon("lb1", "lbd", libc::SIGKILL)?;
    // Until service has resumed for a while on the others.
    std::thread::sleep(Duration::from_secs(8));
    let report = load.finish()?;
    let keep = keep.finish()?;
    let broken = keep.broken_lanes();
    let t = Trial {
        gap_ms: report
            .longest_gap_after(killed)
            .context("no answer after lb1 died")?
            .as_secs_f64()
            * 1e3,
        stall_ms: keep.longest_stall(killed).unwrap_or_default().as_secs_f64() * 1e3,
        broken: broken.len(),
        failed: report.failed().len(),
        requests: report.outcomes.len() + keep.outcomes.len(),
    };
    // lb1 comes back.
    lb1.exec(["ip", "link", "set", "eth0", "up"])?;
    system.provision("lb1")?;
    poll("the balancers to settle after lb1's return", || {
        settled(system, mode, &vip.ip().to_string())
    })?;
    Ok(t)
}

fn run(mode: Mode, trials: usize) -> Result<Vec<Trial>> {
    let mut opts = SystemOptions::from_build();
    if mode == Mode::Vrrp {
        // Today's pair, in the same topology: no lb3, `[vrrp]` instead of `[bgp]`.
        opts.held_back = vec!["lb3".into()];
        opts.env = vec![("LAB_HA".into(), "vrrp".into())];
    }
    let topo = System::topology_for(&opts, HaMode::Bgp)?;
    let vip = std::net::SocketAddr::new(topo.vip().ipv4().into(), topo.vip().port());
    eprintln!("  {}: starting the lab", mode.name());
    let system = System::start(&topo, opts)?;
    for lb in system.balancers() {
        if system.daemon_pid(&lb, "lbd").is_some() {
            system.wait_healthy(&lb, system.backends().len(), BOUND)?;
        }
    }
    poll("the balancers to settle", || {
        settled(&system, mode, &vip.ip().to_string())
    })?;
    let mut out = Vec::new();
    for i in 0..trials {
        let t = trial(&system, mode, vip)?;
        eprintln!(
            "  {} trial {}/{trials}: gap {:.0} ms, longest stall {:.0} ms, {} broken, {} failed",
            mode.key(),
            i + 1,
            t.gap_ms,
            t.stall_ms,
            t.broken,
            t.failed
        );
        out.push(t);
    }
    system.teardown()?;
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "ha benchmark (root, bird2 installed): client-visible gap and broken connections when \
             an active balancer dies, BGP/ECMP beside VRRP in the same topology\n  \
             --json       one JSON object instead of the table\n  \
             --trials N   trials per mode (default 3)"
        );
        return Ok(());
    }
    let mut trials = 3;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--trials" => {
                trials = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n >= 1)
                    .context("--trials N: a whole number of at least 1")?
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    tests::exec::require_root()?;
    let mut rows = Vec::new();
    for mode in [Mode::Bgp, Mode::Vrrp] {
        rows.push((mode, run(mode, trials)?));
    }
    let summary = |ts: &[Trial]| {
        (
            median(ts.iter().map(|t| t.gap_ms).collect()),
            median(ts.iter().map(|t| t.stall_ms).collect()),
            ts.iter().map(|t| t.broken).sum::<usize>(),
            ts.iter().map(|t| t.failed).sum::<usize>(),
            ts.iter().map(|t| t.requests).sum::<usize>(),
        )
    };
    let vrrp_gap = rows
        .iter()
        .find(|(m, _)| *m == Mode::Vrrp)
        .map(|(_, t)| summary(t).0)
        .unwrap_or(f64::NAN);
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(m, ts)| {
                let (gap, stall, broken, failed, requests) = summary(ts);
                serde_json::json!({
                    "mode": m.key(),
                    "gap_ms_median": gap,
                    "keepalive_stall_ms_median": stall,
                    "gap_to_vrrp_ratio": gap / vrrp_gap,
                    "broken_keepalive_connections": broken,
                    "failed_new_connections": failed,
                    "requests": requests,
                    "gap_ms_samples": ts.iter().map(|t| t.gap_ms).collect::<Vec<_>>(),
                    "stall_ms_samples": ts.iter().map(|t| t.stall_ms).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "ha", "trials": trials, "keep_alive_connections": KEEP_ALIVE,
                "modes": out,
            }))?
        );
        return Ok(());
    }
    println!(
        "An active balancer dies (link down + lbd SIGKILL): median of {trials} trials, \
         {KEEP_ALIVE} keep-alive connections + new connections every 20 ms"
    );
    println!(
        "{:<38} {:>8} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "mode", "gap ms", "stall ms", "gap/VRRP", "broken", "failed", "requests"
    );
    for (m, ts) in &rows {
        let (gap, stall, broken, failed, requests) = summary(ts);
        println!(
            "{:<38} {gap:>8.0} {stall:>10.0} {:>10.2} {broken:>8} {failed:>8} {requests:>9}",
            m.name(),
            gap / vrrp_gap
        );
    }
    Ok(())
}
