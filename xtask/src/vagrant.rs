//! `cargo xtask vagrant`: the lab as virtual machines (vagrant/Vagrantfile with libvirt): the
//! box, a lab left running (`up`, `status`, `smoke`, `down`), and a test lab booted, smoke-tested
//! and removed in one go (`test`). The VM work itself is `tests::vagrant`.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tests::vagrant::{self as vm, Accel, BoxImage, Hosts, LabName, VmLab, VmOptions};

use crate::{deps, lab, util};

#[derive(Args)]
#[command(after_help = "\
The lab of vagrant/topology.json as VMs (libvirt, QEMU; KVM when it works, else emulation).
Needs root. Try:
  cargo xtask vagrant box        # build the Debian 12 box (cached; a second run is instant)
  cargo xtask vagrant up         # boot and provision every host, leave them running
  cd vagrant && vagrant ssh client -c 'curl -s http://10.77.0.100/ping'
  cargo xtask vagrant smoke      # the smoke test against that lab (powers lb1 off)
  cargo xtask vagrant down
  cargo xtask vagrant test       # reduced lab of its own (client, lb1, be1+services): boot,
                                 # smoke test, remove (what CI runs)
  cargo xtask vagrant test --full   # all seven hosts, with the VRRP failover")]
pub struct VagrantArgs {
    #[command(subcommand)]
    cmd: VagrantCmd,
}

#[derive(Args, Clone)]
struct BootArgs {
    /// Hosts to boot, comma-separated (default: every host of topology.json).
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// `kvm` or `tcg` (software emulation); default: probe whether KVM really runs a kernel.
    #[arg(long, value_parser = ["kvm", "tcg"])]
    accel: Option<String>,
    /// Skip installing packages and building (use the box and binaries already built).
    #[arg(long)]
    no_build: bool,
}

#[derive(Subcommand)]
enum VagrantCmd {
    /// Build the lab's Debian 12 box for libvirt with mmdebstrap (from Debian's packages alone,
    /// the lab's packages preinstalled), cached by its inputs.
    Box {
        /// Build again even when the cache has this box.
        #[arg(long)]
        rebuild: bool,
    },
    /// Build, boot and provision the lab (services, balancers, backends, client in that order)
    /// and leave it running.
    Up(BootArgs),
    /// Remove the lab of `up`: VMs, volumes, networks, pool, and the libvirt daemons it started.
    Down,
    /// The lab of `up`: its hosts and Vagrant's view of them.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The smoke test against the lab of `up` (it powers the VRRP master off).
    Smoke {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A lab of its own (unique names): boot, smoke test, remove everything, also on failure.
    /// Boots the reduced lab CI runs (client, lb1, be1 with Redis and PostgreSQL, derived from
    /// topology.json) unless --full or --hosts.
    Test {
        #[command(flatten)]
        boot: BootArgs,
        /// Every host of topology.json (two balancers, three backends, services, client): adds
        /// the VRRP failover check.
        #[arg(long, conflicts_with = "hosts")]
        full: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: VagrantArgs) -> Result<()> {
    match args.cmd {
        VagrantCmd::Box { rebuild } => build_box(rebuild).map(|_| ()),
        VagrantCmd::Up(boot) => {
            let hosts = named_or(&boot, Hosts::All);
            up(boot, hosts)
        }
        VagrantCmd::Down => down(),
        VagrantCmd::Status { json } => status(json),
        VagrantCmd::Smoke { json } => smoke(json),
        VagrantCmd::Test { boot, full, json } => {
            let hosts = named_or(&boot, if full { Hosts::All } else { Hosts::Reduced });
            test(boot, hosts, json)
        }
    }
}

/// The hosts of `--hosts`, else `default`.
fn named_or(boot: &BootArgs, default: Hosts) -> Hosts {
    if boot.hosts.is_empty() {
        default
    } else {
        Hosts::Named(boot.hosts.clone())
    }
}

fn require_root() -> Result<()> {
    if !util::is_root() {
        bail!("the VM lab needs root (libvirt's system connection, mmdebstrap): run it as root");
    }
    Ok(())
}

/// Builds the box unless the cache has it; returns it.
pub fn build_box(rebuild: bool) -> Result<BoxImage> {
    require_root()?;
    deps::vm_packages()?;
    let image = BoxImage::for_repo(&util::root())?;
    if image.is_built() && !rebuild {
        eprintln!(
            "box {} cached: {} (key {} from vagrant/box/*)",
            image.name(),
            image.file().display(),
            image.key
        );
        return Ok(image);
    }
    util::step(&format!(
        "building the box {} (mmdebstrap; minutes)",
        image.name()
    ));
    let t = Instant::now();
    std::fs::create_dir_all(&image.dir)
        .with_context(|| format!("creating {}", image.dir.display()))?;
    util::run(
        Command::new("sh")
            .arg(util::root().join("vagrant/box/build.sh"))
            .arg(image.file()),
    )
    .with_context(|| format!("building {}", image.file().display()))?;
    // Vagrant keeps its own copy of a box by name: drop a stale one of the same inputs.
    image.forget()?;
    eprintln!(
        "    built in {:.0} s: {}",
        t.elapsed().as_secs_f64(),
        image.file().display()
    );
    Ok(image)
}

fn options(boot: &BootArgs, hosts: Hosts, name: LabName) -> Result<VmOptions> {
    if !boot.no_build {
        build_box(false)?;
        lab::up::build()?;
    }
    let mut opts = VmOptions::for_test(hosts);
    opts.repo = util::root();
    opts.bin_dir = lab::hosts::bin_dir();
    opts.name = name;
    opts.accel = boot.accel.as_deref().and_then(Accel::parse).or(opts.accel);
    Ok(opts)
}

fn print_timings(lab: &VmLab) {
    eprintln!("step durations:");
    for (step, d) in lab.timings() {
        eprintln!("  {:<48} {:>6.0} s", step, d.as_secs_f64());
    }
}

fn up(boot: BootArgs, hosts: Hosts) -> Result<()> {
    require_root()?;
    let opts = options(&boot, hosts, LabName::Interactive)?;
    let lab = VmLab::start(opts)?;
    print_timings(&lab);
    let vip = lab.topology().vip();
    println!(
        "\nVM lab up ({}). VIP {} / [{}] port {}. In vagrant/:",
        lab.accel(),
        vip.ipv4(),
        vip.ipv6(),
        vip.port()
    );
    println!(
        "  vagrant ssh client -c 'curl -si http://{}/ping'",
        vip.ipv4()
    );
    println!(
        "  vagrant ssh client -c 'curl -si http://[{}]/ping'",
        vip.ipv6()
    );
    println!(
        "  vagrant ssh lb1 -c 'sudo /opt/lab/bin/lbctl --socket /var/lib/lab/hosts/lb1/lbd.sock status'"
    );
    println!("  cargo xtask vagrant smoke     # the smoke test (powers lb1 off)");
    println!("  cargo xtask vagrant down      # remove it");
    let state = lab.persist()?;
    eprintln!("state: {}", state.display());
    Ok(())
}

fn down() -> Result<()> {
    require_root()?;
    let removed = vm::down(&util::root(), true)?;
    if removed.is_empty() {
        eprintln!("no VM lab was running");
    } else {
        eprintln!(
            "removed domains {:?}, networks {:?}, pools {:?}",
            removed.domains, removed.networks, removed.pools
        );
    }
    Ok(())
}

fn status(json: bool) -> Result<()> {
    require_root()?;
    let Some(state) = vm::running_state() else {
        println!("no VM lab is running (`cargo xtask vagrant up` starts one)");
        return Ok(());
    };
    let lab = VmLab::attach(&util::root(), &state)?;
    let hosts = lab.vm_states();
    if json {
        let v = serde_json::json!({ "state": state, "hosts": hosts });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "VM lab `{}` ({}, box {}):",
        state.prefix.trim_end_matches('-'),
        state.driver,
        state.box_name
    );
    println!(
        "{:<8} {:<9} {:<12} {:<10} xdp",
        "host", "role", "ipv4", "vm"
    );
    for (node, vm_state) in lab.topology().nodes().iter().zip(&hosts) {
        let xdp = if node.role() == tests::Role::Balancer && vm_state == "running" {
            vm::smoke::xdp_of(&lab, node.name())
                .map(|a| {
                    a.iter()
                        .map(|x| format!("{} {}", x.iface, x.mode))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|e| format!("? ({e})"))
        } else {
            "-".into()
        };
        println!(
            "{:<8} {:<9} {:<12} {:<10} {}",
            node.name(),
            node.role().to_string(),
            node.ipv4().to_string(),
            vm_state,
            xdp
        );
    }
    Ok(())
}

fn print_smoke(report: &vm::smoke::Smoke, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn smoke(json: bool) -> Result<()> {
    require_root()?;
    let state = vm::running_state()
        .context("no VM lab is running: start one with `cargo xtask vagrant up`")?;
    let lab = VmLab::attach(&util::root(), &state)?;
    let report = vm::smoke::run(&lab)?;
    print_smoke(&report, json)?;
    if let Some(f) = &report.failover {
        eprintln!(
            "{} is powered off: `cd vagrant && vagrant up {} --provision` brings it back",
            f.master, f.master
        );
    }
    Ok(())
}

fn test(boot: BootArgs, hosts: Hosts, json: bool) -> Result<()> {
    require_root()?;
    let t = Instant::now();
    let opts = options(&boot, hosts, LabName::Test)?;
    let lab = VmLab::start(opts)?;
    let report = vm::smoke::run(&lab);
    print_timings(&lab);
    if report.is_err() {
        eprintln!("logs of the failed run: {}", lab.keep_logs().display());
    }
    let teardown = Instant::now();
    lab.teardown()?;
    eprintln!(
        "  {:<48} {:>6.0} s\n  {:<48} {:>6.0} s",
        "teardown",
        teardown.elapsed().as_secs_f64(),
        "total",
        t.elapsed().as_secs_f64()
    );
    print_smoke(&report?, json)
}
