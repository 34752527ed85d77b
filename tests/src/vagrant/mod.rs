//! The lab as virtual machines: `vagrant/Vagrantfile` with the libvirt provider (QEMU, KVM when
//! it works, software emulation otherwise), the project's own box, the same topology and
//! provisioning scripts as the namespace lab.
//!
//! [`VmLab::start`] starts libvirt's daemons where no service manager does, makes a storage pool
//! of the lab's own, boots the VMs of [`Hosts`] (the whole topology, or the reduced lab CI
//! boots, derived from it) in parallel and provisions them (services hosts first, then
//! every other host at once), then waits until every balancer sees every backend healthy on
//! both VIPs. Dropping a [`VmLab`] removes every VM, volume, network and pool it made and
//! stops the daemons it started, also on failure; [`VmLab::persist`] leaves it running for
//! `cargo xtask vagrant up`, and [`down`] removes such a lab later. A test lab's libvirt names
//! start with `lbtvmPID-`, so what a killed run left is found and removed by the next one.
//! [`smoke`] is the smoke test run from the client VM.

pub mod accel;
pub mod boxes;
pub mod libvirt;
pub mod smoke;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use accel::Accel;
pub use boxes::BoxImage;

use crate::error::{LabError, Result};
use crate::exec;
use crate::process::Process;
use crate::topology::{Node, Role, Topology};

/// Name prefix of the test labs' libvirt objects (`lbtvm<pid>-lb1`, ...).
pub const TEST_PREFIX: &str = "lbtvm";

/// Name prefix of the interactive lab's libvirt objects (`lb-xdp-lb1`, `lb-xdp-lab0`, ...): the
/// Vagrantfile's default, so `vagrant` run by hand in `vagrant/` finds the same VMs.
pub const INTERACTIVE_PREFIX: &str = "lb-xdp-";

/// Which hosts of `vagrant/topology.json` a lab boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// [`Topology::reduced`]: client, the first balancer, the first backend with Redis and
    /// PostgreSQL folded in (what CI boots; no VRRP failover: one balancer).
    Reduced,
    /// Every host (`cargo xtask vagrant test --full`).
    All,
    /// These hosts, by name, as topology.json describes them.
    Named(Vec<String>),
}

impl Hosts {
    /// The topology these hosts make out of the full one.
    pub fn topology(&self, full: &Topology) -> Result<Topology> {
        Ok(match self {
            Hosts::Reduced => full.reduced()?,
            Hosts::All => full.clone(),
            Hosts::Named(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                full.subset(&names)?
            }
        })
    }
}

/// The project's binaries the VMs run (built on the host, stripped before upload).
const BINARIES: [&str; 3] = ["lbd", "lbctl", "app"];

/// Where the VM labs keep their state, disks and logs.
pub fn work_root() -> PathBuf {
    PathBuf::from("/var/lib/lb-xdp/vms")
}

/// Which lab: the one `cargo xtask vagrant up` leaves running, or a test's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabName {
    /// The interactive lab: libvirt prefix [`INTERACTIVE_PREFIX`] (the Vagrantfile's default),
    /// Vagrant's state in `vagrant/.vagrant` (so `vagrant ssh HOST` works in `vagrant/`),
    /// management network 192.168.121.0/24.
    Interactive,
    /// A test lab: prefix `lbtvm<pid>-`, every state file in its own work folder.
    Test,
}

/// How a [`VmLab`] is started.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// The repository root (holds `vagrant/`).
    pub repo: PathBuf,
    /// Folder holding the release binaries `lbd`, `lbctl` and `app`.
    pub bin_dir: PathBuf,
    /// The hosts to boot.
    pub hosts: Hosts,
    /// Which lab.
    pub name: LabName,
    /// KVM or emulation; `None`: probe (see [`accel::probe`]).
    pub accel: Option<Accel>,
    /// One line per step on stderr.
    pub progress: bool,
}

impl VmOptions {
    /// A test lab of `hosts` for the repository this crate was built from, binaries in
    /// `$CARGO_TARGET_DIR/release` (default `target/release`).
    pub fn for_test(hosts: Hosts) -> Self {
        let sys = crate::SystemOptions::from_build();
        Self {
            repo: sys.repo,
            bin_dir: sys.bin_dir,
            hosts,
            name: LabName::Test,
            accel: std::env::var("LAB_ACCEL")
                .ok()
                .and_then(|a| Accel::parse(&a)),
            progress: true,
        }
    }
}

/// What a running lab needs to be found again by another process (`vagrant down`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// libvirt name prefix.
    pub prefix: String,
    /// Booted hosts.
    pub hosts: Vec<String>,
    /// The booted topology (the reduced lab's backend runs the services too).
    #[serde(default)]
    pub topology: Option<Topology>,
    /// `kvm` or `qemu`.
    pub driver: String,
    /// The box's Vagrant name.
    pub box_name: String,
    /// Daemons this lab started: (name, pid).
    pub daemons: Vec<(String, i32)>,
    /// Networks libvirtd autostarted when this lab started it.
    pub autostarted: Vec<String>,
    /// How each step went: (step, seconds).
    pub timings: Vec<(String, f64)>,
}

/// A running VM lab; see the module documentation.
#[derive(Debug)]
pub struct VmLab {
    opts: VmOptions,
    topology: Topology,
    accel: Accel,
    prefix: String,
    work: PathBuf,
    daemons: libvirt::Daemons,
    box_name: String,
    timings: Vec<(String, Duration)>,
    ssh_config: PathBuf,
    keep: bool,
    torn_down: bool,
}

fn step(progress: bool, msg: &str) {
    if progress {
        eprintln!("==> {msg}");
    }
}

/// Stripped, gzipped copies of the binaries in `to` (`NAME.gz`; debug line tables make them
/// several times larger, and every byte crosses an emulated SSH connection).
fn stripped_binaries(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)
        .map_err(|e| LabError::io(format!("creating {}", to.display()), e))?;
    for bin in BINARIES {
        let src = from.join(bin);
        if !src.is_file() {
            return Err(LabError::Option {
                option: format!("binary {bin}"),
                reason: format!(
                    "{} is missing: build it with `cargo build --release -p lbd -p lbctl -p app --bin lbd --bin lbctl --bin app`",
                    src.display()
                ),
            });
        }
        let dst = to.join(bin);
        exec::run(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&src)
                .arg(&dst),
        )?;
        exec::run(Command::new("gzip").arg("-f").arg(&dst))?;
    }
    Ok(())
}

/// Whether the pid in a test prefix (`lbtvm1234-...`) is gone: its lab is stale.
fn stale_test_name(name: &str) -> bool {
    let digits: String = name[TEST_PREFIX.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match digits.parse::<u32>() {
        Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

impl VmLab {
    /// Boots and provisions the lab; on any error everything made so far is removed.
    pub fn start(opts: VmOptions) -> Result<Self> {
        exec::require_root()?;
        for (tool, package) in [
            ("vagrant", "vagrant"),
            ("virsh", "libvirt-clients"),
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("objcopy", "binutils"),
        ] {
            if !exec::have_tool(tool) {
                return Err(LabError::MissingTool { tool, package });
            }
        }
        let full = Topology::load(opts.repo.join("vagrant/topology.json"))?;
        let topology = opts.hosts.topology(&full)?;
        let (prefix, work) = match opts.name {
            LabName::Interactive => (INTERACTIVE_PREFIX.to_string(), work_root().join("lab")),
            LabName::Test => {
                let p = format!("{TEST_PREFIX}{}-", std::process::id());
                (p.clone(), work_root().join(p.trim_end_matches('-')))
            }
        };
        let began = Instant::now();
        let image = BoxImage::for_repo(&opts.repo)?;
        if !image.is_built() {
            return Err(LabError::Option {
                option: "box".into(),
                reason: format!(
                    "{} is not built: run `cargo xtask vagrant box` (as root)",
                    image.file().display()
                ),
            });
        }
        let accel = match opts.accel {
            Some(a) => a,
            None => {
                let p = accel::probe(&image.kernel());
                step(
                    opts.progress,
                    &format!("accelerator: {} ({})", p.accel, p.reason),
                );
                p.accel
            }
        };
        let daemons = libvirt::Daemons::ensure()?;
        if !daemons.describe().is_empty() {
            step(opts.progress, &format!("started {}", daemons.describe()));
        }
        let mut lab = Self {
            ssh_config: work.join("ssh_config"),
            opts,
            topology,
            accel,
            prefix,
            work,
            daemons,
            box_name: image.name(),
            timings: vec![("prepare".into(), began.elapsed())],
            keep: false,
            torn_down: false,
        };
        // From here on a failure drops `lab`, which removes what was made.
        lab.boot(&image)?;
        Ok(lab)
    }

    fn step(&self, msg: &str) {
        step(self.opts.progress, msg);
    }

    fn timed<T>(&mut self, what: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let out = f(self)?;
        let took = t.elapsed();
        self.step(&format!("{what}: {:.0} s", took.as_secs_f64()));
        self.timings.push((what.to_string(), took));
        Ok(out)
    }

    fn boot(&mut self, image: &BoxImage) -> Result<()> {
        if self.opts.name == LabName::Test {
            let removed = libvirt::remove_prefixed(TEST_PREFIX, stale_test_name)?;
            if !removed.is_empty() {
                self.step(&format!("removed what killed test runs left: {removed:?}"));
            }
            for entry in std::fs::read_dir(work_root())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(TEST_PREFIX) && stale_test_name(&name) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        std::fs::create_dir_all(self.work.join("console"))
            .map_err(|e| LabError::io(format!("creating {}", self.work.display()), e))?;
        // The Vagrantfile defines exactly the booted hosts (LAB_TOPOLOGY).
        std::fs::write(self.topology_file(), self.topology.to_json())
            .map_err(|e| LabError::io(format!("writing {}", self.topology_file().display()), e))?;
        self.timed("box added to Vagrant", |_| image.ensure_added().map(|_| ()))?;
        libvirt::ensure_pool(&self.pool(), &self.work.join("pool"))?;
        let volume = image.seed_pool(&self.work.join("pool"))?;
        libvirt::run(["pool-refresh", self.pool().as_str()])?;
        self.step(&format!("box image in pool {} as {volume}", self.pool()));
        // QEMU (user libvirt-qemu) reads the kernel and initrd: copies where it can.
        for (from, to) in [(image.kernel(), "vmlinuz"), (image.initrd(), "initrd.img")] {
            std::fs::copy(&from, self.work.join(to))
                .map_err(|e| LabError::io(format!("copying {}", from.display()), e))?;
        }
        stripped_binaries(&self.opts.bin_dir, &self.work.join("bin"))?;
        let hosts = self.host_names();
        let n = hosts.len();
        self.timed(&format!("{n} VMs booted ({})", self.accel), |lab| {
            let mut args = vec!["up", "--no-provision", "--provider", "libvirt"];
            args.extend(hosts.iter().map(String::as_str));
            lab.vagrant("up", &args, lab.scaled(Duration::from_secs(120)) * n as u32)
        })?;
        for group in self.provision_groups() {
            self.timed(&format!("provisioned {}", group.join(" ")), |lab| {
                lab.provision(&group)
            })?;
        }
        self.timed("ssh config", |lab| {
            let mut args = vec!["ssh-config"];
            args.extend(hosts.iter().map(String::as_str));
            let out = lab.vagrant_output(&args, Duration::from_secs(120))?;
            std::fs::write(&lab.ssh_config, out)
                .map_err(|e| LabError::io(format!("writing {}", lab.ssh_config.display()), e))
        })?;
        // Every balancer, not only the master: the failover check needs the backup ready too.
        let want = self.backends().len() * 2;
        for lb in self.balancers() {
            self.timed(
                &format!("{want} backends healthy on {lb} (both VIPs)"),
                |lab| lab.wait_healthy(&lb, want, lab.scaled(Duration::from_secs(15))),
            )?;
        }
        Ok(())
    }

    /// Hosts provisioned together, group after group: the services hosts first (app connects
    /// to PostgreSQL as it starts), then every other host at once. Unlike the namespace lab's
    /// role order, balancers and backends need not wait for each other here: every SSH round
    /// trip into an emulated VM costs seconds, and a backend that comes up before its balancer
    /// registers on a later retry (app's registration backs off and refreshes every 10 s).
    fn provision_groups(&self) -> Vec<Vec<String>> {
        let (first, rest): (Vec<&Node>, Vec<&Node>) = self
            .topology
            .nodes()
            .iter()
            .partition(|n| n.role() == Role::Services);
        [first, rest]
            .into_iter()
            .filter(|g| !g.is_empty())
            .map(|g| g.iter().map(|n| n.name().to_string()).collect())
            .collect()
    }

    /// `d` scaled for the accelerator (software emulation is ~20 times slower).
    pub fn scaled(&self, d: Duration) -> Duration {
        d * self.accel.slowdown()
    }

    /// `d` scaled for the accelerator and for `vms` VMs doing the same work at once: under
    /// emulation each vCPU is a host thread, so seven VMs booting on two cores each get a
    /// fraction of what three get (one unit per three VMs, the reduced lab's size).
    fn scaled_for(&self, d: Duration, vms: usize) -> Duration {
        let share = match self.accel {
            Accel::Kvm => 1,
            Accel::Tcg => vms.div_ceil(3).max(1) as u32,
        };
        self.scaled(d) * share
    }

    /// The accelerator the VMs run with.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The booted topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// libvirt name prefix of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The work folder (Vagrant state, disks, console logs, command logs).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// Step durations so far.
    pub fn timings(&self) -> &[(String, Duration)] {
        &self.timings
    }

    fn topology_file(&self) -> PathBuf {
        self.work.join("topology.json")
    }

    fn pool(&self) -> String {
        format!("{}pool", self.prefix)
    }

    fn host_names(&self) -> Vec<String> {
        self.topology
            .nodes()
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }

    fn names(&self, role: Role) -> Vec<String> {
        self.topology
            .nodes_with_role(role)
            .map(|n| n.name().to_string())
            .collect()
    }

    /// Balancer hosts, in topology order.
    pub fn balancers(&self) -> Vec<String> {
        self.names(Role::Balancer)
    }

    /// Backend hosts, in topology order.
    pub fn backends(&self) -> Vec<String> {
        self.names(Role::Backend)
    }

    /// Environment of every `vagrant` command of this lab (read by the Vagrantfile).
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("VAGRANT_DEFAULT_PROVIDER", "libvirt".to_string()),
            ("LAB_BOX", self.box_name.clone()),
            (
                "LAB_HOST_BIN_DIR",
                self.work.join("bin").display().to_string(),
            ),
            ("LAB_LIBVIRT_PREFIX", self.prefix.clone()),
            (
                "LAB_LIBVIRT_DRIVER",
                self.accel.libvirt_driver().to_string(),
            ),
            ("LAB_LIBVIRT_POOL", self.pool()),
            ("LAB_TOPOLOGY", self.topology_file().display().to_string()),
            // The box has every package: the VMs need to reach nothing but the host.
            ("LAB_MGMT_MODE", "none".to_string()),
            (
                "LAB_CONSOLE_DIR",
                self.work.join("console").display().to_string(),
            ),
            (
                "LAB_KERNEL",
                self.work.join("vmlinuz").display().to_string(),
            ),
            (
                "LAB_INITRD",
                self.work.join("initrd.img").display().to_string(),
            ),
            (
                "LAB_BOOT_TIMEOUT",
                self.scaled_for(Duration::from_secs(60), self.topology.nodes().len())
                    .as_secs()
                    .to_string(),
            ),
        ];
        if self.opts.name == LabName::Test {
            env.push((
                "VAGRANT_DOTFILE_PATH",
                self.work.join("vagrant").display().to_string(),
            ));
            env.push((
                "LAB_STATE_DIR",
                self.work.join("state").display().to_string(),
            ));
            env.push(("LAB_MGMT_CIDR", "192.168.124.0/24".to_string()));
        }
        env
    }

    /// `vagrant ARGS...` in `vagrant/` with this lab's environment.
    pub fn vagrant_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("vagrant");
        c.current_dir(self.opts.repo.join("vagrant"))
            .args(args)
            .envs(self.env());
        c
    }

    /// Runs `vagrant ARGS...` with its output in `WORK/logs/LOG.log`, at most `timeout`; fails
    /// with the end of that log.
    fn vagrant(&self, log: &str, args: &[&str], timeout: Duration) -> Result<()> {
        let logs = self.work.join("logs");
        let mut p = Process::spawn(log, self.vagrant_command(args), &logs)?;
        match p.wait_timeout(timeout)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(LabError::Command {
                command: p.command().to_string(),
                status: status.to_string(),
                stderr: format!("log {}:\n{}", p.log_path().display(), tail(&p.log(), 30)),
            }),
            None => Err(LabError::Timeout {
                command: p.command().to_string(),
                timeout,
                detail: format!("; log {}:\n{}", p.log_path().display(), tail(&p.log(), 30)),
            }),
        }
    }

    fn vagrant_output(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut c = self.vagrant_command(args);
        let out = exec::output(&mut c, timeout)?;
        exec::check(&c, &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Provisions `hosts` at once (`vagrant provision`, one process each).
    fn provision(&self, hosts: &[String]) -> Result<()> {
        let logs = self.work.join("logs");
        let mut running = Vec::new();
        for h in hosts {
            let p = Process::spawn(
                &format!("provision-{h}"),
                self.vagrant_command(&["provision", h]),
                &logs,
            )?;
            running.push((h.clone(), p));
        }
        let deadline = Instant::now() + self.scaled_for(Duration::from_secs(60), hosts.len());
        let mut failures = Vec::new();
        for (h, mut p) in running {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.wait_timeout(left)? {
                Some(s) if s.success() => {}
                Some(s) => failures.push(format!(
                    "{h}: vagrant provision {s}; log {}:\n{}",
                    p.log_path().display(),
                    tail(&p.log(), 25)
                )),
                None => failures.push(format!(
                    "{h}: vagrant provision did not finish in time; log {}:\n{}",
                    p.log_path().display(),
                    tail(&p.log(), 25)
                )),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(LabError::Option {
                option: "provisioning".into(),
                reason: failures.join("\n"),
            })
        }
    }

    /// `ssh HOST` with the lab's SSH config, running `script` with `sh`.
    pub fn ssh_command(&self, host: &str, script: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(&self.ssh_config)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
            .arg(host)
            .arg(script);
        c
    }

    /// Runs `script` on `host` (as the SSH user; `sudo` where root is needed), at most
    /// `timeout`; returns its stdout.
    pub fn ssh(&self, host: &str, script: &str, timeout: Duration) -> Result<String> {
        let mut c = self.ssh_command(host, script);
        let out = exec::output(&mut c, timeout)?;
        exec::check(&c, &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lbctl --json ARGS` against the lbd of balancer `lb`, parsed.
    pub fn lbctl_json(&self, lb: &str, args: &str) -> Result<serde_json::Value> {
        let script = format!(
            "sudo /opt/lab/bin/lbctl --socket /var/lib/lab/hosts/{lb}/lbd.sock --timeout 10 --json {args}"
        );
        let out = self.ssh(lb, &script, self.scaled(Duration::from_secs(5)))?;
        serde_json::from_str(&out).map_err(|e| LabError::Parse {
            command: format!("{lb}: {script}"),
            reason: e.to_string(),
        })
    }

    /// Healthy backend entries (over all VIPs) on balancer `lb`.
    pub fn healthy(&self, lb: &str) -> Result<usize> {
        let json = self.lbctl_json(lb, "health")?;
        Ok(json
            .as_array()
            .map(|a| a.iter().filter(|b| b["health"] == "healthy").count())
            .unwrap_or(0))
    }

    fn wait_healthy(&self, lb: &str, want: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.healthy(lb).unwrap_or(0);
            if have >= want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    command: format!("{want} healthy backends on {lb} (have {have})"),
                    timeout,
                    detail: format!("; logs in {}", self.work.join("logs").display()),
                });
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Powers VM `host` off at once, as a power cut would (`virsh destroy`).
    pub fn power_off(&self, host: &str) -> Result<()> {
        libvirt::run(["destroy", &libvirt::domain(&self.prefix, host)]).map(|_| ())
    }

    /// What [`down`] needs to find this lab again.
    pub fn state(&self) -> State {
        State {
            prefix: self.prefix.clone(),
            hosts: self.host_names(),
            topology: Some(self.topology.clone()),
            driver: self.accel.libvirt_driver().to_string(),
            box_name: self.box_name.clone(),
            daemons: self.daemons.started().to_vec(),
            autostarted: self.daemons.autostarted().to_vec(),
            timings: self
                .timings
                .iter()
                .map(|(s, d)| (s.clone(), d.as_secs_f64()))
                .collect(),
        }
    }

    /// Leaves the lab running (for `cargo xtask vagrant up`): writes its state file.
    pub fn persist(mut self) -> Result<PathBuf> {
        let path = self.work.join("state.json");
        let text = serde_json::to_string_pretty(&self.state()).unwrap_or_default();
        std::fs::write(&path, text)
            .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
        self.keep = true;
        Ok(path)
    }

    /// Keeps what explains a failed run before teardown removes the work folder: the vagrant
    /// command logs, the serial consoles and the end of every daemon log in each VM still
    /// running, in `work_root()/failed-PREFIX/`. Returns that folder.
    pub fn keep_logs(&self) -> PathBuf {
        let keep = work_root().join(format!("failed-{}", self.prefix.trim_end_matches('-')));
        let _ = std::fs::create_dir_all(keep.join("guests"));
        for dir in ["logs", "console"] {
            let _ = Command::new("cp")
                .arg("-r")
                .arg(self.work.join(dir))
                .arg(&keep)
                .status();
        }
        if self.ssh_config.is_file() {
            for host in self.host_names() {
                let script = format!(
                    "sudo sh -c 'for f in /var/lib/lab/hosts/{host}/*.log; do echo \"== $f\"; tail -n 80 \"$f\"; done; \
                     echo \"== ip addr\"; ip addr; echo \"== ip neigh\"; ip neigh'"
                );
                let out = self
                    .ssh(&host, &script, self.scaled(Duration::from_secs(5)))
                    .unwrap_or_else(|e| format!("{host}: {e}"));
                let _ = std::fs::write(keep.join("guests").join(format!("{host}.log")), out);
            }
        }
        keep
    }

    /// Removes the lab now and reports errors.
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        self.step(&format!(
            "removing the VMs of {}",
            self.prefix.trim_end_matches('-')
        ));
        // vagrant forgets its machines; libvirt objects are removed by name in any case.
        let _ = self.vagrant("destroy", &["destroy", "--force"], Duration::from_secs(300));
        let removed = libvirt::remove_prefixed(&self.prefix, |_| true);
        let stopped = self.daemons.stop();
        if self.opts.name == LabName::Test {
            let _ = std::fs::remove_dir_all(&self.work);
        }
        removed?;
        stopped
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if !self.torn_down {
            // Dropped without `teardown`: start or a caller failed.
            eprintln!("logs of the failed run: {}", self.keep_logs().display());
        }
        if let Err(e) = self.teardown_inner() {
            eprintln!("removing VM lab {}: {e}", self.prefix);
        }
    }
}

/// The state of the interactive lab, if one was left running.
pub fn running_state() -> Option<State> {
    let text = std::fs::read_to_string(work_root().join("lab").join("state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

impl VmLab {
    /// The interactive lab described by `state` (from [`running_state`]), to run commands and
    /// the smoke test on it. Dropping it leaves the lab running.
    pub fn attach(repo: &Path, state: &State) -> Result<Self> {
        let topology = match &state.topology {
            Some(t) => t.clone(),
            None => {
                let full = Topology::load(repo.join("vagrant/topology.json"))?;
                let names: Vec<&str> = state.hosts.iter().map(String::as_str).collect();
                full.subset(&names)?
            }
        };
        let work = work_root().join("lab");
        Ok(Self {
            opts: VmOptions {
                repo: repo.to_path_buf(),
                bin_dir: work.join("bin"),
                hosts: Hosts::Named(state.hosts.clone()),
                name: LabName::Interactive,
                accel: Accel::parse(&state.driver),
                progress: true,
            },
            topology,
            accel: Accel::parse(&state.driver).unwrap_or(Accel::Tcg),
            prefix: state.prefix.clone(),
            ssh_config: work.join("ssh_config"),
            work,
            daemons: libvirt::Daemons::default(),
            box_name: state.box_name.clone(),
            timings: Vec::new(),
            keep: true,
            torn_down: false,
        })
    }

    /// libvirt's state of every host's VM (`running`, `shut off`, `absent`), in topology order.
    pub fn vm_states(&self) -> Vec<String> {
        self.host_names()
            .iter()
            .map(|h| {
                libvirt::run(["domstate", &libvirt::domain(&self.prefix, h)])
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "absent".into())
            })
            .collect()
    }
}

/// Removes the interactive lab (`cargo xtask vagrant up`): its VMs, volumes, networks, pool,
/// and the libvirt daemons it started. Returns what was removed.
pub fn down(repo: &Path, progress: bool) -> Result<libvirt::Removed> {
    exec::require_root()?;
    let work = work_root().join("lab");
    let state: Option<State> = std::fs::read_to_string(work.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut daemons = match &state {
        Some(s) => libvirt::Daemons::adopt(s.daemons.clone(), s.autostarted.clone()),
        None => libvirt::Daemons::default(),
    };
    if !libvirt::answers() {
        step(progress, "libvirt does not run: nothing to remove");
        return Ok(libvirt::Removed::default());
    }
    step(progress, "vagrant destroy --force");
    let mut c = Command::new("vagrant");
    c.current_dir(repo.join("vagrant"))
        .args(["destroy", "--force"])
        .env("VAGRANT_DEFAULT_PROVIDER", "libvirt")
        .env("LAB_LIBVIRT_POOL", format!("{INTERACTIVE_PREFIX}pool"));
    if work.join("topology.json").is_file() {
        c.env("LAB_TOPOLOGY", work.join("topology.json"));
    }
    if let Err(e) = exec::output(&mut c, Duration::from_secs(300)) {
        step(
            progress,
            &format!("vagrant destroy: {e} (removing by name)"),
        );
    }
    let removed = libvirt::remove_prefixed(INTERACTIVE_PREFIX, |_| true)?;
    daemons.stop()?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(removed)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
