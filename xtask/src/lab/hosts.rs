//! Where a (possibly persisted) lab keeps things, found again from its fixed name: namespaces,
//! per-host folders, the project's binaries; and `lab exec`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tests::Topology;
use tests::topology::Node;

use super::LAB;
use crate::util;

/// `vagrant/topology.json`, the one description of the hosts, for the HA mode of the lab
/// that runs (the VRRP pair when none runs).
pub fn topology() -> Result<Topology> {
    let path = util::root().join("vagrant/topology.json");
    let topo = Topology::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let ha = match std::fs::read_to_string(ha_file())
        .ok()
        .as_deref()
        .map(str::trim)
    {
        Some("bgp") => tests::HaMode::Bgp,
        _ => tests::HaMode::Vrrp,
    };
    Ok(topo.with_ha(ha)?)
}

/// Where the running lab records its HA mode (`vrrp`, `bgp`).
pub fn ha_file() -> PathBuf {
    lab_dir().join("ha")
}

/// The lab's working directory (logs, data, pid files, bpffs).
pub fn lab_dir() -> PathBuf {
    tests::netns::labs_root().join(LAB)
}

/// Namespace of host `name` (as `tests::netns` names it).
pub fn ns(name: &str) -> String {
    format!("{LAB}-{name}")
}

/// Namespace of the bridge.
pub fn bridge_ns() -> String {
    format!("{LAB}_br")
}

/// Per-host folder the provisioning scripts write to (see vagrant/provision/lib.sh).
pub fn host_dir(name: &str) -> PathBuf {
    lab_dir().join("hosts").join(name)
}

/// lbd's unix socket on a balancer.
pub fn lbd_socket(name: &str) -> PathBuf {
    host_dir(name).join("lbd.sock")
}

/// Where cargo put the release binaries.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
        .join("release")
}

pub fn lbctl() -> PathBuf {
    bin_dir().join("lbctl")
}

/// Whether lab `lab` exists (its bridge namespace marks it present).
pub fn is_up() -> Result<bool> {
    Ok(tests::netns::list_namespaces()?.contains(&bridge_ns()))
}

fn node<'t>(topo: &'t Topology, name: &str) -> Result<&'t Node> {
    topo.node(name).with_context(|| {
        let known: Vec<&str> = topo.nodes().iter().map(Node::name).collect();
        format!("no host `{name}` in the lab (hosts: {})", known.join(", "))
    })
}

/// `lab exec NODE -- CMD...`: runs CMD inside the host with the terminal attached and exits
/// with its status.
pub fn exec(name: &str, cmd: &[String]) -> Result<()> {
    let topo = topology()?;
    let node = node(&topo, name)?;
    if !is_up()? {
        bail!("the lab is not running: start it with `cargo xtask lab up`");
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let mut c = tests::exec::netns_command(&ns(node.name()), cmd);
    c.env("PATH", format!("{}:{path}", bin_dir().display()));
    if node.role() == tests::Role::Balancer {
        c.env("LBCTL_SOCKET", lbd_socket(node.name()));
    }
    let status = c
        .status()
        .with_context(|| format!("cannot run `{}` in {name}", cmd.join(" ")))?;
    std::process::exit(status.code().unwrap_or(1));
}
