//! `cargo xtask bench lab`: the XDP balancer beside nginx (L4 stream proxy), HAProxy (TCP
//! mode) and the client talking to the backends directly, in one run of the whole lab
//! (`vagrant/topology.json` as network namespaces), under the same client load.
//!
//! Method and how to read the figures: docs/bench-lab.md.

mod cpu;
mod ecmp;
mod proxies;
mod report;
mod run;
mod udp;
mod wrk;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;

/// What the client's load goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    /// The client's own multipath route spreads each connection over the backends (see
    /// `ecmp`): a free, perfect balancer, and the baseline of every ratio.
    Direct,
    /// wrk's threads each talk to one backend: per-thread spreading, which batches better than
    /// any per-connection spreading can. Shown for reference.
    DirectPinned,
    /// Our XDP balancer, through the VIP (direct server return).
    Xdp,
    /// nginx `stream` proxy on the first balancer's own address.
    Nginx,
    /// HAProxy in TCP mode on the first balancer's own address.
    Haproxy,
}

impl Opt {
    pub const ALL: [Opt; 5] = [
        Opt::Direct,
        Opt::DirectPinned,
        Opt::Xdp,
        Opt::Nginx,
        Opt::Haproxy,
    ];

    /// Name in JSON keys and progress lines.
    pub fn key(self) -> &'static str {
        match self {
            Opt::Direct => "direct",
            Opt::DirectPinned => "direct_pinned",
            Opt::Xdp => "xdp",
            Opt::Nginx => "nginx",
            Opt::Haproxy => "haproxy",
        }
    }

    /// Name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Opt::Direct => "direct (client ECMP)",
            Opt::DirectPinned => "direct, thread→backend",
            Opt::Xdp => "XDP balancer (VIP)",
            Opt::Nginx => "nginx stream",
            Opt::Haproxy => "HAProxy tcp",
        }
    }

    /// Rows of the UDP table (HAProxy's says it has no UDP proxy). The UDP generator spreads
    /// its flows itself, so one direct row covers both ways of spreading.
    pub fn in_udp_table(self) -> bool {
        self != Opt::DirectPinned
    }
}

/// XDP balancer vs nginx stream vs HAProxy TCP vs direct, in the whole namespace lab: HTTP
/// requests/s and latency with wrk (keep-alive and a new connection per request), small-packet
/// UDP forwarding rate, and machine-wide CPU per request above the direct baseline.
#[derive(Debug, Parser)]
#[command(name = "lab-bench")]
pub struct Args {
    /// Rounds; every round runs every option once (order rotated), figures are medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Seconds of each wrk run (one option, one connection mode).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub duration: u64,
    /// Seconds of unrecorded keep-alive load through each option before the first round.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub warmup: u64,
    /// wrk threads; a multiple of the backend count so the direct baseline splits evenly.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// wrk connections in total (a multiple of --threads).
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub connections: u32,
    /// HTTP path requested from the backends' `app` (/ping is its cheapest endpoint).
    #[arg(long, default_value = "/ping")]
    pub path: String,
    /// wrk's per-request timeout in seconds (a slower answer counts as a timeout error).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub request_timeout: u64,
    /// Skip the UDP part.
    #[arg(long)]
    pub no_udp: bool,
    /// Seconds the UDP generator sends per run.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub udp_duration: u64,
    /// UDP flows (distinct source ports) of the generator; spread over the backends.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub udp_flows: u64,
    /// UDP payload bytes (18 makes a 64-byte Ethernet frame with its FCS).
    #[arg(long, default_value_t = 18, value_parser = clap::value_parser!(u64).range(1..=1400))]
    pub udp_payload: u64,
    /// Upper bound on datagrams per UDP run, whatever the duration.
    #[arg(long, default_value_t = 50_000_000)]
    pub udp_max_packets: u64,
    /// lbd's XDP mode on the balancers. `auto` is native on veth: the program runs on a copy
    /// of each frame and XDP_TX needs a program on the bridge port; `generic` (skb mode) needs
    /// neither, which can be cheaper in this all-veth lab (on a real NIC native wins).
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeArg,
    /// What joins the lab's hosts. `macvlan`: macvlans on one lower device, so a frame crosses
    /// one device per hop, closest to a hardware switch that costs the hosts no CPU; XDP on
    /// macvlan runs in generic mode. `bridge`: veth pairs on a Linux bridge, as in `cargo xtask
    /// lab`, where every hop through the segment costs two veth crossings and a bridge lookup.
    /// Every option runs on the same segment.
    #[arg(long, value_enum, default_value = "macvlan")]
    pub segment: SegmentArg,
    /// Print one JSON object instead of the table (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Only the final output: no progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `--xdp-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    Auto,
    Driver,
    Generic,
}

impl From<XdpModeArg> for tests::XdpMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => tests::XdpMode::Auto,
            XdpModeArg::Driver => tests::XdpMode::Driver,
            XdpModeArg::Generic => tests::XdpMode::Generic,
        }
    }
}

/// `--segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SegmentArg {
    Bridge,
    Macvlan,
}

impl From<SegmentArg> for tests::SegmentKind {
    fn from(s: SegmentArg) -> Self {
        match s {
            SegmentArg::Bridge => tests::SegmentKind::Bridge,
            SegmentArg::Macvlan => tests::SegmentKind::Macvlan,
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT/SIGTERM/SIGHUP arrived: loops stop and the lab is torn down.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Steps of the benchmark print on stderr unless --quiet.
pub fn progress(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("==> {msg}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    install_signal_handlers();
    match run::run(&args) {
        Ok(results) => {
            if args.json {
                println!("{}", results.json());
            } else {
                print!("{}", results.table());
                println!(
                    "(a shared 2-core machine is noisy: compare runs with --json, and rerun on a quiet one)"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Duration helper for whole seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
