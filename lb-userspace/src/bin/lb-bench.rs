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

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use lb_common::{Algorithm, ForwardMode, IPPROTO_TCP, Settings, names};
use lb_userspace::{
    dataplane::{
        BackendSpec, BackendState, Dataplane, LoadOptions, Maps, PinnedXdp, Programmer, VipSpec,
        XdpAction,
    },
    maglev::{self, TableSize},
    packet::{Frame, TCP_ACK, TCP_SYN},
};

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
    /// Measure only the cases whose name contains this text (the floor always runs).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn backends(prefix: &str) -> Vec<BackendSpec> {
    (11..14)
        .map(|i| {
            let addr = ip(&format!("{prefix}{i}"));
            BackendSpec {
                addr,
                mac: [2, 0xbe, 0, 0, 0, i as u8],
                weight: 1,
                state: BackendState::Active,
            }
        })
        .collect()
}

fn vip(name: &str, addr: &str, algorithm: Algorithm, mode: ForwardMode) -> VipSpec {
    let prefix = if addr.contains(':') {
        "fd77::"
    } else {
        "10.77.0."
    };
    VipSpec {
        name: name.into(),
        addr: ip(addr),
        port: 80,
        proto: IPPROTO_TCP,
        algorithm,
        mode,
        table_size: TableSize::DEFAULT,
        backends: backends(prefix),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The floor program, run directly.
    Floor,
    /// The balancer, run directly (the path does not modify the packet).
    Direct,
    /// The balancer through the restore harness, same flow every run.
    Hit,
    /// The balancer through the harness, a new source address every run.
    NewFlow,
}

struct Case {
    name: String,
    kind: Kind,
    vip: Option<&'static str>,
    packet: Vec<u8>,
    vary_offset: u32,
    expect: XdpAction,
    /// Whether `--katran` runs this case too (its VIP is the `ipip` one).
    katran: bool,
}

fn syn(dst: &str) -> Frame {
    let src = if dst.contains(':') {
        "fd00::9"
    } else {
        "10.9.0.1"
    };
    Frame::tcp(ip(src), 40000, ip(dst), 80, TCP_SYN)
}

fn cases() -> Vec<Case> {
    let v4_src_word = 14 + 12;
    let v6_src_word = 14 + 8 + 12;
    let mut out = vec![
        Case {
            name: "floor: swap MACs, XDP_TX".into(),
            kind: Kind::Floor,
            vip: None,
            packet: syn("10.77.0.100").build(),
            vary_offset: 0,
            expect: XdpAction::Tx,
            katran: false,
        },
        Case {
            name: "non-VIP pass".into(),
            kind: Kind::Direct,
            vip: None,
            packet: Frame::tcp(ip("10.9.0.1"), 40000, ip("10.77.0.50"), 80, TCP_ACK).build(),
            vary_offset: 0,
            expect: XdpAction::Pass,
            katran: true,
        },
    ];
    for (name, vip_name, addr, katran) in [
        ("conn-table hit, dsr-l2", "maglev", "10.77.0.100", false),
        ("conn-table hit, ipip", "ipip", "10.77.0.104", true),
        ("conn-table hit, ipip6", "ipip6", "fd77::100", false),
    ] {
        out.push(Case {
            name: name.into(),
            kind: Kind::Hit,
            vip: Some(vip_name),
            packet: Frame::tcp(
                ip(if addr.contains(':') {
                    "fd00::9"
                } else {
                    "10.9.0.1"
                }),
                40000,
                ip(addr),
                80,
                TCP_ACK,
            )
            .build(),
            vary_offset: 0,
            expect: XdpAction::Tx,
            katran,
        });
    }
    for (name, vip_name, addr, katran) in [
        ("new flow, maglev, dsr-l2", "maglev", "10.77.0.100", false),
        ("new flow, ip-hash, dsr-l2", "iphash", "10.77.0.101", false),
        (
            "new flow, weighted-round-robin",
            "wrr",
            "10.77.0.102",
            false,
        ),
        ("new flow, least-connections", "lc", "10.77.0.103", false),
        ("new flow, maglev, ipip", "ipip", "10.77.0.104", true),
        ("new flow, maglev, ipip6", "ipip6", "fd77::100", false),
    ] {
        out.push(Case {
            name: name.into(),
            kind: Kind::NewFlow,
            vip: Some(vip_name),
            packet: syn(addr).build(),
            vary_offset: if addr.contains(':') {
                v6_src_word
            } else {
                v4_src_word
            },
            expect: XdpAction::Tx,
            katran,
        });
    }
    out
}

struct Bench {
    dp: Dataplane,
    prog: Programmer,
    repeat: u32,
    katran: Option<PinnedXdp>,
}

/// The program a measurement runs.
#[derive(Clone, Copy)]
enum Target {
    Ours(&'static str),
    Katran,
}

impl Bench {
    fn setup(repeat: u32, conn_table_size: u32, katran: Option<&std::path::Path>) -> Result<Self> {
        let katran = katran
            .map(|p| PinnedXdp::open(p).with_context(|| format!("--katran {}", p.display())))
            .transpose()?;
        let mut dp = Dataplane::load(LoadOptions {
            bench: true,
            conn_table_size,
            ..LoadOptions::default()
        })
        .context("loading the data plane (run as root after `cargo xtask build-ebpf`)")?;
        let mut maps = dp.take_maps()?;
        maps.set_settings(&Settings {
            ipip_src_v4: lb_common::user::addr_words(ip("10.77.0.2"))[0],
            ipip_src_v6: lb_common::user::addr_words(ip("fd77::2")),
            backend_mtu: 0,
            ..Default::default()
        })?;
        let mut prog = Programmer::new(maps);
        prog.apply(&[
            vip(
                "maglev",
                "10.77.0.100",
                Algorithm::Maglev,
                ForwardMode::DsrL2,
            ),
            vip(
                "iphash",
                "10.77.0.101",
                Algorithm::IpHash,
                ForwardMode::DsrL2,
            ),
            vip(
                "wrr",
                "10.77.0.102",
                Algorithm::WeightedRoundRobin,
                ForwardMode::DsrL2,
            ),
            vip(
                "lc",
                "10.77.0.103",
                Algorithm::LeastConnections,
                ForwardMode::DsrL2,
            ),
            vip("ipip", "10.77.0.104", Algorithm::Maglev, ForwardMode::Ipip),
            vip("ipip6", "fd77::100", Algorithm::Maglev, ForwardMode::Ipip),
        ])?;
        Ok(Self {
            dp,
            prog,
            repeat,
            katran,
        })
    }

    fn maps(&mut self) -> &mut Maps {
        self.prog.maps_mut()
    }

    fn katran(&self) -> Result<&PinnedXdp> {
        self.katran.as_ref().context("--katran not given")
    }

    fn run_once(
        &self,
        target: Target,
        packet: &[u8],
    ) -> Result<lb_userspace::dataplane::RunOutput> {
        Ok(match target {
            Target::Ours(name) => self.dp.run(name, packet)?,
            Target::Katran => self.katran()?.run(packet)?,
        })
    }

    /// Mean ns per run of `target` on `packet`, checked against `expect`.
    fn direct(&self, target: Target, packet: &[u8], expect: XdpAction) -> Result<f64> {
        let (out, d) = match target {
            Target::Ours(name) => self.dp.run_repeat(name, packet, self.repeat)?,
            Target::Katran => self.katran()?.run_repeat(packet, self.repeat)?,
        };
        ensure!(
            out.action == expect,
            "{}: action {:?}, expected {expect:?}",
            target.name(),
            out.action
        );
        Ok(ns(d))
    }

    fn arm(&mut self, target: Target, packet: &[u8], vary: Option<u32>) -> Result<()> {
        let maps = self.prog.maps_mut();
        match target {
            Target::Ours(name) => self.dp.arm_harness(maps, name, packet, vary)?,
            Target::Katran => {
                let k = self.katran.as_ref().context("--katran not given")?;
                self.dp.arm_harness_with(maps, k.xdp(), packet, vary)?
            }
        }
        Ok(())
    }

    fn through_harness(
        &mut self,
        target: Target,
        packet: &[u8],
        vary: u32,
        expect: XdpAction,
    ) -> Result<f64> {
        self.arm(target, packet, (vary != 0).then_some(vary))?;
        let (out, d) = self
            .dp
            .run_repeat(names::PROG_HARNESS, packet, self.repeat)?;
        ensure!(
            out.action == expect,
            "harness -> {}: action {:?}, expected {expect:?}",
            target.name(),
            out.action
        );
        Ok(ns(d))
    }

    fn new_conns(&mut self, vip: &str) -> Result<u64> {
        let id = self.prog.vip_id(vip).context("vip programmed")?;
        Ok(self.maps().vip_totals(id)?.new_conns)
    }

    /// One round of one case on `target`: its cost with the harness's own cost taken off.
    fn measure(&mut self, case: &Case, target: Target, floor: f64) -> Result<f64> {
        match case.kind {
            Kind::Floor => Ok(floor),
            Kind::Direct => self.direct(target, &case.packet, case.expect),
            Kind::Hit | Kind::NewFlow => {
                let vip = case.vip.context("case has a VIP")?;
                if case.kind == Kind::Hit {
                    // New-flow cases fill the LRU and evict everything: re-establish the flow.
                    let out = self.run_once(target, &case.packet)?;
                    ensure!(
                        out.action == case.expect,
                        "{} ({}): establishing the flow gave {:?}",
                        case.name,
                        target.name(),
                        out.action
                    );
                }
                let harness = self.through_harness(
                    Target::Ours(names::PROG_FLOOR),
                    &case.packet,
                    case.vary_offset,
                    XdpAction::Tx,
                )? - floor;
                let before = self.new_conns(vip)?;
                let total =
                    self.through_harness(target, &case.packet, case.vary_offset, case.expect)?;
                // Our counters check our program; the other balancer's counters are its own
                // (its output is checked in `check_harness_output`).
                if let Target::Ours(_) = target {
                    let created = self.new_conns(vip)? - before;
                    let want = if case.kind == Kind::NewFlow {
                        self.repeat as u64
                    } else {
                        0
                    };
                    if created != want {
                        bail!(
                            "{}: {created} new connections in {} runs, expected {want}",
                            case.name,
                            self.repeat
                        );
                    }
                }
                Ok((total - harness).max(0.0))
            }
        }
    }

    /// The harness must hand the program under test exactly the original packet: its output
    /// after one run equals the output of a direct run on the original packet. Forwarded
    /// packets to the `ipip` VIP must carry an outer IPv4 header (protocol 4) to a backend.
    fn check_harness_output(&mut self, case: &Case, target: Target) -> Result<()> {
        if case.kind == Kind::Floor || case.kind == Kind::Direct {
            return Ok(());
        }
        let direct = self.run_once(target, &case.packet)?;
        ensure!(
            direct.action == case.expect,
            "{} ({}): direct run gave {:?}",
            case.name,
            target.name(),
            direct.action
        );
        if case.vip == Some("ipip") {
            let p = &direct.packet;
            ensure!(
                p.len() == case.packet.len() + 20 && p[14] == 0x45 && p[23] == 4,
                "{} ({}): output is not IPIP",
                case.name,
                target.name()
            );
            ensure!(
                p[30..33] == [10, 77, 0] && (11..14).contains(&p[33]),
                "{} ({}): outer destination {:?} is not a backend",
                case.name,
                target.name(),
                &p[30..34]
            );
        }
        if case.kind != Kind::Hit {
            return Ok(());
        }
        self.arm(target, &case.packet, None)?;
        let via = self.dp.run(names::PROG_HARNESS, &case.packet)?;
        ensure!(
            via.packet == direct.packet,
            "{} ({}): harness output differs from a direct run",
            case.name,
            target.name()
        );
        Ok(())
    }
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ours(name) => name,
            Target::Katran => "katran",
        }
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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
    let mut bench = Bench::setup(opts.repeat, opts.conn_table_size, opts.katran.as_deref())?;
    let with_katran = bench.katran.is_some();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| {
            c.kind == Kind::Floor || opts.only.as_deref().is_none_or(|t| c.name.contains(t))
        })
        .collect();
    let targets = |c: &Case| {
        let mut t = vec![Target::Ours(if c.kind == Kind::Floor {
            names::PROG_FLOOR
        } else {
            names::PROG_BALANCER
        })];
        if with_katran && c.katran {
            t.push(Target::Katran);
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
                    Target::Katran => katran[i].push(v),
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
        "{:<32} {:>8} {:>8} {:>7} {:>12} {:>8} {:>9}",
        "path", "ns/pkt", "x floor", "action", "katran ns", "x floor", "x katran"
    );
    for (c, (m, k)) in cases.iter().zip(medians.iter().zip(&k_medians)) {
        let (kn, kf, kr) = match k {
            Some(k) => (
                format!("{k:.1}"),
                format!("{:.2}", k / floor),
                format!("{:.2}", m / k),
            ),
            None if c.katran && !with_katran => ("not measured".into(), "".into(), "".into()),
            None => ("-".into(), "".into(), "".into()),
        };
        println!(
            "{:<32} {:>8.1} {:>8.2} {:>7} {:>12} {:>8} {:>9}",
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
        "{:<32} {:>8.2} ms (target < 5 ms; Maglev paper 1.8 ms)",
        "Maglev build, M=65537, 1000 backends", build
    );
    if let Some(p) = &opts.katran {
        println!(
            "katran: {} measured in this run, same harness, same packets, same floor",
            p.display()
        );
    }
    Ok(())
}
