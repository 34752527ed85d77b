//! `vagrant/Vagrantfile` must describe the same hosts as `vagrant/topology.json`, and the
//! provisioning scripts it uses must also work inside the namespace lab.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use tests::exec::{run, which};
use tests::topology::{Ipv4Net, Role};
use tests::{HaMode, Lab, Topology};

const VAGRANT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../vagrant");

fn vagrant_dir() -> Result<PathBuf> {
    Path::new(VAGRANT_DIR).canonicalize().context(VAGRANT_DIR)
}

fn ruby() -> Result<Command> {
    let ruby = which("ruby").ok_or_else(|| anyhow!("ruby missing (apt-get install ruby)"))?;
    Ok(Command::new(ruby))
}

fn netmask(net: Ipv4Net) -> String {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(net.prefix_len()))
        .unwrap_or(0);
    std::net::Ipv4Addr::from(bits).to_string()
}

#[test]
fn vagrantfile_is_valid_ruby() -> Result<()> {
    let dir = vagrant_dir()?;
    for file in ["Vagrantfile", "list-hosts.rb"] {
        let out = run(ruby()?.arg("-c").arg(dir.join(file)))?;
        ensure!(out.contains("Syntax OK"), "{file}: {out}");
    }
    Ok(())
}

#[test]
fn vagrantfile_lists_the_topology_hosts() -> Result<()> {
    for ha in [HaMode::Vrrp, HaMode::Bgp] {
        lists_the_hosts(ha).with_context(|| format!("LAB_HA={}", ha.as_str()))?;
    }
    Ok(())
}

fn lists_the_hosts(ha: HaMode) -> Result<()> {
    let dir = vagrant_dir()?;
    let topo = Topology::load(dir.join("topology.json"))?.with_ha(ha)?;
    let listed: Value = serde_json::from_str(&run(ruby()?
        .env("LAB_HA", ha.as_str())
        .arg(dir.join("list-hosts.rb")))?)?;
    ensure!(
        listed["box"] == "debian/bookworm64",
        "box: {}",
        listed["box"]
    );
    let hosts = listed["hosts"].as_array().context("hosts is not a list")?;
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    let expected: Vec<&str> = topo.nodes().iter().map(|n| n.name()).collect();
    ensure!(
        names == expected,
        "Vagrantfile hosts {names:?}, topology {expected:?}"
    );
    for (host, node) in hosts.iter().zip(topo.nodes()) {
        let name = node.name();
        ensure!(
            host["box"] == "debian/bookworm64",
            "{name}: box {}",
            host["box"]
        );
        ensure!(
            host["hostname"] == name,
            "{name}: hostname {}",
            host["hostname"]
        );
        let nets = host["networks"].as_array().context("networks")?;
        // A router has a second NIC on the edge segment.
        let want_nics = 1 + usize::from(node.edge_addrs().is_some());
        ensure!(
            nets.len() == want_nics,
            "{name}: {want_nics} NICs, got {nets:?}"
        );
        let seg = match topo.edge() {
            Some(edge) if node.on_edge() => edge,
            _ => topo.segment(),
        };
        let net = &nets[0];
        ensure!(net["type"] == "private_network", "{name}: {net}");
        ensure!(
            net["ip"] == node.ipv4().to_string().as_str(),
            "{name}: ip {} vs {}",
            net["ip"],
            node.ipv4()
        );
        ensure!(
            net["netmask"] == netmask(seg.ipv4()).as_str(),
            "{name}: {net}"
        );
        ensure!(
            net["virtualbox__intnet"] == seg.bridge(),
            "{name}: {net}"
        );
        if let (Some((edge4, _)), Some(edge)) = (node.edge_addrs(), topo.edge()) {
            ensure!(
                nets[1]["ip"] == edge4.to_string().as_str()
                    && nets[1]["virtualbox__intnet"] == edge.bridge(),
                "{name}: edge NIC {}",
                nets[1]
            );
        }

        let provs = host["provision"].as_array().context("provision")?;
        let paths: Vec<&str> = provs.iter().filter_map(|p| p["path"].as_str()).collect();
        let want = [
            dir.join("provision/common.sh"),
            dir.join(format!("provision/{}.sh", node.role())),
        ];
        ensure!(
            paths.iter().map(PathBuf::from).eq(want.iter().cloned()),
            "{name}: provisioners {paths:?}, want {want:?}"
        );
        let mut env: BTreeMap<String, String> = topo.provision_env(node).into_iter().collect();
        env.insert("LAB_MODE".into(), "vagrant".into());
        for p in provs {
            ensure!(p["type"] == "shell", "{name}: {p}");
            let got: BTreeMap<String, String> = serde_json::from_value(p["env"].clone())?;
            ensure!(
                got == env,
                "{name}: Vagrantfile env {got:#?}\nRust env {env:#?}"
            );
        }
    }
    Ok(())
}

#[test]
fn provision_scripts_are_valid_sh() -> Result<()> {
    let dir = vagrant_dir()?.join("provision");
    for role in [
        Role::Client,
        Role::Balancer,
        Role::Backend,
        Role::Services,
        Role::Router,
    ] {
        ensure!(
            dir.join(format!("{role}.sh")).is_file(),
            "no provision/{role}.sh"
        );
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sh") {
            run(Command::new("sh").arg("-n").arg(&path))?;
            checked += 1;
        }
    }
    ensure!(checked >= 5, "only {checked} scripts in {}", dir.display());
    Ok(())
}

/// The namespace lab runs the same scripts (LAB_MODE=netns) with the same variables.
#[test]
fn provision_scripts_run_inside_the_namespace_lab() -> Result<()> {
    let dir = vagrant_dir()?.join("provision");
    let lab = Lab::create(&Topology::lab()?)?;
    for host in lab.hosts() {
        for script in ["common.sh".to_string(), format!("{}.sh", host.role())] {
            let mut cmd = host.command(["sh".as_ref(), dir.join(&script).as_os_str()]);
            cmd.envs(lab.provision_env(host));
            let out = match run(&mut cmd) {
                Ok(out) => out,
                Err(e) => bail!("{} {script}: {e}", host.name()),
            };
            ensure!(
                out.contains(&format!("[{}/", host.name())),
                "{} {script}: {out}",
                host.name()
            );
        }
    }
    Ok(())
}
