//! libvirt for the VM lab: its daemons (started by hand where no service manager runs), a
//! storage pool of the lab's own, and removing everything a lab left by its name prefix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::exec;

/// The system connection every lab command uses (vagrant-libvirt's default too).
pub const URI: &str = "qemu:///system";

/// `virsh -c qemu:///system ARGS...`.
pub fn virsh<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new("virsh");
    c.args(["-c", URI]).args(args);
    c
}

/// Runs `virsh ARGS...` and returns its stdout (bounded by 60 s).
pub fn run<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = virsh(args);
    let out = exec::output(&mut c, Duration::from_secs(60))?;
    exec::check(&c, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn names(kind: &str) -> Result<Vec<String>> {
    let out = match kind {
        "domain" => run(["list", "--all", "--name"])?,
        "network" => run(["net-list", "--all", "--name"])?,
        _ => run(["pool-list", "--all", "--name"])?,
    };
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Whether libvirt answers on the system connection.
pub fn answers() -> bool {
    exec::output(&mut virsh(["version"]), Duration::from_secs(15)).is_ok_and(|o| o.status.success())
}

/// The libvirt daemons this process started (none when they ran already or a service manager
/// runs them); [`Daemons::stop`] stops exactly those.
#[derive(Debug, Default)]
pub struct Daemons {
    /// (name, pid) of what we started, in start order.
    started: Vec<(String, i32)>,
    /// Networks libvirtd autostarted when we started it (its `default` NAT network): stopped
    /// with it, so nothing of ours keeps running (their dnsmasq outlives libvirtd).
    autostarted: Vec<String>,
}

/// Pid in `/run/NAME.pid` if that process is alive.
fn pid_file_alive(name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(format!("/run/{name}.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

impl Daemons {
    /// Makes sure libvirt answers: through systemd where it runs, else by starting `virtlogd`
    /// and `libvirtd` ourselves (they daemonize and write pid files in /run).
    pub fn ensure() -> Result<Self> {
        let mut me = Self::default();
        if answers() {
            return Ok(me);
        }
        if Path::new("/run/systemd/system").exists() {
            exec::run(Command::new("systemctl").args(["start", "libvirtd.service"]))?;
        } else {
            for daemon in ["virtlogd", "libvirtd"] {
                if pid_file_alive(daemon).is_some() {
                    continue;
                }
                exec::run(Command::new(daemon).arg("-d"))?;
                let deadline = Instant::now() + Duration::from_secs(30);
                let pid = loop {
                    if let Some(pid) = pid_file_alive(daemon) {
                        break pid;
                    }
                    if Instant::now() >= deadline {
                        return Err(LabError::Timeout {
                            command: format!("{daemon} -d to write /run/{daemon}.pid"),
                            timeout: Duration::from_secs(30),
                            detail: String::new(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(200));
                };
                me.started.push((daemon.to_string(), pid));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answers() {
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    command: format!("virsh -c {URI} version"),
                    timeout: Duration::from_secs(60),
                    detail: "; see /var/log/libvirt/libvirtd.log".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if me.started.iter().any(|(d, _)| d == "libvirtd") {
            me.autostarted = run(["net-list", "--name"])?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
        }
        Ok(me)
    }

    /// What this process started, for messages: `virtlogd[123] libvirtd[456]`.
    pub fn describe(&self) -> String {
        self.started
            .iter()
            .map(|(d, p)| format!("{d}[{p}]"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Pids of the daemons we started, to stop them from another process later.
    pub fn started(&self) -> &[(String, i32)] {
        &self.started
    }

    /// Rebuilds the list from [`Daemons::started`] saved by an earlier process (only pids that
    /// still run the same program are kept).
    pub fn adopt(started: Vec<(String, i32)>, autostarted: Vec<String>) -> Self {
        let started = started
            .into_iter()
            .filter(|(d, p)| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == d)
            })
            .collect();
        Self {
            started,
            autostarted,
        }
    }

    /// Networks libvirtd autostarted when we started it.
    pub fn autostarted(&self) -> &[String] {
        &self.autostarted
    }

    /// Stops what we started, newest first: the autostarted networks, then the daemons
    /// (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&mut self) -> Result<()> {
        for net in std::mem::take(&mut self.autostarted) {
            let _ = run(["net-destroy", net.as_str()]);
        }
        while let Some((daemon, pid)) = self.started.pop() {
            // SAFETY: plain kill(2) on a pid we started and checked (adopt) ourselves.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() {
                if Instant::now() >= deadline {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            tracing::debug!(daemon, pid, "stopped");
        }
        Ok(())
    }
}

/// A `dir` storage pool of the lab's own at `dir`, created (and started) if missing.
pub fn ensure_pool(name: &str, dir: &Path) -> Result<()> {
    if !names("pool")?.iter().any(|p| p == name) {
        std::fs::create_dir_all(dir)
            .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        run([
            "pool-define-as",
            name,
            "dir",
            "--target",
            &dir.to_string_lossy(),
        ])?;
    }
    let info = run(["pool-info", name])?;
    if !info
        .lines()
        .any(|l| l.starts_with("State:") && l.contains("running"))
    {
        run(["pool-start", name])?;
    }
    Ok(())
}

/// What [`remove_prefixed`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// Domains (VMs), with their volumes.
    pub domains: Vec<String>,
    /// Networks.
    pub networks: Vec<String>,
    /// Storage pools, with their folders.
    pub pools: Vec<String>,
}

impl Removed {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.networks.is_empty() && self.pools.is_empty()
    }
}

/// Target folder of pool `name` (from its XML).
fn pool_dir(name: &str) -> Option<PathBuf> {
    let xml = run(["pool-dumpxml", name]).ok()?;
    let start = xml.find("<path>")? + "<path>".len();
    let end = xml[start..].find("</path>")? + start;
    Some(PathBuf::from(&xml[start..end]))
}

/// Removes every domain (with its storage), network and pool whose name starts with `prefix`
/// and is `doomed`: what a lab made, also when a killed run left it.
pub fn remove_prefixed(prefix: &str, doomed: impl Fn(&str) -> bool) -> Result<Removed> {
    let mut removed = Removed::default();
    for dom in names("domain")? {
        if dom.starts_with(prefix) && doomed(&dom) {
            let _ = run(["destroy", dom.as_str()]);
            // Its disks go with it; the box image it was made from stays with the pool.
            let _ = run(["undefine", dom.as_str(), "--remove-all-storage", "--nvram"])
                .or_else(|_| run(["undefine", dom.as_str(), "--remove-all-storage"]));
            removed.domains.push(dom);
        }
    }
    for net in names("network")? {
        if net.starts_with(prefix) && doomed(&net) {
            let _ = run(["net-destroy", net.as_str()]);
            run(["net-undefine", net.as_str()])?;
            removed.networks.push(net);
        }
    }
    for pool in names("pool")? {
        if pool.starts_with(prefix) && doomed(&pool) {
            let dir = pool_dir(&pool);
            let _ = run(["pool-destroy", pool.as_str()]);
            run(["pool-undefine", pool.as_str()])?;
            if let Some(dir) = dir {
                std::fs::remove_dir_all(&dir)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| LabError::io(format!("removing {}", dir.display()), e))?;
            }
            removed.pools.push(pool);
        }
    }
    Ok(removed)
}

/// Name of the domain libvirt runs for VM `host` of a lab with `prefix` (vagrant-libvirt's
/// `default_prefix` + machine name).
pub fn domain(prefix: &str, host: &str) -> String {
    format!("{prefix}{host}")
}

/// Whether domain `name` is running.
pub fn is_running(name: &str) -> bool {
    run(["domstate", name]).is_ok_and(|s| s.trim() == "running")
}
