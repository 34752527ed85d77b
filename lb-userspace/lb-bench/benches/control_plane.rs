//! `cargo xtask bench control-plane`: how fast the control plane reacts.
//!
//! 1. Backend down -> no new flows: in a namespace lab with the real `lbd`, a backend's server
//!    stops; the time until the VIP's table is swapped without it (read from the pinned maps),
//!    median of trials, beside the configured detection time fall x interval.
//! 2. Recompute and swap a table with 1,000 backends (one goes down, then back), beside the
//!    Maglev build alone measured in the same run.
//! 3. API latency while the sweep runs: `GET /v1/status` over the unix socket of the real
//!    `lbd` with the connection table full (262,144 flows written through the pinned map),
//!    beside the same calls with the table empty, in the same run.

#[allow(dead_code)]
#[path = "../../lbd/tests/control_plane/lab.rs"]
mod lab;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHash, Map, MapData};
use lb_common::{Algorithm, ConnEntry, FlowKey, ForwardMode, IPPROTO_TCP, VipKey, VipMeta};
use lb_dataplane::maglev::{self, MaglevBackend, TableSize};
use lb_dataplane::{BackendSpec, BackendState, Dataplane, LoadOptions, Programmer, VipSpec};
use tests::stats::median;

fn vip_meta(pins: &std::path::Path) -> VipMeta {
    let m = MapData::from_pin(pins.join(format!("v{}/maps/VIPS", lb_common::LAYOUT_VERSION)))
        .expect("pinned VIPS");
    let vips: BpfHash<MapData, VipKey, VipMeta> = BpfHash::try_from(Map::HashMap(m)).expect("VIPS");
    vips.get(&VipKey::new(IpAddr::V4(lab::VIP), 80, IPPROTO_TCP), 0)
        .expect("VIP entry")
}

/// Median ms from a server stopping to the table swap that drops it.
fn detection(interval_ms: u64, trials: usize) -> (f64, Vec<f64>) {
    let mut cl = lab::ControlLab::with_interval(3, interval_ms);
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    let mut samples = Vec::new();
    for t in 0..trials {
        eprint!("\r  interval {interval_ms} ms: trial {}/{trials} ", t + 1);
        let before = vip_meta(&pins);
        let start = Instant::now();
        cl.servers[2].as_mut().expect("server").stop();
        let limit = Duration::from_millis(interval_ms * 20 + 5000);
        loop {
            let now = vip_meta(&pins);
            if (now.slot, now.table_len) != (before.slot, before.table_len) {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "the table never changed after the backend stopped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3);
        cl.servers[2] = Some(lab::BackendServer::start(&cl.lab, "be3"));
        cl.wait_healthy(3);
    }
    eprintln!();
    (median(samples.clone()), samples)
}

/// Latency of API calls while the sweep runs, with the connection table empty and full.
struct ApiLatency {
    calls: usize,
    rounds: usize,
    flows: usize,
    /// Per round: (median ms, p99 ms, max ms), empty table then full table.
    empty: Vec<(f64, f64, f64)>,
    full: Vec<(f64, f64, f64)>,
}

/// The sweep's interval in the lab's config (`[sweep] interval_ms`).
const LAB_SWEEP_MS: u64 = 500;
const TABLE_FLOWS: u32 = lb_common::CONN_TABLE_SIZE;

fn conns_map(pins: &std::path::Path) -> BpfHash<MapData, FlowKey, ConnEntry> {
    let m = MapData::from_pin(pins.join(format!("v{}/maps/CONNS", lb_common::LAYOUT_VERSION)))
        .expect("pinned CONNS");
    BpfHash::try_from(Map::LruHashMap(m)).expect("CONNS")
}

fn bench_flow(i: u32) -> FlowKey {
    let src = IpAddr::V4(std::net::Ipv4Addr::from(0x0a80_0000 | (i >> 4)));
    FlowKey::new(
        src,
        20000 + (i & 15) as u16,
        IpAddr::V4(lab::VIP),
        80,
        IPPROTO_TCP,
    )
}

/// `calls` sequential `GET /v1/status`, one every 5 ms, so they span several sweeps.
fn status_latencies(cl: &lab::ControlLab, calls: usize) -> (f64, f64, f64) {
    let mut v = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let (code, _) = cl.api("GET", "/v1/status", None);
        v.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(code, 200, "GET /v1/status");
        std::thread::sleep(Duration::from_millis(5));
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let p99 = v[(v.len() * 99 / 100).min(v.len() - 1)];
    (median(v.clone()), p99, v[v.len() - 1])
}

fn api_latency(rounds: usize, calls: usize) -> ApiLatency {
    let cl = lab::ControlLab::new(2);
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    let mut conns = conns_map(&pins);
    let mut out = ApiLatency {
        calls,
        rounds,
        flows: 0,
        empty: Vec::new(),
        full: Vec::new(),
    };
    for r in 0..rounds {
        eprint!("\r  api latency: round {}/{rounds}, empty table ", r + 1);
        out.empty.push(status_latencies(&cl, calls));
        eprint!("\r  api latency: round {}/{rounds}, filling       ", r + 1);
        // Live, non-closing flows on the lab's backends: the sweep reads and counts them all
        // (nothing in the lab makes them expire: no traffic through the VIP sets the clock
        // anchor the sweep ages entries with).
        for i in 0..TABLE_FLOWS {
            let e = ConnEntry {
                backend: 1 + (i % 2) as u16,
                ..Default::default()
            };
            conns.insert(bench_flow(i), e, 0).expect("insert a flow");
        }
        out.flows = conns.keys().filter(Result::is_ok).count();
        eprint!("\r  api latency: round {}/{rounds}, full table    ", r + 1);
        out.full.push(status_latencies(&cl, calls));
        for i in 0..TABLE_FLOWS {
            let _ = conns.remove(&bench_flow(i));
        }
    }
    eprintln!();
    out
}

fn backends(n: u32, down: Option<u32>) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| {
            let addr: IpAddr = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)
                .parse()
                .expect("ip");
            BackendSpec {
                addr,
                mac: [2, 0, 0, 0, (i / 256) as u8, i as u8],
                weight: 100,
                state: if Some(i) == down {
                    BackendState::Down
                } else {
                    BackendState::Active
                },
            }
        })
        .collect()
}

fn swap_times(rounds: usize) -> (f64, f64, f64) {
    let mut dp = Dataplane::load(LoadOptions::default()).expect("load the data plane (root)");
    let mut prog = Programmer::new(dp.take_maps().expect("maps"));
    let spec = |down| VipSpec {
        name: "web".into(),
        addr: "10.77.0.100".parse().expect("ip"),
        port: 80,
        proto: IPPROTO_TCP,
        algorithm: Algorithm::Maglev,
        mode: ForwardMode::DsrL2,
        table_size: TableSize::DEFAULT,
        backends: backends(1000, down),
        second_chance: Default::default(),
    };
    let t = Instant::now();
    prog.apply(&[spec(None)]).expect("initial");
    let first = t.elapsed().as_secs_f64() * 1e3;
    let mut swaps = Vec::new();
    for r in 0..rounds {
        let down = if r % 2 == 0 {
            Some((r as u32 * 37) % 1000)
        } else {
            None
        };
        let t = Instant::now();
        let rep = prog.apply(&[spec(down)]).expect("swap");
        swaps.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(rep.tables_swapped, 1);
    }
    let keys: Vec<Vec<u8>> = backends(1000, None)
        .iter()
        .map(|b| match b.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        })
        .collect();
    let input: Vec<MaglevBackend> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| MaglevBackend {
            id: i as u32 + 1,
            key: k,
            weight: 100,
        })
        .collect();
    let builds: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let _ = maglev::build(&input, TableSize::DEFAULT).expect("build");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    (first, median(swaps), median(builds))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "control-plane benchmark (root)\n  --json      one JSON object\n  --quick     fewer trials (3 per interval, 1 s interval skipped; 1 API-latency round)\n  --api-only  only the API latency under the sweep"
        );
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    let api_only = args.iter().any(|a| a == "--api-only");
    let trials = if quick { 3 } else { 7 };
    let intervals: &[u64] = match (api_only, quick) {
        (true, _) => &[],
        (false, true) => &[200],
        (false, false) => &[200, 1000],
    };
    let mut rows = Vec::new();
    for &iv in intervals {
        let (med, samples) = detection(iv, trials);
        let bound = lab::FALL as f64 * iv as f64;
        rows.push((iv, med, bound, samples));
    }
    let swaps = (!api_only).then(|| swap_times(if quick { 6 } else { 20 }));
    let api = api_latency(if quick { 1 } else { 3 }, 400);
    let api_json = api_json(&api);
    if json {
        let det: Vec<_> = rows
            .iter()
            .map(|(iv, med, bound, s)| serde_json::json!({
                "check_interval_ms": iv, "fall": lab::FALL, "fall_x_interval_ms": bound,
                "backend_down_to_no_new_flows_ms_median": med, "ratio_to_fall_x_interval": med / bound, "samples_ms": s }))
            .collect();
        let mut out = serde_json::json!({
            "benchmark": "control-plane",
            "detection": det,
            "api_latency_during_sweep": api_json,
        });
        if let Some((first, swap, build)) = swaps {
            out["table_1000_backends_initial_write_ms"] = first.into();
            out["table_1000_backends_recompute_and_swap_ms_median"] = swap.into();
            out["maglev_build_only_ms_median"] = build.into();
            out["swap_to_build_ratio"] = (swap / build).into();
        }
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
    if !rows.is_empty() {
        print_detection(&rows, trials);
    }
    if let Some(s) = swaps {
        print_swaps(s);
    }
    print_api(&api);
}

/// Medians over rounds of each round's (median, p99, max).
fn api_summary(v: &[(f64, f64, f64)]) -> (f64, f64, f64) {
    (
        median(v.iter().map(|x| x.0).collect()),
        median(v.iter().map(|x| x.1).collect()),
        median(v.iter().map(|x| x.2).collect()),
    )
}

fn api_json(a: &ApiLatency) -> serde_json::Value {
    let (em, ep, ex) = api_summary(&a.empty);
    let (fm, fp, fx) = api_summary(&a.full);
    let side = |v: &[(f64, f64, f64)], m, p, x| {
        serde_json::json!({"median_ms": m, "p99_ms": p, "max_ms": x,
            "rounds": v.iter().map(|r| serde_json::json!({"median_ms": r.0, "p99_ms": r.1, "max_ms": r.2})).collect::<Vec<_>>()})
    };
    serde_json::json!({
        "call": "GET /v1/status (unix socket)",
        "calls_per_round": a.calls,
        "rounds": a.rounds,
        "sweep_interval_ms": LAB_SWEEP_MS,
        "flows_in_full_table": a.flows,
        "empty_table": side(&a.empty, em, ep, ex),
        "full_table": side(&a.full, fm, fp, fx),
        "ratio_median_full_to_empty": fm / em,
        "ratio_p99_full_to_empty": fp / ep,
        "ratio_max_full_to_empty": fx / ex,
    })
}

fn print_api(a: &ApiLatency) {
    let (em, ep, ex) = api_summary(&a.empty);
    let (fm, fp, fx) = api_summary(&a.full);
    println!();
    println!(
        "API latency while the sweep runs every {LAB_SWEEP_MS} ms: GET /v1/status over the unix socket, \
         {} calls per round, median of {} rounds",
        a.calls, a.rounds
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "connection table", "median ms", "p99 ms", "max ms"
    );
    println!(
        "{:<34} {em:>10.3} {ep:>10.3} {ex:>10.3}",
        "empty (baseline)"
    );
    println!(
        "{:<34} {fm:>10.3} {fp:>10.3} {fx:>10.3}",
        format!("{} flows", a.flows)
    );
    println!(
        "{:<34} {:>10.2} {:>10.2} {:>10.2}",
        "ratio full / empty",
        fm / em,
        fp / ep,
        fx / ex
    );
}

fn print_detection(rows: &[(u64, f64, f64, Vec<f64>)], trials: usize) {
    println!("Backend down -> data plane stops sending it new flows (median of {trials} trials)");
    println!(
        "{:>12} {:>6} {:>18} {:>14} {:>8}",
        "interval ms", "fall", "fall x interval ms", "measured ms", "ratio"
    );
    for (iv, med, bound, _) in rows {
        println!(
            "{iv:>12} {:>6} {bound:>18.0} {med:>14.0} {:>8.2}",
            lab::FALL,
            med / bound
        );
    }
}

fn print_swaps((first, swap, build): (f64, f64, f64)) {
    println!();
    println!("Table with 1,000 backends (M = 65537)");
    println!(
        "{:<44} {:>10}",
        "first write (all 65,537 entries)",
        format!("{first:.1} ms")
    );
    println!(
        "{:<44} {:>10}",
        "recompute + swap after one backend changes",
        format!("{swap:.1} ms")
    );
    println!(
        "{:<44} {:>10}",
        "Maglev build alone (same run, baseline)",
        format!("{build:.2} ms")
    );
    println!("{:<44} {:>10.1}", "ratio swap / build", swap / build);
}
