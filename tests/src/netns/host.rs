//! One host of a lab: a network namespace with `eth0` on the lab bridge.

use std::ffi::OsStr;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::exec::{self, DEFAULT_TIMEOUT, describe, netns_command};
use crate::process::Process;
use crate::setns;
use crate::topology::{Node, Role};

/// Name of every host's lab interface inside its namespace.
pub const HOST_IFACE: &str = "eth0";

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;
    /// Parses `aa:bb:cc:dd:ee:ff`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .ok_or_else(|| format!("`{s}` has fewer than 6 octets"))?;
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("`{s}`: `{part}` is not a hex octet"))?;
        }
        if parts.next().is_some() {
            return Err(format!("`{s}` has more than 6 octets"));
        }
        Ok(Self(out))
    }
}

/// A lab host. Obtained from [`crate::netns::Lab::host`]; lives as long as the lab.
#[derive(Debug, Clone)]
pub struct Host {
    node: Node,
    ns: String,
    bridge_port: Option<String>,
    mtu: u16,
    log_dir: PathBuf,
}

impl Host {
    pub(crate) fn new(
        node: Node,
        ns: String,
        bridge_port: Option<String>,
        mtu: u16,
        log_dir: PathBuf,
    ) -> Self {
        Self {
            node,
            ns,
            bridge_port,
            mtu,
            log_dir,
        }
    }

    /// Host name from the topology (e.g. `client`).
    pub fn name(&self) -> &str {
        self.node.name()
    }

    /// The topology entry (role, addresses, priority, services).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The host's role.
    pub fn role(&self) -> Role {
        self.node.role()
    }

    /// IPv4 address on `eth0`.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.node.ipv4()
    }

    /// IPv6 address on `eth0`.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.node.ipv6()
    }

    /// Network namespace name (`ip netns exec NS ...`, `/run/netns/NS`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The lab interface inside the namespace: always `eth0`.
    pub fn iface(&self) -> &'static str {
        HOST_IFACE
    }

    /// The bridge-side end of this host's veth, inside [`crate::netns::Lab::bridge_ns`]. XDP_TX
    /// from `eth0` needs an XDP program on this peer (platform notes). A macvlan segment has
    /// none: the error says so.
    pub fn bridge_port(&self) -> Result<&str> {
        self.bridge_port.as_deref().ok_or_else(|| LabError::Option {
            option: format!("bridge_port({})", self.name()),
            reason: "the lab's segment is macvlan: hosts have no bridge port".into(),
        })
    }

    /// MTU of this host's link.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// A `Command` running `args` inside this host (`ip netns exec NS ARGS...`), for callers
    /// that need env vars or a working directory; run it with [`exec::run`] or
    /// [`Host::spawn_command`].
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        netns_command(&self.ns, args)
    }

    /// Runs `args` inside this host to completion (bounded by [`DEFAULT_TIMEOUT`]), requires
    /// success and returns stdout. Errors carry the command line and stderr.
    pub fn exec<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        exec::run(&mut self.command(args))
    }

    /// Runs `args` inside this host to completion whatever the exit status (bounded by
    /// [`DEFAULT_TIMEOUT`]).
    pub fn output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        exec::output(&mut self.command(args), DEFAULT_TIMEOUT)
    }

    /// Starts a long-running `args` inside this host; its output goes to
    /// `LABDIR/HOST-NAME.log`; dropping the [`Process`] kills its whole process group.
    pub fn spawn<I, S>(&self, name: &str, args: I) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_command(name, self.command(args))
    }

    /// Like [`Host::spawn`] for a command built with [`Host::command`] (env, working dir).
    pub fn spawn_command(&self, name: &str, cmd: Command) -> Result<Process> {
        Process::spawn(&format!("{}-{name}", self.name()), cmd, &self.log_dir)
    }

    /// Runs the closure on a thread inside this host's namespace (see [`setns::in_netns`]):
    /// sockets it creates belong to this host.
    pub fn in_netns<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        setns::in_netns(&self.ns, f)
    }

    /// Starts a background thread inside this host's namespace (see [`setns::spawn_in_netns`]).
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        setns::spawn_in_netns(&self.ns, f)
    }

    /// MAC address of this host's `eth0`.
    pub fn mac(&self) -> Result<MacAddr> {
        let mut cmd = exec::tool("ip");
        cmd.args(["-n", &self.ns, "-j", "link", "show", "dev", HOST_IFACE]);
        let out = exec::run(&mut cmd)?;
        let parse_err = |reason: String| LabError::Parse {
            command: describe(&cmd),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| parse_err(e.to_string()))?;
        let addr = json
            .get(0)
            .and_then(|l| l.get("address"))
            .and_then(|a| a.as_str())
            .ok_or_else(|| parse_err("no `address` field".to_string()))?;
        addr.parse().map_err(parse_err)
    }

    /// Sets a sysctl inside this host (`sysctl -w KEY=VALUE`; `net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Waits (bounded by `timeout`) until a TCP connect from this host to `addr` succeeds,
    /// e.g. for a server started on another host to listen.
    pub fn wait_tcp(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt =
                self.in_netns(|| TcpStream::connect_timeout(&addr, Duration::from_millis(500)))?;
            let last = match attempt {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    command: format!("TCP connect from {} to {addr}", self.name()),
                    timeout,
                    detail: format!(" (last error: {last})"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let mac: MacAddr = "0a:1B:22:33:44:ff".parse().unwrap();
        assert_eq!(mac.0, [0x0a, 0x1b, 0x22, 0x33, 0x44, 0xff]);
        assert_eq!(mac.to_string(), "0a:1b:22:33:44:ff");
        assert!("0a:1b:22".parse::<MacAddr>().is_err());
        assert!("0a:1b:22:33:44:55:66".parse::<MacAddr>().is_err());
        assert!("zz:1b:22:33:44:55".parse::<MacAddr>().is_err());
    }
}
