//! KVM when it really works, software emulation (TCG) otherwise.
//!
//! `/dev/kvm` alone proves little: inside some cloud VMs it exists but cannot run a stock
//! kernel ("KVM internal error ... emulation failure"). The probe boots the box's own kernel
//! under KVM with no root file system: a working KVM gets it to its "unable to mount root"
//! panic within seconds.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::exec;

/// How QEMU runs the guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (libvirt domain type `kvm`).
    Kvm,
    /// Software emulation (libvirt domain type `qemu`), about 20 times slower.
    Tcg,
}

impl Accel {
    /// vagrant-libvirt's `driver` setting.
    pub fn libvirt_driver(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }

    /// How much longer than under KVM waits should be.
    pub fn slowdown(self) -> u32 {
        match self {
            Accel::Kvm => 1,
            Accel::Tcg => 20,
        }
    }

    /// Parses `kvm`, `tcg` (or `qemu`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kvm" => Some(Accel::Kvm),
            "tcg" | "qemu" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg (software emulation)",
        })
    }
}

/// The outcome of [`probe`], with the reason for messages.
#[derive(Debug, Clone)]
pub struct Probe {
    /// What to use.
    pub accel: Accel,
    /// Why.
    pub reason: String,
}

/// Boots `kernel` under KVM (at most 60 s) and reads its console: KVM when the kernel ran.
pub fn probe(kernel: &Path) -> Probe {
    if !Path::new("/dev/kvm").exists() {
        return Probe {
            accel: Accel::Tcg,
            reason: "no /dev/kvm".into(),
        };
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1"])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"]);
    let out = match exec::output(&mut qemu, Duration::from_secs(60)) {
        Ok(out) => out,
        Err(e) => {
            return Probe {
                accel: Accel::Tcg,
                reason: format!("the KVM probe did not finish: {e}"),
            };
        }
    };
    let console = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if console.contains("Kernel panic") || console.contains("VFS:") {
        Probe {
            accel: Accel::Kvm,
            reason: "the box's kernel booted under KVM".into(),
        }
    } else {
        let why = stderr
            .lines()
            .chain(console.lines())
            .find(|l| l.contains("KVM") || l.contains("kvm"))
            .unwrap_or("the kernel printed nothing")
            .trim()
            .to_string();
        Probe {
            accel: Accel::Tcg,
            reason: format!("/dev/kvm exists but a kernel does not run under it: {why}"),
        }
    }
}
