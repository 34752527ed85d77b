//! The whole system running in a [`Lab`]: `lbd` on the balancers, `app` on the backends, Redis
//! and PostgreSQL on the services host, each host provisioned by the same scripts as the
//! Vagrant VMs (`vagrant/provision/*.sh`, `LAB_MODE=netns`).
//!
//! `cargo xtask lab` runs it under the fixed name `lab`; the end-to-end tests and `cargo xtask
//! bench lab` run their own copies under unique names, so they never meet a lab a person
//! started. Dropping a [`System`] drops its [`Lab`], which kills every daemon inside and
//! deletes the namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::exec;
use crate::netns::{Host, Lab, SegmentKind};
use crate::topology::{Role, Topology};

/// Order in which roles are provisioned: what a role connects to is up before it starts.
pub(crate) const ROLE_ORDER: [Role; 5] = [
    Role::Router,
    Role::Services,
    Role::Balancer,
    Role::Backend,
    Role::Client,
];

/// The project's binaries every lab needs (built with `cargo build --release`).
pub const BINARIES: [&str; 3] = ["lbd", "lbctl", "app"];

/// How a [`System`] is started.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// The repository root (holds `vagrant/provision`).
    pub repo: PathBuf,
    /// Folder holding `lbd`, `lbctl` and `app`.
    pub bin_dir: PathBuf,
    /// Fixed lab name (`lab` for `cargo xtask lab`), or `None` for a unique `lbt...` prefix.
    pub name: Option<String>,
    /// How long every backend may take to register and turn healthy on the first balancer.
    pub healthy_timeout: Duration,
    /// Print one line per step on stderr.
    pub progress: bool,
    /// lbd's `[dataplane] xdp_mode` on the balancers: `auto` (native on veth), `driver` or
    /// `generic`. With `generic` the bridge ports get no `xdp_pass`: skb-mode XDP_TX needs no
    /// program on the peer, and without one the peer takes frames without copying them.
    pub xdp_mode: XdpMode,
    /// What joins the hosts (see [`SegmentKind`]). On macvlan lbd's `auto` XDP mode is generic.
    pub segment: SegmentKind,
    /// Balancers not started by [`System::start`] (a test scales out to them later with
    /// [`System::provision`]).
    pub held_back: Vec<String>,
    /// Variables given to every host's scripts after the topology's own (they win), e.g.
    /// `LAB_HA=vrrp` to run the VRRP pair in the BGP lab's topology (a benchmark's baseline).
    pub env: Vec<(String, String)>,
}

/// See [`SystemOptions::xdp_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode where the interface supports it, else generic.
    #[default]
    Auto,
    /// Native mode or fail.
    Driver,
    /// skb mode.
    Generic,
}

impl XdpMode {
    /// The value of lbd's `xdp_mode` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Driver => "driver",
            XdpMode::Generic => "generic",
        }
    }
}

impl SystemOptions {
    /// Options for the repository at `repo` with binaries in `bin_dir`, a unique name, quiet.
    pub fn new(repo: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            repo: repo.into(),
            bin_dir: bin_dir.into(),
            name: None,
            healthy_timeout: Duration::from_secs(60),
            progress: false,
            xdp_mode: XdpMode::Auto,
            segment: SegmentKind::Bridge,
            held_back: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The repository this crate was built from, with binaries in `$CARGO_TARGET_DIR/release`
    /// (default `target/release`): what the end-to-end tests use.
    pub fn from_build() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target"));
        Self::new(repo.clone(), target.join("release"))
    }
}

/// A running system in a lab; see the module documentation.
#[derive(Debug)]
pub struct System {
    lab: Lab,
    opts: SystemOptions,
    bpffs: PathBuf,
}

impl System {
    /// The lab description `vagrant/topology.json` of the repository in `opts`.
    pub fn topology(opts: &SystemOptions) -> Result<Topology> {
        Ok(Topology::load(opts.repo.join("vagrant/topology.json"))?)
    }

    /// The same file's lab for `ha` (see [`Topology::with_ha`]).
    pub fn topology_for(opts: &SystemOptions, ha: crate::HaMode) -> Result<Topology> {
        Ok(Self::topology(opts)?.with_ha(ha)?)
    }

    /// Creates the lab for `topology` and provisions every host, then waits until the first
    /// balancer sees every backend healthy. On error everything created so far is removed.
    pub fn start(topology: &Topology, opts: SystemOptions) -> Result<Self> {
        for bin in BINARIES {
            let p = opts.bin_dir.join(bin);
            if !p.is_file() {
                return Err(LabError::Option {
                    option: format!("binary {bin}"),
                    reason: format!(
                        "{} is missing: build it with `cargo build --release -p lbd -p lbctl -p app --bins`",
                        p.display()
                    ),
                });
            }
        }
        let builder = Lab::builder(topology).segment(opts.segment);
        let builder = match &opts.name {
            Some(name) => builder.named(name),
            None => builder,
        };
        let lab = builder.build()?;
        let bpffs = lab.bpffs()?;
        let system = Self { lab, opts, bpffs };
        system.step(&format!(
            "created {} hosts as namespaces `{}-*` on {} {}",
            system.lab.hosts().len(),
            system.lab.prefix(),
            system.lab.segment_kind().as_str(),
            system.lab.bridge()
        ));
        if system.opts.xdp_mode != XdpMode::Generic && system.opts.segment == SegmentKind::Bridge {
            system.attach_bridge_programs()?;
        }
        for role in ROLE_ORDER {
            for host in system.lab.hosts_with_role(role) {
                if !system.opts.held_back.iter().any(|h| h == host.name()) {
                    system.provision(host.name())?;
                }
            }
        }
        let backends = system.lab.hosts_with_role(Role::Backend).count();
        if let Some(lb) = system.balancers().first() {
            system.step(&format!(
                "waiting for {backends} backends to register with both VIPs and turn healthy on {lb}"
            ));
            system.wait_healthy(lb, system.vip_backends(), system.opts.healthy_timeout)?;
        }
        Ok(system)
    }

    fn step(&self, msg: &str) {
        if self.opts.progress {
            eprintln!("==> {msg}");
        }
    }

    /// The lab the system runs in.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Hands the lab over (to persist it or tear it down explicitly).
    pub fn into_lab(self) -> Lab {
        self.lab
    }

    /// Names of the balancer hosts, in topology order.
    pub fn balancers(&self) -> Vec<String> {
        self.names(Role::Balancer)
    }

    /// Names of the backend hosts, in topology order.
    pub fn backends(&self) -> Vec<String> {
        self.names(Role::Backend)
    }

    fn names(&self, role: Role) -> Vec<String> {
        self.lab
            .hosts_with_role(role)
            .map(|h| h.name().to_string())
            .collect()
    }

    /// Backend entries `lbd` has when every backend registered: each registers with the IPv4
    /// VIP (by its IPv4 address) and with the IPv6 VIP (by its IPv6 address).
    pub fn vip_backends(&self) -> usize {
        self.backends().len() * 2
    }

    /// Path of the project binary `name`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.opts.bin_dir.join(name)
    }

    /// Folder the provisioning scripts give host `host` (logs, data, pid files).
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.lab.dir().join("hosts").join(host)
    }

    /// `lbd`'s unix socket on balancer `lb`.
    pub fn lbd_socket(&self, lb: &str) -> PathBuf {
        self.host_dir(lb).join("lbd.sock")
    }

    /// The API token shared by the balancers and the backends (also the apps' admin token).
    pub fn token_file(&self) -> PathBuf {
        self.lab.dir().join("token")
    }

    /// The token itself (for the apps' admin routes, e.g. `PUT /orders/stock/...`).
    pub fn token(&self) -> Result<String> {
        let path = self.token_file();
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| LabError::io(format!("reading {}", path.display()), e))
    }

    /// Where the balancers pin their maps (one folder per host below it).
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// `lbctl --socket SOCK --timeout 3` for balancer `lb` (a unix socket needs no namespace).
    pub fn lbctl(&self, lb: &str) -> Command {
        let mut c = Command::new(self.bin("lbctl"));
        c.arg("--socket")
            .arg(self.lbd_socket(lb))
            .args(["--timeout", "3"]);
        c
    }

    /// `lbctl --json ARGS...` against balancer `lb`, parsed.
    pub fn lbctl_json<I, S>(&self, lb: &str, args: I) -> Result<serde_json::Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.lbctl(lb);
        cmd.arg("--json").args(args);
        let out = exec::output(&mut cmd, Duration::from_secs(10))?;
        exec::check(&cmd, &out)?;
        serde_json::from_slice(&out.stdout).map_err(|e| LabError::Parse {
            command: exec::describe(&cmd),
            reason: e.to_string(),
        })
    }

    /// Backends `lbd` on `lb` reports healthy.
    pub fn healthy_backends(&self, lb: &str) -> Result<usize> {
        let json = self.lbctl_json(lb, ["health"])?;
        Ok(json
            .as_array()
            .map(|a| a.iter().filter(|b| b["health"] == "healthy").count())
            .unwrap_or(0))
    }

    /// The VRRP state of every virtual router of `lbd` on `lb` (`master`, `backup`, ...): one
    /// entry per router, whether `lbctl vrrp` answers one object or a list of them.
    pub fn vrrp_states(&self, lb: &str) -> Result<Vec<String>> {
        let json = self.lbctl_json(lb, ["vrrp"])?;
        let routers: Vec<&serde_json::Value> = match &json {
            serde_json::Value::Array(a) => a.iter().collect(),
            serde_json::Value::Object(o) if !o.contains_key("state") => o
                .values()
                .flat_map(|v| v.as_array().into_iter().flatten())
                .collect(),
            other => vec![other],
        };
        Ok(routers
            .iter()
            .filter_map(|r| r["state"].as_str().map(str::to_string))
            .collect())
    }

    /// Whether every VRRP router of `lbd` on `lb` is master (false when it does not answer).
    pub fn is_master(&self, lb: &str) -> bool {
        self.vrrp_states(lb)
            .is_ok_and(|s| !s.is_empty() && s.iter().all(|s| s == "master"))
    }

    /// The last `lines` lines of daemon `daemon`'s log on `host` (for failure messages).
    pub fn log_tail(&self, host: &str, daemon: &str, lines: usize) -> String {
        let path = self.host_dir(host).join(format!("{daemon}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- {} (last {lines} lines)\n{}",
            path.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Failure context: the last 25 lines of each `(host, daemon)` log.
    pub fn log_tails(&self, which: &[(&str, &str)]) -> String {
        which
            .iter()
            .map(|(h, d)| self.log_tail(h, d, 25))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (bounded by `timeout`) until `lb` reports at least `want` healthy backends.
    pub fn wait_healthy(&self, lb: &str, want: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let healthy = self.healthy_backends(lb).unwrap_or(0);
            if healthy >= want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    command: format!("{want} healthy backends on {lb} (have {healthy})"),
                    timeout,
                    detail: format!("; logs in {}", self.lab.dir().join("hosts").display()),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// XDP_TX from a balancer's eth0 is dropped unless the bridge-side end of its veth runs an
    /// XDP program (platform notes): attach `xdp_pass` there, pinned so it outlives `lbctl`.
    fn attach_bridge_programs(&self) -> Result<()> {
        let pins = self.bpffs.join("bridge");
        for host in self.lab.hosts_with_role(Role::Balancer) {
            let port = host.bridge_port()?;
            self.step(&format!(
                "xdp_pass on bridge port {port} (peer of {}/eth0)",
                host.name()
            ));
            let mut c = exec::netns_command(self.lab.bridge_ns(), [self.bin("lbctl")]);
            c.args(["xdp", "attach", "--program", "pass", "--iface"])
                .arg(port)
                .arg("--pin-dir")
                .arg(&pins);
            exec::run(&mut c)?;
        }
        Ok(())
    }

    /// Runs `common.sh` then `ROLE.sh` inside host `name`. Idempotent: daemons already running
    /// are left alone, so this also restarts a daemon that was killed.
    pub fn provision(&self, name: &str) -> Result<()> {
        let host = self.lab.host(name)?;
        let dir = self.opts.repo.join("vagrant/provision");
        let started = Instant::now();
        self.step(&format!("provisioning {} ({})", host.name(), host.role()));
        self.forget_dead_daemons(name);
        for script in host.node().provision_scripts() {
            let mut c = host.command(["sh".as_ref(), dir.join(&script).as_os_str()]);
            c.envs(self.provision_env(host))
                .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
                .env("LAB_START", "1")
                .env("LAB_BIN_DIR", &self.opts.bin_dir)
                .env("LAB_TOKEN_FILE", self.token_file())
                .env("LAB_PIN_DIR", self.bpffs.join(host.name()))
                .env("LAB_XDP_MODE", self.opts.xdp_mode.as_str());
            // Bounded by exec's default timeout; daemons are left in the background.
            let out = exec::run(&mut c)?;
            if self.opts.progress {
                for line in out.lines().filter(|l| !l.contains("/common]")) {
                    eprintln!("    {line}");
                }
            }
        }
        self.step(&format!(
            "{} ready in {:.1} s",
            host.name(),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Removes the pid files of daemons that are gone. The scripts test a pid with `kill -0`,
    /// which also succeeds for a zombie that init has not reaped yet, so a daemon restarted
    /// right after it exited would be taken for running and not started.
    fn forget_dead_daemons(&self, host: &str) {
        let Ok(dir) = std::fs::read_dir(self.host_dir(host)) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pid") {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                if pid.is_none_or(|p| !alive(p)) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    fn provision_env(&self, host: &Host) -> Vec<(String, String)> {
        self.lab.provision_env(host)
    }

    /// Pid of daemon `daemon` (`lbd`, `app`, `redis`, `postgres`) on `host`, if it runs.
    pub fn daemon_pid(&self, host: &str, daemon: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.host_dir(host).join(format!("{daemon}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Sends `signal` to daemon `daemon` on `host` and, for SIGKILL, waits (bounded) until it
    /// is gone. Fails if the daemon does not run.
    pub fn signal_daemon(&self, host: &str, daemon: &str, signal: i32) -> Result<()> {
        let pid = self
            .daemon_pid(host, daemon)
            .ok_or_else(|| LabError::Option {
                option: format!("{host}/{daemon}"),
                reason: "the daemon is not running".into(),
            })?;
        // SAFETY: plain kill(2) on a pid we read from the daemon's own pid file.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(LabError::io(
                format!("kill -{signal} {pid} ({host}/{daemon})"),
                std::io::Error::last_os_error(),
            ));
        }
        if signal == libc::SIGKILL {
            self.wait_gone(host, daemon, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Waits (bounded) until daemon `daemon` on `host` no longer runs.
    pub fn wait_gone(&self, host: &str, daemon: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.daemon_pid(host, daemon).is_some() {
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    command: format!("{host}/{daemon} to exit"),
                    timeout,
                    detail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Tears the lab down now and reports errors.
    pub fn teardown(self) -> Result<()> {
        self.lab.teardown()
    }
}

/// Whether `pid` runs (a zombie does not count: pid 1 of a container may never reap it).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}
