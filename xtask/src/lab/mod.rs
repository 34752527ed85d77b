//! `cargo xtask lab`: the whole system on one machine, as network namespaces around a bridge
//! (the root namespace takes no part): two balancers running `lbd`, three backends running
//! `app` (each registers itself with both control planes), Redis and PostgreSQL on a services
//! host, and a client. The hosts come from `vagrant/topology.json` and are provisioned by the
//! same scripts as the Vagrant VMs (`vagrant/provision/*.sh`, `LAB_MODE=netns`); this module
//! only orchestrates.

pub mod hosts;
pub mod up;
mod view;

use anyhow::Result;
use clap::{Args, Subcommand};

/// Prefix of the lab's namespaces (`lab-client`, `lab-lb1`, ..., `lab_br`).
pub const LAB: &str = "lab";

#[derive(Args)]
#[command(after_help = "\
Without a sub-command: build, start the lab, show live traffic per backend, and tear it all
down on Ctrl-C (also on any failure). Needs root. Try:
  cargo xtask lab up
  cargo xtask lab --ha bgp up       # three balancers behind a BIRD router (ECMP)
  cargo xtask lab exec client -- curl -s http://10.77.0.100/ping
  cargo xtask lab exec router -- ip route show 10.77.0.100
  cargo xtask lab status
  cargo xtask lab down")]
pub struct LabArgs {
    #[command(subcommand)]
    cmd: Option<LabCmd>,
    /// Skip installing packages and building (use the binaries already in target/release).
    #[arg(long, global = true)]
    no_build: bool,
    /// How the balancers share the VIP: `vrrp` (lb1 and lb2, the master holds it) or `bgp`
    /// (lb1-lb3 announce it to a BIRD router that spreads flows by ECMP; the client sits
    /// behind the router). The lab remembers it for `exec` and `status`.
    #[arg(long, global = true, value_enum, default_value = "vrrp")]
    ha: Ha,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ha {
    Vrrp,
    Bgp,
}

impl Ha {
    pub fn mode(self) -> tests::HaMode {
        match self {
            Ha::Vrrp => tests::HaMode::Vrrp,
            Ha::Bgp => tests::HaMode::Bgp,
        }
    }
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build and start the lab, then leave it running (remove it with `lab down`).
    Up,
    /// Stop everything the lab runs and delete its namespaces.
    Down,
    /// Which hosts and daemons are up, and lbd's own status and backend health.
    Status,
    /// Run a command inside a host (`lab exec client -- curl -s http://VIP/ping`). The
    /// project's binaries (lbctl, app) are on PATH; on a balancer `lbctl` talks to its lbd.
    Exec {
        /// Host name from vagrant/topology.json (client, lb1, lb2, be1, be2, be3, svc).
        node: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

pub fn run(args: LabArgs) -> Result<()> {
    let build = !args.no_build;
    match args.cmd {
        None => up::interactive(build, args.ha),
        Some(LabCmd::Up) => up::up(build, args.ha),
        Some(LabCmd::Down) => up::down(),
        Some(LabCmd::Status) => view::status(),
        Some(LabCmd::Exec { node, cmd }) => hosts::exec(&node, &cmd),
    }
}
