//! `vagrant/Vagrantfile` must describe the same hosts as `vagrant/topology.json`, and the
//! provisioning scripts it uses must also work inside the namespace lab.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use tests::exec::{run, which};
use tests::topology::{Ipv4Net, Role};
use tests::{Lab, Topology};

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

/// What the Vagrantfile defines (list-hosts.rb), with binaries in `bins`, the token made
/// in `state`, and the topology file `topology` (LAB_TOPOLOGY) if given.
fn listed(dir: &Path, bins: &Path, state: &Path, topology: Option<&Path>) -> Result<Value> {
    let mut cmd = ruby()?;
    cmd.arg(dir.join("list-hosts.rb"))
        .env("LAB_HOST_BIN_DIR", bins)
        .env("LAB_STATE_DIR", state);
    if let Some(t) = topology {
        cmd.env("LAB_TOPOLOGY", t);
    }
    Ok(serde_json::from_str(&run(&mut cmd)?)?)
}

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("lbt-vagrant-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn vagrantfile_lists_the_topology_hosts() -> Result<()> {
    let dir = vagrant_dir()?;
    check_listed(&Topology::load(dir.join("topology.json"))?, false)
}

/// The reduced lab CI boots (LAB_TOPOLOGY): its backend also provisions the services.
#[test]
fn vagrantfile_lists_the_reduced_lab_from_lab_topology() -> Result<()> {
    let dir = vagrant_dir()?;
    check_listed(&Topology::load(dir.join("topology.json"))?.reduced()?, true)
}

/// Compares what the Vagrantfile defines with `topo` (given to it in a file when `as_file`).
fn check_listed(topo: &Topology, as_file: bool) -> Result<()> {
    let dir = vagrant_dir()?;
    let scratch = Scratch::new(if as_file { "list-file" } else { "list" })?;
    let bins = scratch.0.join("bin");
    std::fs::create_dir_all(&bins)?;
    for bin in ["lbd", "lbctl", "app"] {
        std::fs::write(bins.join(bin), "")?;
    }
    let state = scratch.0.join("state");
    let file = scratch.0.join("topology.json");
    if as_file {
        std::fs::write(&file, topo.to_json())?;
    }
    let listed = listed(&dir, &bins, &state, as_file.then_some(file.as_path()))?;
    let token = std::fs::read_to_string(state.join("token"))
        .context("the Vagrantfile makes the API token in LAB_STATE_DIR")?;
    ensure!(token.len() >= 16, "token {token:?}");
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
        ensure!(
            nets.len() == 1,
            "{name}: one NIC on the segment, got {nets:?}"
        );
        let net = &nets[0];
        ensure!(net["type"] == "private_network", "{name}: {net}");
        ensure!(
            net["ip"] == node.ipv4().to_string().as_str(),
            "{name}: ip {} vs {}",
            net["ip"],
            node.ipv4()
        );
        ensure!(
            net["netmask"] == netmask(topo.segment().ipv4()).as_str(),
            "{name}: {net}"
        );
        ensure!(
            net["virtualbox__intnet"] == topo.segment().bridge(),
            "{name}: {net}"
        );
        // libvirt: one isolated network (no host address on the lab segment) carrying IPv6.
        ensure!(
            net["libvirt__network_name"] == format!("lb-xdp-{}", topo.segment().bridge()).as_str()
                && net["libvirt__forward_mode"] == "veryisolated"
                && net["libvirt__dhcp_enabled"] == false
                && net["libvirt__guest_ipv6"] == "yes",
            "{name}: {net}"
        );
        let folders = host["synced_folders"]
            .as_array()
            .context("synced_folders")?;
        ensure!(
            !folders.is_empty() && folders.iter().all(|f| f["disabled"] == true),
            "{name}: nothing may depend on a synced folder: {folders:?}"
        );

        let provs = host["provision"].as_array().context("provision")?;
        // What reaches the VM through the file provisioner: the scripts, the role's binaries,
        // the token where the role needs it.
        let uploads: Vec<(&str, &str)> = provs
            .iter()
            .filter(|p| p["type"] == "file")
            .filter_map(|p| Some((p["source"].as_str()?, p["destination"].as_str()?)))
            .collect();
        let mut want_uploads = vec![(
            dir.join("provision").display().to_string(),
            "/home/vagrant/lab-upload/provision".to_string(),
        )];
        let bins_of_role: &[&str] = match node.role() {
            Role::Balancer => &["lbd", "lbctl"],
            Role::Backend => &["app"],
            _ => &[],
        };
        for bin in bins_of_role {
            want_uploads.push((
                bins.join(bin).display().to_string(),
                format!("/home/vagrant/lab-upload/bin/{bin}"),
            ));
        }
        if matches!(node.role(), Role::Balancer | Role::Backend) {
            want_uploads.push((
                state.join("token").display().to_string(),
                "/home/vagrant/lab-upload/token".to_string(),
            ));
        }
        let got_uploads: Vec<(String, String)> = uploads
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        ensure!(
            got_uploads == want_uploads,
            "{name}: uploads {got_uploads:#?}, want {want_uploads:#?}"
        );
        let provs: Vec<&Value> = provs.iter().filter(|p| p["path"].is_string()).collect();
        let paths: Vec<&str> = provs.iter().filter_map(|p| p["path"].as_str()).collect();
        let want: Vec<PathBuf> = node
            .provision_scripts()
            .iter()
            .map(|s| dir.join("provision").join(s))
            .collect();
        ensure!(
            paths.iter().map(PathBuf::from).eq(want.iter().cloned()),
            "{name}: provisioners {paths:?}, want {want:?}"
        );
        let mut env: BTreeMap<String, String> = topo.provision_env(node).into_iter().collect();
        env.insert("LAB_MODE".into(), "vagrant".into());
        for p in &provs {
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

/// Every package a provisioning script asks for (`packages a b c`) is in the box's list, so
/// provisioning a VM made from the box never runs apt.
#[test]
fn the_box_has_every_package_the_scripts_ask_for() -> Result<()> {
    let dir = vagrant_dir()?;
    let listed = std::fs::read_to_string(dir.join("box/packages"))?;
    let in_box: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut asked = Vec::new();
    for entry in std::fs::read_dir(dir.join("provision"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines().map(str::trim) {
            if let Some(list) = line.strip_prefix("packages ") {
                asked.extend(
                    list.split_whitespace()
                        .map(|p| (p.to_string(), path.clone())),
                );
            }
        }
    }
    ensure!(asked.len() >= 10, "found only {asked:?}");
    let missing: Vec<String> = asked
        .iter()
        .filter(|(p, _)| !in_box.contains(&p.as_str()))
        .map(|(p, f)| format!("{p} ({})", f.display()))
        .collect();
    ensure!(
        missing.is_empty(),
        "packages the scripts install but vagrant/box/packages lacks: {missing:?}"
    );
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

/// `LAB_HA=bgp`: the Vagrantfile defines the BGP lab's hosts (router, client on the edge, a
/// third balancer) with the variables the namespace lab gives the same scripts.
#[test]
fn vagrantfile_lists_the_bgp_lab() -> Result<()> {
    let dir = vagrant_dir()?;
    let topo = Topology::load(dir.join("topology.json"))?.with_ha(tests::HaMode::Bgp)?;
    let scratch = Scratch::new("bgp")?;
    let bins = scratch.0.join("bin");
    std::fs::create_dir_all(&bins)?;
    for bin in ["lbd", "lbctl", "app"] {
        std::fs::write(bins.join(bin), "")?;
    }
    let mut cmd = ruby()?;
    cmd.arg(dir.join("list-hosts.rb"))
        .env("LAB_HOST_BIN_DIR", &bins)
        .env("LAB_STATE_DIR", scratch.0.join("state"))
        .env("LAB_HA", "bgp");
    let listed: Value = serde_json::from_str(&run(&mut cmd)?)?;
    let hosts = listed["hosts"].as_array().context("hosts")?;
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    let want: Vec<&str> = topo.nodes().iter().map(|n| n.name()).collect();
    ensure!(
        names == want,
        "Vagrantfile hosts {names:?}, BGP lab {want:?}"
    );
    for (host, node) in hosts.iter().zip(topo.nodes()) {
        let name = node.name();
        let nets = host["networks"].as_array().context("networks")?;
        let want_nics = 1 + usize::from(node.edge_addrs().is_some());
        ensure!(
            nets.len() == want_nics,
            "{name}: {want_nics} NICs, got {nets:?}"
        );
        let mut env: BTreeMap<String, String> = topo.provision_env(node).into_iter().collect();
        env.insert("LAB_MODE".into(), "vagrant".into());
        // The scripts (a shell provisioner with a path); inline steps carry no environment.
        for p in host["provision"].as_array().context("provision")? {
            if p["type"] != "shell" || !p["path"].is_string() {
                continue;
            }
            let got: BTreeMap<String, String> = serde_json::from_value(p["env"].clone())?;
            ensure!(
                got == env,
                "{name}: Vagrantfile env {got:#?}\nRust env {env:#?}"
            );
        }
    }
    Ok(())
}
