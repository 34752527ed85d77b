//! The VM lab booted for real (issue 17): Vagrant with libvirt boots the lab's VMs from the
//! project's box (KVM when it works, software emulation otherwise) and the smoke test runs from
//! the client VM: IPv4 and IPv6 through the VIP reach every backend, a user created through the
//! VIP is read back through the cache, the VRRP master VM is powered off and the backup takes
//! both VIPs (the gap is reported). Everything the test made is removed, also on failure.
//!
//! Needs root, the box and the release binaries: `cargo xtask test vagrant` builds both and
//! runs this (`--ignored`: it is not part of `cargo test --workspace`, it takes far longer than
//! CI's budget on these machines; see vagrant/README.md for the figures). It boots the CI set of hosts (svc, lb1, lb2, be1, client); `LAB_VM_HOSTS=all`
//! (or a comma-separated list) boots others; `cargo xtask vagrant test --full` is the whole lab.

use std::time::Instant;

use anyhow::{Context, Result};
use tests::vagrant::{CI_HOSTS, VmLab, VmOptions, smoke};

#[test]
#[ignore = "boots five VMs (about 50 min under emulation on a busy 2-core machine): `cargo xtask test vagrant` runs it"]
fn vms_boot_and_serve_the_vip_on_both_families_with_failover() -> Result<()> {
    tests::exec::require_root()
        .context("the VM lab uses libvirt's system connection: run as root")?;
    let hosts: Vec<String> = match std::env::var("LAB_VM_HOSTS") {
        Ok(v) if v == "all" => Vec::new(),
        Ok(v) => v.split(',').map(str::to_string).collect(),
        Err(_) => CI_HOSTS.iter().map(|h| h.to_string()).collect(),
    };
    let mut opts = VmOptions::for_test(&[]);
    opts.hosts = hosts;
    let t = Instant::now();
    let lab = VmLab::start(opts).context("booting the VM lab")?;
    let report = smoke::run(&lab);
    for (step, d) in lab.timings() {
        eprintln!("[vagrant] {step}: {:.0} s", d.as_secs_f64());
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
