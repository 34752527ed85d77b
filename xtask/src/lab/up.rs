//! Building, starting and removing the lab.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::{Host, Lab, Role};

use super::{LAB, hosts, view};
use crate::{build_ebpf, deps, util};

/// Order in which roles are provisioned: what a role connects to is up before it starts.
const ROLE_ORDER: [Role; 4] = [Role::Services, Role::Balancer, Role::Backend, Role::Client];

/// How long every backend may take to register and turn healthy on the first balancer.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

fn build() -> Result<()> {
    deps::apt_packages()?;
    build_ebpf::build(true)?;
    util::step("building lbd, lbctl and app (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "lb-userspace",
        "--bins",
        "-p",
        "app",
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

/// Creates and provisions the lab; on any error the returned `Lab` is dropped, which kills
/// what runs inside and deletes every namespace.
fn start(build_first: bool) -> Result<Lab> {
    require_root()?;
    if build_first {
        build()?;
    }
    for bin in ["lbd", "lbctl", "app"] {
        let p = hosts::bin_dir().join(bin);
        if !p.is_file() {
            bail!(
                "{} is missing: run without --no-build to build it",
                p.display()
            );
        }
    }
    let topo = hosts::topology()?;
    util::step(&format!(
        "creating {} hosts as network namespaces `{LAB}-*` around bridge {}",
        topo.nodes().len(),
        topo.segment().bridge()
    ));
    let lab = Lab::builder(&topo).named(LAB).build().map_err(|e| {
        anyhow::anyhow!("{e}\n(a lab is already running? `cargo xtask lab down` removes it)")
    })?;
    let bpffs = lab.bpffs()?;
    attach_bridge_programs(&lab, &bpffs)?;
    for role in ROLE_ORDER {
        for host in lab.hosts_with_role(role) {
            provision(&lab, host, &bpffs)?;
        }
    }
    wait_healthy(&lab)?;
    Ok(lab)
}

/// XDP_TX from a balancer's eth0 is dropped unless the bridge-side end of its veth runs an XDP
/// program (platform notes): attach `xdp_pass` there, pinned so it outlives this process.
fn attach_bridge_programs(lab: &Lab, bpffs: &Path) -> Result<()> {
    let pins = bpffs.join("bridge");
    for host in lab.hosts_with_role(Role::Balancer) {
        util::step(&format!(
            "xdp_pass on bridge port {} (peer of {}/eth0)",
            host.bridge_port(),
            host.name()
        ));
        let mut c = tests::exec::netns_command(lab.bridge_ns(), [hosts::lbctl()]);
        c.args(["xdp", "attach", "--program", "pass", "--iface"])
            .arg(host.bridge_port())
            .arg("--pin-dir")
            .arg(&pins);
        tests::exec::run(&mut c)?;
    }
    Ok(())
}

/// Runs common.sh then ROLE.sh inside the host, with the variables of vagrant/provision/lib.sh.
fn provision(lab: &Lab, host: &Host, bpffs: &Path) -> Result<()> {
    let dir = util::root().join("vagrant/provision");
    let started = Instant::now();
    util::step(&format!("provisioning {} ({})", host.name(), host.role()));
    for script in ["common.sh".to_string(), format!("{}.sh", host.role())] {
        let mut c = host.command(["sh".as_ref(), dir.join(&script).as_os_str()]);
        c.envs(lab.provision_env(host))
            .env("LAB_START", "1")
            .env("LAB_BIN_DIR", hosts::bin_dir())
            .env("LAB_TOKEN_FILE", hosts::token_file())
            .env("LAB_PIN_DIR", bpffs.join(host.name()));
        // Bounded by tests::exec's default timeout; daemons are left in the background.
        let out = tests::exec::run(&mut c)
            .with_context(|| format!("{} {script} (logs in {})", host.name(), lab_dir_hint()))?;
        for line in out.lines().filter(|l| !l.contains("/common]")) {
            eprintln!("    {line}");
        }
    }
    eprintln!(
        "    {} ready in {:.1} s",
        host.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn lab_dir_hint() -> String {
    hosts::lab_dir().join("hosts").display().to_string()
}

/// Waits (bounded) until the first balancer sees every backend healthy, i.e. each registered
/// itself and passes lbd's health check.
fn wait_healthy(lab: &Lab) -> Result<()> {
    let backends = lab.hosts_with_role(Role::Backend).count();
    let Some(lb) = lab.hosts_with_role(Role::Balancer).next() else {
        return Ok(());
    };
    util::step(&format!(
        "waiting for {backends} backends to register and turn healthy on {}",
        lb.name()
    ));
    let deadline = Instant::now() + HEALTHY_TIMEOUT;
    loop {
        let healthy = view::healthy_backends(lb.name()).unwrap_or(0);
        if healthy >= backends {
            eprintln!("    {healthy}/{backends} healthy");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "only {healthy} of {backends} backends healthy on {} after {} s; logs in {}",
                lb.name(),
                HEALTHY_TIMEOUT.as_secs(),
                lab_dir_hint()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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
        "  {x} curl -s -H 'content-type: application/json' -d '{{\"name\":\"Ann\",\"email\":\"ann@example.com\"}}' {url}/users"
    );
    println!("  {x} curl -s {url}/users/1");
    println!("  {x} wrk -t2 -c16 -d10s {url}/ping");
    println!("  cargo xtask lab exec lb1 -- lbctl health");
    println!("  cargo xtask lab status");
    println!(
        "Logs and data: {} (one folder per host)",
        hosts::lab_dir().join("hosts").display()
    );
}

/// `lab up`: start and leave running.
pub fn up(build_first: bool) -> Result<()> {
    let lab = start(build_first)?;
    print_usage(&lab);
    println!("  cargo xtask lab down          # remove it");
    lab.persist()?;
    Ok(())
}

/// `lab`: start, live view until Ctrl-C, tear down (also when the view fails).
pub fn interactive(build_first: bool) -> Result<()> {
    let lab = start(build_first)?;
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
