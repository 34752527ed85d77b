//! `cargo xtask bench dataplane`: nanoseconds per packet of every XDP path, measured in the
//! kernel with BPF_PROG_TEST_RUN, beside the floor program measured in the same run.
//!
//! BPF_PROG_TEST_RUN with `repeat` does not restore the packet between runs, so every path
//! that rewrites the packet is measured through `xdp_harness`, which restores the original
//! bytes (and, for new-flow cases, writes a fresh source address) before tail-calling the
//! program under test. The harness's own cost is measured by pointing it at the floor program
//! and subtracted. Each figure's action and output are checked, and the per-VIP counters must
//! show exactly one new connection per run for new-flow cases and none for table hits.
//!
//! `--katran PIN` measures another balancer in the same run: a pinned XDP program (Katran's
//! `balancer_ingress`, built and loaded outside this repository) whose maps already hold the
//! `ipip` VIP below, run through the same harness on the same packets (docs/dataplane.md).
//! `--katran-default PIN` adds Katran's default build (its LRU flood guard on) on the
//! "flood guard on" row, where ours runs at its default limit; every other row runs our guard
//! off (every new flow inserted).

mod bench;
mod cases;
mod decap;

use std::path::PathBuf;

use anyhow::{Result, ensure};
use clap::Parser;
use lb_common::names;
use lb_dataplane::XdpAction;
use lb_dataplane::maglev::{self, TableSize};
use tests::stats::median;

use bench::{Bench, Target};
use cases::{Case, Kind, cases};

#[derive(Parser)]
#[command(name = "lb-bench", about = "Data-plane benchmarks (run as root)")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// ns/packet for each XDP path, and the Maglev table build time.
    Dataplane(Opts),
}

#[derive(clap::Args)]
struct Opts {
    /// Runs per measurement (the kernel reports the mean per run).
    #[arg(long, default_value_t = 200_000)]
    repeat: u32,
    /// Measurements per case; the median is reported (at least 5 unless --quick).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// A short smoke run (20,000 repeats, 3 rounds): checks everything, numbers are rough.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Connection-table entries (new-flow figures are steady state: a full table evicts).
    #[arg(long, default_value_t = lb_common::CONN_TABLE_SIZE)]
    conn_table_size: u32,
    /// A pinned XDP program of another balancer (e.g. Katran's balancer_ingress, loaded with
    /// `bpftool prog loadall ... pinmaps ...`) whose maps already hold VIP 10.77.0.104:80/tcp,
    /// IPIP to 10.77.0.11-13. Its non-VIP pass, table hit and new flow are measured in the same
    /// run, through the same harness, on the same packets. Without it: "not measured".
    #[arg(long, value_name = "PIN")]
    katran: Option<PathBuf>,
    /// Katran's default build (its LRU flood guard on: above 125,000 new flows per second per
    /// CPU it forwards new flows without inserting them), pinned like --katran. Compared on the
    /// "flood guard on" row with our guard at its default (125,000); every other new-flow row
    /// runs our guard off and compares with --katran (a build that inserts every flow).
    #[arg(long, value_name = "PIN")]
    katran_default: Option<PathBuf>,
    /// Measure only the cases whose name contains this text (the floor always runs).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

fn main() -> Result<()> {
    let Cli {
        what: What::Dataplane(mut opts),
    } = Cli::parse();
    if opts.quick {
        opts.repeat = 20_000;
        opts.rounds = 3;
    }
    ensure!(
        opts.rounds >= 1 && opts.repeat >= 1,
        "--rounds and --repeat must be positive"
    );
    let mut bench = Bench::setup(
        opts.repeat,
        opts.conn_table_size,
        opts.katran.as_deref(),
        opts.katran_default.as_deref(),
    )?;
    let with_katran = bench.katran.is_some();
    let with_katran_default = bench.katran_default.is_some();
    let loopback = decap::Loopback::open()?;
    let cases: Vec<Case> = cases()
        .into_iter()
        .chain(decap::cases(&loopback))
        .filter(|c| {
            c.kind == Kind::Floor || opts.only.as_deref().is_none_or(|t| c.name.contains(t))
        })
        .collect();
    let targets = |c: &Case| {
        let mut t = vec![Target::Ours(c.program)];
        if with_katran && c.katran {
            t.push(Target::Katran);
        }
        if with_katran_default && c.guard {
            t.push(Target::KatranDefault);
        }
        t
    };
    for case in &cases {
        for t in targets(case) {
            bench.check_harness_output(case, t)?;
        }
    }
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut katran: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..opts.rounds {
        eprint!("\rround {}/{} ", round + 1, opts.rounds);
        let floor = bench.direct(
            Target::Ours(names::PROG_FLOOR),
            &cases[0].packet,
            XdpAction::Tx,
        )?;
        for (i, case) in cases.iter().enumerate() {
            for t in targets(case) {
                let v = bench.measure(case, t, floor)?;
                match t {
                    Target::Ours(_) => ours[i].push(v),
                    Target::Katran | Target::KatranDefault => katran[i].push(v),
                }
            }
        }
    }
    eprintln!();
    let medians: Vec<f64> = ours.into_iter().map(median).collect();
    let k_medians: Vec<Option<f64>> = katran
        .into_iter()
        .map(|v| (!v.is_empty()).then(|| median(v)))
        .collect();
    let floor = medians[0];
    let build_rounds = if opts.quick { 5 } else { 21 };
    let build = median(
        maglev::bench_build(1000, TableSize::DEFAULT, build_rounds)
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
    );
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    // What the capture hook costs while no capture runs: the hooked program minus the same
    // pipeline without the hook, measured in the same rounds.
    let median_of = |name: &str| {
        cases
            .iter()
            .position(|c| c.name == name)
            .map(|i| medians[i])
    };
    let hook_cost: Vec<(&str, f64)> = [
        ("non-VIP pass", "non-VIP pass, no capture hook"),
        (
            "conn-table hit, dsr-l2",
            "conn-table hit, dsr-l2, no capture hook",
        ),
        (
            "conn-table hit, ipip",
            "conn-table hit, ipip, no capture hook",
        ),
    ]
    .iter()
    .filter_map(|(hooked, bare)| Some((*hooked, median_of(hooked)? - median_of(bare)?)))
    .collect();
    let unpinned_share =
        (bench.unpinned.1 > 0).then(|| bench.unpinned.0 as f64 / bench.unpinned.1 as f64);

    if opts.json {
        let rows: Vec<serde_json::Value> = cases
            .iter()
            .zip(medians.iter().zip(&k_medians))
            .map(|(c, (m, k))| {
                serde_json::json!({
                    "case": c.name,
                    "ns_per_packet": (m * 10.0).round() / 10.0,
                    "ratio_to_floor": round2(m / floor),
                    "katran_ns_per_packet": k.map(|k| (k * 10.0).round() / 10.0),
                    "katran_ratio_to_floor": k.map(|k| round2(k / floor)),
                    "ratio_to_katran": k.map(|k| round2(m / k)),
                    "action": c.expect.name(),
                    "flood_guard": c.guard,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "benchmark": "dataplane",
            "method": "BPF_PROG_TEST_RUN, restore harness, median of rounds",
            "repeat_per_round": opts.repeat,
            "rounds": opts.rounds,
            "conn_table_entries": opts.conn_table_size,
            "katran_program": opts.katran.as_ref().map(|p| p.display().to_string()),
            "katran_default_program": opts
                .katran_default
                .as_ref()
                .map(|p| p.display().to_string()),
            "flood_guard_limit_per_cpu_per_s": lb_common::DEFAULT_MAX_NEW_FLOWS_PER_CPU,
            "flood_guard_unpinned_share": unpinned_share.map(round2),
            "capture_off_cost_ns": hook_cost
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(round2(*v))))
                .collect::<serde_json::Map<_, _>>(),
            "capture_off_cost_goal_ns": 2.0,
            "floor_ns_per_packet": floor,
            "cases": rows,
            "maglev_build_ms_m65537_n1000": build,
            "maglev_build_target_ms": 5.0,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "XDP data plane, ns/packet (median of {} rounds x {} runs; harness cost subtracted; conn table {} entries)",
        opts.rounds, opts.repeat, opts.conn_table_size
    );
    println!(
        "{:<44} {:>8} {:>8} {:>7} {:>12} {:>8} {:>9}",
        "path", "ns/pkt", "x floor", "action", "katran ns", "x floor", "x katran"
    );
    for (c, (m, k)) in cases.iter().zip(medians.iter().zip(&k_medians)) {
        let (kn, kf, kr) = match k {
            Some(k) => (
                format!("{k:.1}"),
                format!("{:.2}", k / floor),
                format!("{:.2}", m / k),
            ),
            None if (c.katran && !with_katran) || (c.guard && !with_katran_default) => {
                ("not measured".into(), "".into(), "".into())
            }
            None => ("-".into(), "".into(), "".into()),
        };
        println!(
            "{:<44} {:>8.1} {:>8.2} {:>7} {:>12} {:>8} {:>9}",
            c.name,
            m,
            m / floor,
            c.expect.name(),
            kn,
            kf,
            kr
        );
    }
    println!(
        "{:<44} {:>8.2} ms (target < 5 ms; Maglev paper 1.8 ms)",
        "Maglev build, M=65537, 1000 backends", build
    );
    if !hook_cost.is_empty() {
        let parts: Vec<String> = hook_cost
            .iter()
            .map(|(k, v)| format!("{k} {v:+.1} ns"))
            .collect();
        println!(
            "capture hook while off (with minus without, same rounds): {} (goal: within 2 ns)",
            parts.join(", ")
        );
    }
    if let Some(share) = unpinned_share {
        println!(
            "flood guard on ({} new flows/s per CPU): {:.0}% of our new flows forwarded without an entry",
            lb_common::DEFAULT_MAX_NEW_FLOWS_PER_CPU,
            share * 100.0
        );
    }
    if let Some(p) = &opts.katran {
        println!(
            "katran: {} measured in this run, same harness, same packets, same floor",
            p.display()
        );
    }
    if let Some(p) = &opts.katran_default {
        println!(
            "katran default build (flood guard row): {} in the same run",
            p.display()
        );
    }
    Ok(())
}
