//! `cargo xtask bench failover`: the gap in service a client sees when the VRRP master dies,
//! `lbd` beside keepalived in the same namespace lab (root, keepalived from apt).
//!
//! Topology (the VRRP test lab): `client` (.10), `lb1` (.2, priority 100, preempt) and `lb2`
//! (.3, priority 90) each running `lbd` with its XDP data plane on eth0, and `be1` (.11) which
//! holds the VIP on `lo` and answers HTTP directly to the client (direct server return).
//!
//! - `lbd`: both nodes run `lbd` with a `[vrrp]` section; it owns the VIP and forwards.
//! - keepalived (baseline): both nodes run `lbd` WITHOUT `[vrrp]` (data plane only, the same
//!   forwarding path) and keepalived (VRRPv3, same VRID, priorities, interval and VIP) owns the
//!   VIP. The only difference between the two columns is who runs VRRP.
//!
//! A trial: the client sends a new HTTP request on a new TCP connection to the VIP every ~10 ms
//! (50 ms connect timeout); at a random point of the advertisement cycle (the same points for
//! both daemons, so their trials are paired) the master node then "dies": its eth0 goes down
//! (a killed `lbd` alone would leave the pinned XDP program forwarding and the VIP on the
//! interface), then its VRRP daemon is killed. The gap is the longest interval between two
//! successful requests across the failure. Then the node comes back (link up, daemon
//! restarted) and the bench waits until lb1 is master again before the next trial.
//!
//! Unknown-unicast flooding is turned off on the balancers' bridge ports: otherwise, once lb1's
//! port is down, the bridge floods frames still addressed to lb1's MAC to lb2, whose XDP
//! program forwards VIP traffic whatever the destination MAC, and the gap would measure the
//! bridge rather than VRRP. With flooding off the client only reaches lb2 after the new master's
//! gratuitous ARP, as on a switch that still has lb1's MAC in its table.

#[allow(dead_code)]
#[path = "../../lbd/tests/vrrp/lab.rs"]
mod lab;

use std::{
    io::{Read, Write},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lab::{LB1, LB2, VIP, VrrpLab};
use lb_vrrp::{machine::master_down, packet::Centis};
use tests::stats::median;

/// Bound of every wait for a state (election, takeover, recovery).
const BOUND: Duration = Duration::from_secs(30);
/// Client cadence and timeouts.
const EVERY: Duration = Duration::from_millis(10);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(50);
const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// Successful requests after the failure before a trial ends.
const RESUMED: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Vrrp {
    Lbd,
    Keepalived,
}

fn node_dir(l: &VrrpLab, i: usize) -> std::path::PathBuf {
    l.lab.dir().join(l.nodes[i].name)
}

/// Rewrites node `i`'s lbd.toml: the interval, or no `[vrrp]` at all (data plane only).
fn rewrite_config(l: &VrrpLab, i: usize, who: Vrrp, interval_cs: u16) {
    let path = node_dir(l, i).join("lbd.toml");
    let cfg = std::fs::read_to_string(&path).expect("read lbd.toml");
    let cfg = match who {
        Vrrp::Lbd => cfg
            .lines()
            .map(|line| {
                if line.starts_with("advert_interval_cs") {
                    format!("advert_interval_cs = {interval_cs}")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Vrrp::Keepalived => cfg
            .split_once("[vrrp]")
            .map(|(head, _)| head.to_string())
            .expect("the lab config has a [vrrp] section"),
    };
    std::fs::write(&path, cfg + "\n").expect("write lbd.toml");
}

/// Bounded wait for `cond`; panics with both nodes' logs on timeout.
fn wait(l: &VrrpLab, what: &str, cond: impl Fn(&VrrpLab) -> bool) {
    let t0 = Instant::now();
    while !cond(l) {
        if t0.elapsed() > BOUND {
            let logs = |i: usize| {
                let mut s = String::new();
                for p in [&l.lbd[i], &l.keepalived[i]].into_iter().flatten() {
                    s += &p.log();
                }
                s
            };
            panic!(
                "timed out after {BOUND:?} waiting for: {what}\n--- lb1\n{}\n--- lb2\n{}",
                logs(0),
                logs(1)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// lb1 is master holding the VIP, lb2 a backup without it.
fn lb1_master(l: &VrrpLab, who: Vrrp) -> bool {
    let roles = match who {
        Vrrp::Lbd => {
            l.state(0) == "master" && l.state(1) == "backup" && !l.vrrp(1)["master"].is_null()
        }
        Vrrp::Keepalived => true,
    };
    roles && l.has_vip(0) && !l.has_vip(1)
}

/// One HTTP request to the VIP on a new connection.
fn get_vip() -> bool {
    let addr = SocketAddr::from((VIP, 80));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(READ_TIMEOUT));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n").is_err() {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 200")
}

/// Builds a lab where `who` runs VRRP with `interval_cs`, serving the VIP from be1.
fn setup(who: Vrrp, interval_cs: u16) -> (VrrpLab, lab::Server) {
    let mut l = VrrpLab::new([LB1, LB2]);
    for i in 0..2 {
        rewrite_config(&l, i, who, interval_cs);
    }
    let server = l.serve();
    let bridge_ns = l.lab.bridge_ns().to_string();
    for name in ["lb1", "lb2"] {
        let port = l
            .lab
            .bridge_port_of(name)
            .expect("a balancer's bridge port");
        tests::exec::run(&mut tests::exec::netns_command(
            &bridge_ns,
            ["bridge", "link", "set", "dev", port, "flood", "off"],
        ))
        .expect("turn unknown-unicast flooding off on a balancer's bridge port");
    }
    l.start(0);
    l.start(1);
    if who == Vrrp::Keepalived {
        l.start_keepalived_with(0, interval_cs);
        l.start_keepalived_with(1, interval_cs);
    }
    wait(&l, "lb1 master, lb2 backup", |l| lb1_master(l, who));
    (l, server)
}

/// One failure of lb1; returns the client's longest gap in ms.
fn trial(l: &mut VrrpLab, who: Vrrp, interval_cs: u16, phase: Duration) -> f64 {
    let killed: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let served = Arc::new(AtomicUsize::new(0));
    let (k, s) = (killed.clone(), served.clone());
    // Bounded: at most 60 s or 20,000 requests; ends RESUMED successes after the failure.
    let client = l
        .lab
        .host("client")
        .expect("client")
        .spawn_thread(move || {
            let t0 = Instant::now();
            let mut ok: Vec<Instant> = Vec::new();
            let mut n = 0u32;
            while t0.elapsed() < Duration::from_secs(60) && n < 20_000 {
                n += 1;
                let start = Instant::now();
                if get_vip() {
                    ok.push(Instant::now());
                    s.fetch_add(1, Ordering::Relaxed);
                }
                let kill = *k.lock().expect("kill time");
                if let Some(kill) = kill
                    && ok.iter().rev().take_while(|t| **t > kill).count() >= RESUMED
                {
                    break;
                }
                std::thread::sleep(EVERY.saturating_sub(start.elapsed()));
            }
            ok
        })
        .expect("client thread");
    let t0 = Instant::now();
    while served.load(Ordering::Relaxed) < 10 {
        assert!(
            t0.elapsed() < BOUND,
            "the VIP does not answer the client before the failure"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The trial starts a fixed time after lb1 became master: without this every trial would
    // fail at the same point of the advert cycle.
    std::thread::sleep(phase);
    let link = |l: &VrrpLab, state: &str| {
        l.lab
            .host("lb1")
            .expect("lb1")
            .exec(["ip", "link", "set", "eth0", state])
            .unwrap_or_else(|e| panic!("lb1 eth0 {state}: {e}"));
    };
    let kill = Instant::now();
    *killed.lock().expect("kill time") = Some(kill);
    link(l, "down");
    // The link is down first, so no goodbye advert can get out whatever the signal.
    match who {
        Vrrp::Lbd => l.stop(0, libc::SIGKILL),
        Vrrp::Keepalived => l.stop_keepalived(0, libc::SIGTERM),
    }
    let ok = client.join().expect("client thread");
    let gap = ok
        .windows(2)
        .filter(|w| w[1] > kill)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_else(|| panic!("requests never resumed through lb2 ({who:?})"));

    // lb1 comes back and preempts.
    link(l, "up");
    match who {
        Vrrp::Lbd => l.start(0),
        Vrrp::Keepalived => l.start_keepalived_with(0, interval_cs),
    }
    wait(l, "lb1 master again", |l| lb1_master(l, who));
    gap.as_secs_f64() * 1e3
}

fn measure(who: Vrrp, interval_cs: u16, phases: &[Duration]) -> Vec<f64> {
    let (mut l, _server) = setup(who, interval_cs);
    let trials = phases.len();
    phases
        .iter()
        .enumerate()
        .map(|(t, &phase)| {
            eprint!(
                "\r  {who:?}, interval {} ms: trial {}/{trials} ",
                u32::from(interval_cs) * 10,
                t + 1
            );
            let gap = trial(&mut l, who, interval_cs, phase);
            eprint!("gap {gap:.0} ms ");
            gap
        })
        .collect()
}

struct Row {
    interval_ms: u32,
    master_down_ms: f64,
    lbd: Vec<f64>,
    keepalived: Vec<f64>,
}

/// Trials per interval from `--quick` (3), `--trials N`, or the default 5; any other
/// argument than those and `--json` is an error.
fn parse_trials(args: &[String]) -> Result<usize, String> {
    let mut trials = 5;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => {}
            "--quick" => trials = 3,
            "--trials" => {
                let v = it.next().ok_or("--trials needs a number")?;
                trials = match v.parse::<usize>() {
                    Ok(n) if n >= 1 => n,
                    _ => return Err(format!("--trials {v:?}: a whole number of at least 1")),
                };
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(trials)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "failover benchmark (root, keepalived installed): client-visible gap when the VRRP \
             master dies, lbd beside keepalived, intervals 1 s and 100 ms\n  \
             --json       one JSON object instead of the table\n  \
             --quick      3 trials per interval instead of 5\n  \
             --trials N   N trials per interval (at least 1; the gap is quantized by the \
             client's retries, so more trials steady the median)"
        );
        return;
    }
    let trials = match parse_trials(&args) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e} (try --help)");
            std::process::exit(2);
        }
    };
    lab::require_root();
    let json = args.iter().any(|a| a == "--json");
    let mut rows = Vec::new();
    for cs in [100u16, 10] {
        let interval = Centis::new(cs).expect("interval");
        // Random failure points, the same for both daemons: the gap depends on how long
        // before the failure the last advert went out, so the two columns are paired.
        let phases: Vec<Duration> = (0..trials)
            .map(|_| {
                Duration::from_millis(rand::Rng::gen_range(
                    &mut rand::thread_rng(),
                    0..u64::from(cs) * 10,
                ))
            })
            .collect();
        let lbd = measure(Vrrp::Lbd, cs, &phases);
        eprintln!();
        let keepalived = measure(Vrrp::Keepalived, cs, &phases);
        eprintln!();
        rows.push(Row {
            interval_ms: u32::from(cs) * 10,
            master_down_ms: master_down(LB2.priority, interval).as_secs_f64() * 1e3,
            lbd,
            keepalived,
        });
    }
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                let (a, b) = (median(r.lbd.clone()), median(r.keepalived.clone()));
                serde_json::json!({
                    "advert_interval_ms": r.interval_ms,
                    "backup_master_down_interval_ms": r.master_down_ms,
                    "lbd_gap_ms_median": a,
                    "keepalived_gap_ms_median": b,
                    "lbd_to_keepalived_ratio": a / b,
                    "lbd_gap_ms_samples": r.lbd,
                    "keepalived_gap_ms_samples": r.keepalived,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "failover",
                "trials_per_interval": trials,
                "client_request_every_ms": EVERY.as_millis(),
                "client_connect_timeout_ms": CONNECT_TIMEOUT.as_millis(),
                "intervals": rows,
            }))
            .expect("json")
        );
        return;
    }
    println!(
        "Client-visible gap when the VRRP master dies (median of {trials} trials; \
         requests every {} ms)",
        EVERY.as_millis()
    );
    println!(
        "{:>12} {:>16} {:>14} {:>20} {:>8}",
        "interval ms", "master-down ms", "lbd gap ms", "keepalived gap ms", "ratio"
    );
    for r in &rows {
        let (a, b) = (median(r.lbd.clone()), median(r.keepalived.clone()));
        println!(
            "{:>12} {:>16.0} {a:>14.0} {b:>20.0} {:>8.2}",
            r.interval_ms,
            r.master_down_ms,
            a / b
        );
    }
}
