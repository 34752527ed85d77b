//! The VM lab booted for real (issue 17): Vagrant with libvirt boots the lab's VMs from the
//! project's box (KVM when it works, software emulation otherwise) and the smoke test runs from
//! the client VM: IPv4 and IPv6 through the VIP reach every backend, a user created through the
//! VIP is read back through the cache, and (with two balancers) the VRRP master VM is powered
//! off and the backup takes both VIPs (the gap is reported). Everything the test made is
//! removed, also on failure.
//!
//! Needs root, the box and the release binaries: `cargo xtask test vagrant` (and `cargo xtask
//! test`, group all) builds both and runs this. It boots the reduced lab derived from
//! topology.json (client, lb1, be1 with Redis and PostgreSQL: `Topology::reduced`);
//! `LAB_VM_HOSTS=all` (or a comma-separated list) boots others, and `cargo xtask vagrant test
//! --full` is the whole lab with the failover.

use std::time::Instant;

use anyhow::{Context, Result};
use tests::vagrant::{Hosts, VmLab, VmOptions, smoke};

#[test]
fn vms_boot_and_serve_the_vip_on_both_families() -> Result<()> {
    tests::exec::require_root()
        .context("the VM lab uses libvirt's system connection: run as root")?;
    let hosts = match std::env::var("LAB_VM_HOSTS") {
        Ok(v) if v == "all" => Hosts::All,
        Ok(v) => Hosts::Named(v.split(',').map(str::to_string).collect()),
        Err(_) => Hosts::Reduced,
    };
    let t = Instant::now();
    let lab = VmLab::start(VmOptions::for_test(hosts)).context("booting the VM lab")?;
    let report = smoke::run(&lab);
    for (step, d) in lab.timings() {
        eprintln!("[vagrant] {step}: {:.0} s", d.as_secs_f64());
    }
    if report.is_err() {
        eprintln!(
            "[vagrant] logs of the failed run: {}",
            lab.keep_logs().display()
        );
    }
    let teardown = Instant::now();
    lab.teardown().context("removing the VM lab")?;
    eprintln!(
        "[vagrant] teardown: {:.0} s; total {:.0} s",
        teardown.elapsed().as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let report = report.context("smoke test")?;
    eprint!("{}", report.table());
    Ok(())
}
