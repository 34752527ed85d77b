//! `cargo xtask bench WHAT`: each benchmark is a release binary of the crate it measures.

use anyhow::Result;
use clap::ValueEnum;

use crate::{build_ebpf, deps, lab, util};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// ns/packet of every XDP path (BPF_PROG_TEST_RUN) and Maglev build time.
    Dataplane,
    /// Backend-down reaction time in a namespace lab, and table recompute/swap with 1,000 backends.
    ControlPlane,
    /// Client-visible gap when the VRRP master dies, lbd beside keepalived (1 s and 100 ms).
    Failover,
    /// An active balancer dies: BGP/ECMP (three active) beside VRRP, same topology and clients.
    Ha,
    /// The backend service: /ping, L1, L2 and database reads, beside the seed's Gin service
    /// and redis-benchmark GET (`-- --allocators system,jemalloc,mimalloc` for the allocator study).
    App,
    /// Queue throughput with 1, 2 and 4 workers on Redis Streams, RabbitMQ and BullMQ, beside
    /// the raw broker loops (`-- --redis cluster`: on Redis Clusters of 1, 2 and 3 masters
    /// beside one server).
    Queue,
    /// The whole lab: XDP balancer vs nginx stream vs HAProxy TCP vs direct (wrk, UDP pps, CPU).
    Lab,
    /// The lab under a mixed load for `--minutes N`: p99 over time, memory of lbd and each app,
    /// connection table, Redis memory, dead letters (not part of CI).
    Soak,
}

pub fn run(what: What, args: &[String]) -> Result<()> {
    deps::apt_packages()?;
    let (package, bin, pre): (&str, &str, &[&str]) = match what {
        What::Dataplane => {
            build_ebpf::build(true)?;
            ("lb-bench", "lb-bench", &["dataplane"])
        }
        What::ControlPlane => return cargo_bench("control_plane", args),
        What::Failover => return cargo_bench("failover", args),
        What::Ha => {
            lab::up::build()?;
            return util::run(
                util::cargo()
                    .args(["bench", "--quiet", "-p", "tests", "--bench", "ha", "--"])
                    .args(args),
            );
        }
        What::App => {
            deps::apt_install(deps::APP_BENCH_PACKAGES)?;
            // The bench runs the shipped binary, on each allocator it measures.
            util::run(util::cargo().args(["build", "--release", "-p", "app", "--bin", "app"]))?;
            // The `axum_ping` row's server.
            util::run(util::cargo().args([
                "build",
                "--release",
                "-p",
                "app-bench",
                "--bin",
                "axum-floor",
            ]))?;
            ("app-bench", "app-bench", &[])
        }
        What::Queue => {
            deps::npm_ci(&util::root().join("app/bench/peers/bullmq"))?;
            ("app-bench", "queue-bench", &[])
        }
        What::Lab => {
            lab::up::build()?;
            ("tests", "lab-bench", &[])
        }
        What::Soak => {
            lab::up::build()?;
            ("tests", "soak", &[])
        }
    };
    util::run(
        util::cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "-p",
                package,
                "--bin",
                bin,
                "--",
            ])
            .args(pre)
            .args(args),
    )
}

/// A `harness = false` bench target of lb-bench (they load the eBPF object and run the release
/// `lbd` and `lbctl`).
fn cargo_bench(target: &str, args: &[String]) -> Result<()> {
    build_ebpf::build(true)?;
    util::run(util::cargo().args(["build", "--release", "-p", "lbd", "-p", "lbctl"]))?;
    util::run(
        util::cargo()
            .args([
                "bench", "--quiet", "-p", "lb-bench", "--bench", target, "--",
            ])
            .args(args),
    )
}
