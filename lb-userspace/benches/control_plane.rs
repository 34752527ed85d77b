//! `cargo xtask bench control-plane`: how fast the control plane reacts.
//!
//! 1. Backend down -> no new flows: in a namespace lab with the real `lbd`, a backend's server
//!    stops; the time until the VIP's table is swapped without it (read from the pinned maps),
//!    median of trials, beside the configured detection time fall x interval.
//! 2. Recompute and swap a table with 1,000 backends (one goes down, then back), beside the
//!    Maglev build alone measured in the same run.

#[allow(dead_code)]
#[path = "../tests/control_plane/lab.rs"]
mod lab;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHash, Map, MapData};
use lb_common::{Algorithm, ForwardMode, IPPROTO_TCP, VipKey, VipMeta};
use lb_userspace::{
    dataplane::{BackendSpec, BackendState, Dataplane, LoadOptions, Programmer, VipSpec},
    maglev::{self, MaglevBackend, TableSize},
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

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
            "control-plane benchmark (root)\n  --json   one JSON object\n  --quick  fewer trials (3 per interval, 1 s interval skipped)"
        );
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    let trials = if quick { 3 } else { 7 };
    let intervals: &[u64] = if quick { &[200] } else { &[200, 1000] };
    let mut rows = Vec::new();
    for &iv in intervals {
        let (med, samples) = detection(iv, trials);
        let bound = lab::FALL as f64 * iv as f64;
        rows.push((iv, med, bound, samples));
    }
    let (first, swap, build) = swap_times(if quick { 6 } else { 20 });
    if json {
        let det: Vec<_> = rows
            .iter()
            .map(|(iv, med, bound, s)| serde_json::json!({
                "check_interval_ms": iv, "fall": lab::FALL, "fall_x_interval_ms": bound,
                "backend_down_to_no_new_flows_ms_median": med, "ratio_to_fall_x_interval": med / bound, "samples_ms": s }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "benchmark": "control-plane",
                "detection": det,
                "table_1000_backends_initial_write_ms": first,
                "table_1000_backends_recompute_and_swap_ms_median": swap,
                "maglev_build_only_ms_median": build,
                "swap_to_build_ratio": swap / build,
            }))
            .expect("json")
        );
        return;
    }
    println!("Backend down -> data plane stops sending it new flows (median of {trials} trials)");
    println!(
        "{:>12} {:>6} {:>18} {:>14} {:>8}",
        "interval ms", "fall", "fall x interval ms", "measured ms", "ratio"
    );
    for (iv, med, bound, _) in &rows {
        println!(
            "{iv:>12} {:>6} {bound:>18.0} {med:>14.0} {:>8.2}",
            lab::FALL,
            med / bound
        );
    }
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
