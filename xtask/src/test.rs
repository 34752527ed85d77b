//! `cargo xtask test [GROUP]`: builds what the tests need, then runs them.

use anyhow::{Result, bail};
use clap::ValueEnum;

use crate::{build_ebpf, deps, disk, fuzz, lab, util, vagrant, venv};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Group {
    /// Everything below, in order.
    All,
    /// rustfmt, clippy (-D warnings) over the workspace and the eBPF crate, and no module
    /// cycles inside any crate.
    Lint,
    /// Unit tests that need no privileges (Maglev, WRR, config, pcap, packet builder).
    Unit,
    /// The XDP programs in the kernel through BPF_PROG_TEST_RUN, and the replay tool (root).
    Dataplane,
    /// lbd and lbctl: config, health checks, neighbours, API (and schemathesis against its
    /// OpenAPI document), namespace lab, hot restart (root).
    ControlPlane,
    /// VRRPv3 between lbd nodes and with keepalived (root).
    Vrrp,
    /// The backend service against real Redis and databases (and schemathesis against its
    /// OpenAPI document).
    App,
    /// The network-namespace lab helper (root).
    Lab,
    /// End-to-end: the whole lab (lbd pair, app backends, Redis, PostgreSQL) under load (root).
    E2e,
    /// The Debian packages: contents, systemd units, install and purge in a fresh root (root).
    Package,
    /// Active-active over BGP/ECMP: the BGP lab (BIRD router, three balancers) under load (root).
    Bgp,
    /// The lab as VMs (Vagrant, libvirt): boot the reduced lab (client, lb1, be1 with Redis and
    /// PostgreSQL, derived from topology.json) from the project's box, smoke test from the
    /// client VM, remove everything, also on failure (root; builds the box first, cached).
    /// `cargo xtask vagrant test --full` boots all seven hosts and adds the VRRP failover.
    Vagrant,
    /// Chaos in the lab under a mixed load, with a ledger of every request: Redis, PostgreSQL
    /// and the services link fail and return, a backend flaps, both lbd are SIGKILLed (root).
    Chaos,
    /// Every fuzz target for a short bounded time from its committed corpus (cargo-fuzz).
    Fuzz,
    /// The Prometheus rules under prometheus/: `promtool check rules`, `promtool test rules`
    /// (every alert firing and silent), and only metrics docs/metrics.md lists.
    Prometheus,
}

/// Seconds each fuzz target runs in `cargo xtask test` (`cargo xtask fuzz` runs longer).
const FUZZ_SECONDS: u64 = 10;

pub fn run(group: Group, release: bool, test_args: &[String]) -> Result<()> {
    if matches!(
        group,
        Group::All
            | Group::Dataplane
            | Group::ControlPlane
            | Group::Vrrp
            | Group::Lab
            | Group::E2e
            | Group::Package
            | Group::Bgp
            | Group::Vagrant
            | Group::Chaos
    ) && !util::is_root()
    {
        bail!(
            "`cargo xtask test {group:?}` needs root (BPF and network namespaces); run it with sudo",
        );
    }
    disk::warn_if_low();
    deps::apt_packages()?;
    if matches!(group, Group::All | Group::ControlPlane | Group::App) {
        // The API tests run it against lbd's and the app's OpenAPI documents.
        venv::schemathesis()?;
    }
    if group != Group::Prometheus {
        // promtool needs no build.
        build_ebpf::build(true)?;
    }
    if matches!(
        group,
        Group::All | Group::E2e | Group::Bgp | Group::Chaos | Group::Vagrant
    ) {
        // The end-to-end tests run the lab's release binaries (lbd, lbctl, app).
        lab::up::build()?;
    }
    if matches!(group, Group::All | Group::E2e) {
        // The dashboard test drives headless Chromium.
        deps::dashboard()?;
    }
    if matches!(group, Group::All | Group::Vagrant) {
        // The VM test boots the project's box (built once, then cached).
        vagrant::build_box(false)?;
    }
    let mut profile: Vec<&str> = if release { vec!["--release"] } else { vec![] };
    if !test_args.is_empty() {
        profile.push("--");
        profile.extend(test_args.iter().map(String::as_str));
    }
    match group {
        Group::All => {
            lint()?;
            crate::prometheus::check()?;
            util::step("running every test of the workspace");
            // The package tests need the packages (the release build is the e2e one).
            crate::package::run()?;
            util::run(util::cargo().args(["test", "--workspace"]).args(&profile))?;
            fuzz::run(None, FUZZ_SECONDS, fuzz::Build::Dev)
        }
        Group::Fuzz => fuzz::run(None, FUZZ_SECONDS, fuzz::Build::Dev),
        Group::Prometheus => crate::prometheus::check(),
        Group::Lint => lint(),
        Group::Unit => {
            util::run(
                util::cargo()
                    .args(["test", "--lib"])
                    .args(packages(&[
                        "lb-common",
                        "lb-dataplane",
                        "lb-config",
                        "lb-api",
                        "lb-vrrp",
                        "lb-bgp",
                        "lbd",
                    ]))
                    .args(&profile),
            )?;
            util::run(
                util::cargo()
                    .args(["test", "-p", "lbctl", "--bins"])
                    .args(&profile),
            )
        }
        Group::Dataplane => {
            util::run(
                util::cargo()
                    .args(["test", "-p", "lb-dataplane", "--test", "dataplane"])
                    .args(&profile),
            )?;
            config_tests(&profile)
        }
        Group::ControlPlane => {
            // lbd's tests drive the real lbctl (and the self-check test the real app) too; cargo
            // builds only the package's own binaries.
            build_bins(release, &["lbd", "lbctl", "app"])?;
            util::run(
                util::cargo()
                    .args(["test", "-p", "lbd"])
                    .args(["--test", "control_plane", "--test", "health"])
                    .args(["--test", "neighbours"])
                    .args(&profile),
            )?;
            util::run(
                util::cargo()
                    .args(["test", "-p", "lbctl", "--test", "lbctl"])
                    .args(&profile),
            )?;
            config_tests(&profile)
        }
        Group::Vrrp => {
            build_bins(release, &["lbd", "lbctl"])?;
            util::run(
                util::cargo()
                    .args(["test", "-p", "lbd", "--test", "vrrp"])
                    .args(&profile),
            )
        }
        Group::App => util::run(
            util::cargo()
                .args(["test", "-p", "app", "-p", "app-redis"])
                .args(&profile),
        ),
        Group::Lab => util::run(
            util::cargo()
                .args(["test", "-p", "tests", "--lib", "--test", "lab"])
                .args(["--test", "topology_file", "--test", "vagrant"])
                .args(&profile),
        ),
        // The chaos scenarios live in the e2e binary (they share its lab and client); each
        // group runs its own half of it.
        Group::E2e => util::run(
            util::cargo()
                .args(["test", "-p", "tests", "--test", "e2e"])
                .args(with_filter(&profile, &["--skip", CHAOS])),
        ),
        Group::Chaos => util::run(
            util::cargo()
                .args(["test", "-p", "tests", "--test", "e2e"])
                .args(with_filter(&profile, &[CHAOS])),
        ),
        Group::Package => {
            crate::package::run()?;
            util::run(
                util::cargo()
                    .args(["test", "-p", "tests", "--test", "package"])
                    .args(&profile),
            )
        }
        Group::Vagrant => util::run(
            util::cargo()
                .args(["test", "-p", "tests", "--test", "vagrant_lab"])
                .args(with_filter(&profile, &["--nocapture"])),
        ),
        Group::Bgp => util::run(
            util::cargo()
                .args(["test", "-p", "tests", "--test", "bgp"])
                .args(&profile),
        ),
    }
}

/// `-p NAME` for each package.
fn packages<'a>(names: &[&'a str]) -> Vec<&'a str> {
    names.iter().flat_map(|n| ["-p", n]).collect()
}

/// Builds the binaries of `packages` in the profile the tests run in.
fn build_bins(release: bool, pkgs: &[&str]) -> Result<()> {
    let mut cmd = util::cargo();
    cmd.arg("build").args(packages(pkgs)).arg("--bins");
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)
}

fn config_tests(profile: &[&str]) -> Result<()> {
    util::run(
        util::cargo()
            .args(["test", "-p", "lb-config", "--test", "config"])
            .args(profile),
    )
}

/// Test-name prefix of the chaos scenarios in the e2e binary.
const CHAOS: &str = "chaos::";

/// `profile` (cargo's arguments, then possibly `--` and the test binary's) with `filter`
/// added to the test binary's arguments.
fn with_filter<'a>(profile: &[&'a str], filter: &[&'a str]) -> Vec<&'a str> {
    let mut out = profile.to_vec();
    if !out.contains(&"--") {
        out.push("--");
    }
    out.extend_from_slice(filter);
    out
}

fn lint() -> Result<()> {
    util::step("module cycles");
    crate::cycles::check(&util::root())?;
    util::step("rustfmt");
    util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
    util::run(util::nightly_cargo().args(["fmt", "--check"]))?;
    util::step("clippy");
    util::run(util::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::run(util::nightly_cargo().args(["clippy", "--release", "--", "-D", "warnings"]))
}
