//! Project tasks. Run `cargo xtask --help`.

mod bench;
mod build_ebpf;
mod cycles;
mod deps;
mod disk;
mod fuzz;
mod lab;
mod package;
mod prometheus;
mod test;
mod util;
mod vagrant;
mod venv;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test, benchmark and run the XDP load balancer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the XDP object (installs rust-src and bpf-linker first if missing).
    BuildEbpf {
        /// Build with the release profile (both profiles are optimised; release keeps BTF/debug info).
        #[arg(long)]
        release: bool,
    },
    /// Install everything the project needs (Debian packages, rust-src, bpf-linker,
    /// schemathesis). Idempotent.
    Setup,
    /// Run the tests (as root): every group by default. Arguments after `--` go to the test
    /// binaries, e.g. `cargo xtask test e2e -- --nocapture` prints the measured figures.
    Test {
        #[arg(value_enum, default_value = "all")]
        group: test::Group,
        /// Build the tests in release mode.
        #[arg(long)]
        release: bool,
        /// Passed to the test binaries (after cargo test's `--`): a name filter, `--nocapture`.
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Run a benchmark; arguments after WHAT go to it (try `-- --help`, `--json`, `--quick`).
    Bench {
        #[arg(value_enum)]
        what: bench::What,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole system in network namespaces: `lab` (live view, Ctrl-C removes it),
    /// `lab up|down|status|exec NODE -- CMD`. Needs root.
    Lab(lab::LabArgs),
    /// Debian packages of lbd (with lbctl) and app in target/debian, with cargo-deb:
    /// binaries, systemd units, example configs, man pages. `cargo xtask test package`
    /// checks and installs them into a fresh root.
    Package,
    /// The lab as VMs (Vagrant, libvirt): `vagrant box|up|down|status|smoke|test`. Needs root.
    Vagrant(vagrant::VagrantArgs),
    /// Fuzz the parsers with libFuzzer (cargo-fuzz, nightly): every target, or TARGET, for S
    /// seconds each, from its committed corpus (fuzz/corpus/TARGET).
    Fuzz {
        /// One of: packet, pcap, lbd_config, vrrp, topology, app_bodies, app_config.
        target: Option<String>,
        /// Seconds of fuzzing per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
    /// Run every packet of a pcap through the balancer with a config's maps; see `-- --help`.
    Replay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::BuildEbpf { release } => build_ebpf::build(release).map(|_| ()),
        Cmd::Setup => {
            deps::apt_packages()?;
            venv::schemathesis()?;
            deps::vm_packages()?;
            deps::toolchain()?;
            deps::cargo_fuzz()
        }
        Cmd::Test {
            group,
            release,
            test_args,
        } => test::run(group, release, &test_args),
        Cmd::Bench { what, args } => bench::run(what, &args),
        Cmd::Lab(args) => lab::run(args),
        Cmd::Package => package::run().map(|_| ()),
        Cmd::Vagrant(args) => vagrant::run(args),
        Cmd::Fuzz { target, time } => fuzz::run(target.as_deref(), time, fuzz::Build::Release),
        Cmd::Replay { args } => {
            build_ebpf::build(true)?;
            util::run(
                util::cargo()
                    .args([
                        "run",
                        "--quiet",
                        "--release",
                        "-p",
                        "lbctl",
                        "--bin",
                        "lbctl",
                        "--",
                        "replay",
                    ])
                    .args(&args),
            )
        }
    }
}
