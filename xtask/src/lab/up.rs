//! Building, starting and removing the lab.

use anyhow::{Context, Result, bail};
use tests::{Lab, Role, System, SystemOptions};

use super::{LAB, hosts, view};
use crate::{build_ebpf, deps, util};

/// Installs the packages and builds the eBPF object and the release binaries the lab runs
/// (also used by `cargo xtask test e2e` and `cargo xtask bench lab`).
pub fn build() -> Result<()> {
    deps::apt_packages()?;
    build_ebpf::build(true)?;
    util::step("building lbd, lbctl and app (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "lbd",
        "-p",
        "lbctl",
        "-p",
        "app",
        // `--bin` selects among every package given: name each binary, or only app is built.
        "--bin",
        "lbd",
        "--bin",
        "lbctl",
        "--bin",
        "app",
    ]))
}

fn require_root() -> Result<()> {
    if !util::is_root() {
        bail!("the lab needs root (network namespaces, XDP): run it with sudo or as root");
    }
    Ok(())
}

/// Creates and provisions the lab (see `tests::system`); on any error the half-built lab is
/// dropped, which kills what runs inside and deletes every namespace.
fn start(build_first: bool, ha: super::Ha) -> Result<Lab> {
    require_root()?;
    if build_first {
        build()?;
    }
    let mut opts = SystemOptions::new(util::root(), hosts::bin_dir());
    opts.name = Some(LAB.to_string());
    opts.progress = true;
    let topo = System::topology_for(&opts, ha.mode())?;
    let system = System::start(&topo, opts).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(logs in {}; a lab already running? `cargo xtask lab down` removes it)",
            lab_dir_hint()
        )
    })?;
    // `lab exec` and `lab status` read the hosts of the lab that runs.
    std::fs::write(hosts::ha_file(), ha.mode().as_str())?;
    Ok(system.into_lab())
}

fn lab_dir_hint() -> String {
    hosts::lab_dir().join("hosts").display().to_string()
}

fn print_usage(lab: &Lab) {
    let vip = lab.topology().vip();
    let url = format!("http://{}:{}", vip.ipv4(), vip.port());
    let x = "cargo xtask lab exec client --";
    println!();
    println!(
        "Lab up. VIP {} / [{}] port {}",
        vip.ipv4(),
        vip.ipv6(),
        vip.port()
    );
    println!("  {x} curl -s {url}/ping");
    println!(
        "  {x} curl -s 'http://[{}]:{}/ping'",
        vip.ipv6(),
        vip.port()
    );
    println!(
        "  {x} curl -s -H 'content-type: application/json' -d '{{\"name\":\"Ann\",\"email\":\"ann@example.com\"}}' {url}/users"
    );
    println!("  {x} curl -s {url}/users/1");
    println!("  {x} wrk -t2 -c16 -d10s {url}/ping");
    println!("  cargo xtask lab exec lb1 -- lbctl health");
    if lab.topology().ha() == tests::HaMode::Bgp {
        println!("  cargo xtask lab exec lb1 -- lbctl bgp");
        println!(
            "  cargo xtask lab exec router -- ip route show {}",
            vip.ipv4()
        );
        println!(
            "  cargo xtask lab exec router -- ip -6 route show {}",
            vip.ipv6()
        );
    }
    println!("  cargo xtask lab status");
    if let Some(svc) = lab
        .topology()
        .nodes()
        .iter()
        .find(|n| n.services().contains(&tests::topology::Service::Prometheus))
    {
        let prom = format!("http://{}:9090", svc.ipv4());
        println!("Prometheus: {prom} (inside the lab; rules and alerts: docs/prometheus.md)");
        println!(
            "  cargo xtask lab exec {} -- curl -s {prom}/api/v1/alerts",
            svc.name()
        );
        println!(
            "  cargo xtask lab exec {} -- curl -s '{prom}/api/v1/query?query=lb_backend_up'",
            svc.name()
        );
    }
    println!(
        "Logs and data: {} (one folder per host)",
        hosts::lab_dir().join("hosts").display()
    );
}

/// `lab up`: start and leave running.
pub fn up(build_first: bool, ha: super::Ha) -> Result<()> {
    let lab = start(build_first, ha)?;
    print_usage(&lab);
    println!("  cargo xtask lab down          # remove it");
    lab.persist()?;
    Ok(())
}

/// `lab`: start, live view until Ctrl-C, tear down (also when the view fails).
pub fn interactive(build_first: bool, ha: super::Ha) -> Result<()> {
    let lab = start(build_first, ha)?;
    print_usage(&lab);
    println!("Live traffic per backend below; Ctrl-C stops and removes the lab.");
    let lb = lab
        .hosts_with_role(Role::Balancer)
        .next()
        .map(|h| h.name().to_string())
        .context("the topology has no balancer")?;
    let shown = view::watch(&lb);
    util::step("tearing the lab down");
    lab.teardown()?;
    eprintln!("    done: no namespace left");
    shown
}

/// `lab down`.
pub fn down() -> Result<()> {
    require_root()?;
    let removed = tests::netns::destroy(LAB)?;
    if removed.is_empty() {
        eprintln!("no lab was running");
    } else {
        eprintln!(
            "removed {} namespaces: {}",
            removed.len(),
            removed.join(" ")
        );
    }
    Ok(())
}
