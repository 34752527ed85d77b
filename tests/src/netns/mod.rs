//! Labs made of network namespaces around one L2 segment, built from a [`Topology`].
//!
//! Layout of a lab with prefix `P` (e.g. `lbt1234x0`):
//! - namespace `P_br` holds the segment, named as in the topology (e.g. `lab0`). The default
//!   [`SegmentKind::Bridge`] is a Linux bridge with the bridge-side veth ends `b<i>-<host>`;
//!   [`SegmentKind::Macvlan`] is a veth end whose macvlans (bridge mode) are the hosts'
//!   `eth0`, which switches frames between hosts without a bridge or a veth hop. IPv6 is off
//!   there so the segment stays silent;
//! - namespace `P-<host>` per host, with `lo` and `eth0` up, the host's IPv4/IPv6 addresses
//!   (`nodad`), tx checksum offload off (platform notes: XDP_TX loses the offload mark).
//!
//! veths are created directly inside the namespaces, so the root namespace never holds a lab
//! interface. Dropping the [`Lab`] (also while unwinding from a panic) kills what runs inside
//! and deletes every namespace; [`cleanup_stale`] removes what a killed test process left.

mod host;
mod names;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

pub use host::{HOST_IFACE, Host, MacAddr};
pub use names::{DEFAULT_BASE, cleanup_stale, destroy, labs_root, list_namespaces};

use crate::bpffs::BpfFs;
use crate::error::{LabError, Result};
use crate::exec::{LAB_TOOLS, netns_command, require_root, require_tools, run, tool};
use crate::topology::{Role, Topology};

/// Sysctls of every host namespace, set before its `eth0` exists so new interfaces inherit them.
const HOST_SYSCTLS: &[(&str, &str)] = &[
    // Addresses are added with `nodad`; this covers the link-local one too.
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
];

/// The bridge namespace only switches frames: no addresses, no IPv6 chatter.
const BRIDGE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
];

/// Stale labs are removed once per process, on the first lab created.
static CLEANUP: Once = Once::new();

#[derive(Debug, Clone)]
enum Naming {
    Unique(String),
    Named(String),
}

/// What joins the hosts' `eth0` into one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegmentKind {
    /// veth pairs on a Linux bridge: every host has a bridge port ([`Host::bridge_port`]) that
    /// tests can capture on, take down or attach programs to. XDP runs natively on veth.
    #[default]
    Bridge,
    /// macvlans in bridge mode on one lower device: a frame crosses one device instead of two
    /// veths and a bridge, as on a switch, so a hop costs less CPU. XDP on macvlan is generic
    /// (skb) mode only, and hosts have no bridge port.
    Macvlan,
}

impl SegmentKind {
    /// Name in options and progress lines.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Bridge => "bridge",
            SegmentKind::Macvlan => "macvlan",
        }
    }
}

/// Options for [`Lab::create`]; get one from [`Lab::builder`].
#[derive(Debug, Clone)]
pub struct LabBuilder<'a> {
    topology: &'a Topology,
    naming: Naming,
    segment: SegmentKind,
    mtu: HashMap<String, u16>,
    sysctls: Vec<(String, String, String)>,
}

impl LabBuilder<'_> {
    /// Prefix base for the unique lab name (default [`DEFAULT_BASE`], `lbt`): 1-12 of a-z, 0-9.
    pub fn base(mut self, base: &str) -> Self {
        self.naming = Naming::Unique(base.to_string());
        self
    }

    /// Uses the fixed prefix `name` (namespaces `NAME-client`, ...), e.g. `lab` for
    /// `cargo xtask lab`. Fails if a live lab of that name exists; a stale one is replaced.
    pub fn named(mut self, name: &str) -> Self {
        self.naming = Naming::Named(name.to_string());
        self
    }

    /// What joins the hosts (default [`SegmentKind::Bridge`]).
    pub fn segment(mut self, kind: SegmentKind) -> Self {
        self.segment = kind;
        self
    }

    /// MTU of `host`'s link (both veth ends); the default is the segment's MTU.
    pub fn mtu(mut self, host: &str, mtu: u16) -> Self {
        self.mtu.insert(host.to_string(), mtu);
        self
    }

    /// Sets sysctl `key=value` inside `host` once its `eth0` is up (so `net.ipv4.conf.eth0.*`
    /// keys work), e.g. `arp_ignore` on backends.
    pub fn sysctl(mut self, host: &str, key: &str, value: &str) -> Self {
        self.sysctls
            .push((host.to_string(), key.to_string(), value.to_string()));
        self
    }

    /// Builds the lab. Needs root and `ip`, `ethtool`, `sysctl`.
    pub fn build(self) -> Result<Lab> {
        require_root()?;
        require_tools(LAB_TOOLS)?;
        self.check_options()?;
        CLEANUP.call_once(|| match cleanup_stale(DEFAULT_BASE) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, "removed stale lab namespaces")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cleaning up stale labs: {e}"),
        });
        let claim = match &self.naming {
            Naming::Unique(base) => names::claim_unique(base)?,
            Naming::Named(name) => names::claim_named(name)?,
        };
        let mut lab = Lab {
            segment: self.segment,
            bridge_ns: names::bridge_ns(&claim.prefix),
            prefix: claim.prefix,
            dir: claim.dir,
            topology: self.topology.clone(),
            hosts: Vec::new(),
            created: Vec::new(),
            bpffs: Mutex::new(None),
            done: false,
        };
        // On error `lab` is dropped here and removes whatever was created so far.
        // A macvlan's MTU may not exceed its lower device's.
        let max_mtu = self
            .mtu
            .values()
            .copied()
            .chain([self.topology.segment().mtu()])
            .max()
            .unwrap_or(1500);
        lab.create_segment(max_mtu)?;
        if let Some(edge) = self.topology.edge() {
            if self.segment != SegmentKind::Bridge {
                return Err(LabError::Option {
                    option: "segment".into(),
                    reason: "the BGP lab's edge segment needs bridge segments".into(),
                });
            }
            let ns = lab.bridge_ns.clone();
            ip(
                &ns,
                &[
                    "link",
                    "add",
                    edge.bridge(),
                    "type",
                    "bridge",
                    "mcast_snooping",
                    "0",
                ],
            )?;
            ip(&ns, &["link", "set", edge.bridge(), "up"])?;
        }
        for (i, node) in self.topology.nodes().iter().enumerate() {
            let mtu = self
                .mtu
                .get(node.name())
                .copied()
                .unwrap_or(self.topology.segment().mtu());
            let sysctls: Vec<(&str, &str)> = self
                .sysctls
                .iter()
                .filter(|(h, _, _)| h == node.name())
                .map(|(_, k, v)| (k.as_str(), v.as_str()))
                .collect();
            let host = lab.create_host(i, node.clone(), mtu, &sysctls)?;
            lab.hosts.push(host);
        }
        tracing::debug!(prefix = lab.prefix, hosts = lab.hosts.len(), "lab up");
        Ok(lab)
    }

    fn check_options(&self) -> Result<()> {
        let known = |host: &str, option: String| {
            if self.topology.node(host).is_some() {
                Ok(())
            } else {
                Err(LabError::Option {
                    option,
                    reason: format!("no host named `{host}` in the topology"),
                })
            }
        };
        for (host, mtu) in &self.mtu {
            known(host, format!("mtu({host})"))?;
            if *mtu < 1280 {
                return Err(LabError::Option {
                    option: format!("mtu({host})"),
                    reason: format!("{mtu} is below 1280, the IPv6 minimum"),
                });
            }
        }
        for (host, key, _) in &self.sysctls {
            known(host, format!("sysctl({host}, {key})"))?;
        }
        Ok(())
    }
}

/// A running lab; see the module docs for its layout.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    topology: Topology,
    segment: SegmentKind,
    bridge_ns: String,
    hosts: Vec<Host>,
    /// Namespaces in creation order (the bridge first), for teardown.
    created: Vec<String>,
    bpffs: Mutex<Option<BpfFs>>,
    /// Torn down or made persistent: Drop has nothing to do.
    done: bool,
}

impl Lab {
    /// Creates a lab with default options (unique prefix, segment MTU everywhere).
    pub fn create(topology: &Topology) -> Result<Self> {
        Self::builder(topology).build()
    }

    /// Options: prefix, per-host MTU and sysctls.
    pub fn builder(topology: &Topology) -> LabBuilder<'_> {
        LabBuilder {
            topology,
            naming: Naming::Unique(DEFAULT_BASE.to_string()),
            segment: SegmentKind::default(),
            mtu: HashMap::new(),
            sysctls: Vec::new(),
        }
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .ok_or_else(|| LabError::UnknownHost {
                name: name.to_string(),
                known: self
                    .hosts
                    .iter()
                    .map(Host::name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// All hosts, in topology order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Hosts with `role`, in topology order.
    pub fn hosts_with_role(&self, role: Role) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.role() == role)
    }

    /// The topology the lab was built from.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The unique prefix of this lab's namespaces (e.g. `lbt1234x0`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What joins the hosts.
    pub fn segment_kind(&self) -> SegmentKind {
        self.segment
    }

    /// Namespace holding the segment: the bridge and the bridge-side veth ends
    /// ([`Host::bridge_port`]), or the macvlans' lower device.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// [`Host::bridge_port`] of the host called `name`: where a balancer's XDP_TX peer
    /// program goes, or where its bridge flooding is set.
    pub fn bridge_port_of(&self, name: &str) -> Result<&str> {
        self.host(name)?.bridge_port()
    }

    /// Name of the segment device (bridge or macvlan lower) inside [`Lab::bridge_ns`].
    pub fn bridge(&self) -> &str {
        self.topology.segment().bridge()
    }

    /// Every namespace of the lab (bridge first).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// The lab's working directory (logs of spawned processes, bpffs); removed at teardown
    /// unless the thread is panicking, so a failed test leaves its logs behind.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Mounts (once) a private bpffs at `DIR/bpffs` and returns its path. It is visible to
    /// commands run with `ip netns exec` (unlike `/sys/fs/bpf`) and unmounted at teardown.
    pub fn bpffs(&self) -> Result<PathBuf> {
        let mut slot = self.bpffs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fs) = slot.as_ref() {
            return Ok(fs.path().to_path_buf());
        }
        let fs = BpfFs::mount(self.dir.join("bpffs"))?;
        let path = fs.path().to_path_buf();
        *slot = Some(fs);
        Ok(path)
    }

    /// Environment for `vagrant/provision/*.sh` run for `host` (see [`Topology::provision_env`]),
    /// plus `LAB_MODE=netns` and `LAB_DIR`.
    pub fn provision_env(&self, host: &Host) -> Vec<(String, String)> {
        let mut env = self.topology.provision_env(host.node());
        env.push(("LAB_MODE".into(), "netns".into()));
        env.push(("LAB_DIR".into(), self.dir.display().to_string()));
        env
    }

    /// Tears the lab down now and reports errors (Drop does the same but can only log them).
    pub fn teardown(mut self) -> Result<()> {
        self.done = true;
        self.teardown_inner()
    }

    /// Leaves the lab running after this value and process are gone (for `cargo xtask lab up`);
    /// [`cleanup_stale`] skips it. Remove it later with [`destroy`]`(prefix)`. Returns the prefix.
    pub fn persist(mut self) -> Result<String> {
        names::mark_persistent(&self.dir)?;
        self.done = true;
        // The bpffs stays mounted: pins in it belong to the persistent lab.
        if let Some(fs) = self.bpffs.lock().unwrap_or_else(|p| p.into_inner()).take() {
            std::mem::forget(fs);
        }
        Ok(self.prefix.clone())
    }

    fn teardown_inner(&mut self) -> Result<()> {
        drop(self.bpffs.lock().unwrap_or_else(|p| p.into_inner()).take());
        let mut first_err = None;
        // Hosts before the bridge: the bridge namespace is what marks the lab as present.
        for ns in self.created.iter().rev() {
            if let Err(e) = names::delete_namespace(ns) {
                first_err.get_or_insert(e);
            }
        }
        self.created.clear();
        if std::thread::panicking() {
            eprintln!("lab {}: logs kept in {}", self.prefix, self.dir.display());
        } else {
            names::unmount_below(&self.dir);
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                first_err
                    .get_or_insert(LabError::io(format!("removing {}", self.dir.display()), e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        run(tool("ip").args(["netns", "add", ns]))?;
        self.created.push(ns.to_string());
        Ok(())
    }

    fn create_segment(&mut self, mtu: u16) -> Result<()> {
        let ns = self.bridge_ns.clone();
        self.add_namespace(&ns)?;
        set_sysctls(&ns, BRIDGE_SYSCTLS.iter().copied())?;
        let dev = self.bridge().to_string();
        match self.segment {
            // Snooping off: with no querier on the segment it could hold back IPv6 multicast (ND).
            SegmentKind::Bridge => ip(
                &ns,
                &["link", "add", &dev, "type", "bridge", "mcast_snooping", "0"],
            )?,
            // The lower device is one end of a veth whose other end only sinks frames for
            // unknown MACs: the kernel may lack `dummy`, and a port-less bridge has no carrier,
            // which macvlans would inherit.
            SegmentKind::Macvlan => {
                let mut sink = format!("{dev}-sink");
                sink.truncate(15);
                ip(
                    &ns,
                    &["link", "add", &dev, "type", "veth", "peer", "name", &sink],
                )?;
                for d in [&dev, &sink] {
                    ip(&ns, &["link", "set", d, "mtu", &mtu.to_string(), "up"])?;
                }
            }
        }
        ip(&ns, &["link", "set", &dev, "up"])
    }

    fn create_host(
        &mut self,
        index: usize,
        node: crate::topology::Node,
        mtu: u16,
        sysctls: &[(&str, &str)],
    ) -> Result<Host> {
        let ns = names::host_ns(&self.prefix, node.name());
        self.add_namespace(&ns)?;
        set_sysctls(&ns, HOST_SYSCTLS.iter().copied())?;
        let bridge_port = self.make_iface(index, &node, &ns, mtu)?;
        if let Some((v4, v6)) = node.edge_addrs() {
            self.make_edge_iface(index, node.name(), &ns, v4, v6)?;
        }
        if !sysctls.is_empty() {
            set_sysctls(&ns, sysctls.iter().copied())?;
        }
        Ok(Host::new(node, ns, bridge_port, mtu, self.dir.clone()))
    }

    /// Makes `name`'s `eth0` again as the lab made it (link, MTU, its two addresses,
    /// offloads, bridge port), after a test deleted it to see how a daemon copes with a
    /// re-created interface. Addresses added later (VIPs) are not restored.
    pub fn recreate_iface(&self, name: &str) -> Result<()> {
        let host = self.host(name)?;
        // `host` is one of `self.hosts`: the position is there.
        let index = self
            .hosts
            .iter()
            .position(|h| h.name() == name)
            .unwrap_or_default();
        self.make_iface(index, host.node(), host.ns(), host.mtu())
            .map(drop)
    }

    /// A veth pair: `iface` in `ns`, its peer `port` in the bridge namespace. Both ends are
    /// born inside their namespaces: nothing ever appears in the root one.
    fn veth_to_bridge_ns(&self, ns: &str, iface: &str, port: &str) -> Result<()> {
        run(tool("ip").args([
            "link",
            "add",
            iface,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &self.bridge_ns,
        ]))
        .map(drop)
    }

    /// A router's second interface, `eth1`, on the edge segment (the client's side).
    fn make_edge_iface(
        &self,
        index: usize,
        name: &str,
        ns: &str,
        v4: std::net::Ipv4Addr,
        v6: std::net::Ipv6Addr,
    ) -> Result<()> {
        let Some(edge) = self.topology.edge() else {
            return Ok(());
        };
        let mut port = format!("e{index}-{name}");
        port.truncate(15);
        self.veth_to_bridge_ns(ns, "eth1", &port)?;
        let mtu = edge.mtu().to_string();
        ip(ns, &["link", "set", "eth1", "mtu", &mtu])?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("{v4}/{}", edge.ipv4().prefix_len()),
                "dev",
                "eth1",
            ],
        )?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("{v6}/{}", edge.ipv6().prefix_len()),
                "dev",
                "eth1",
                "nodad",
            ],
        )?;
        ip(ns, &["link", "set", "eth1", "up"])?;
        run(&mut netns_command(
            ns,
            ["ethtool", "-K", "eth1", "tx", "off"],
        ))?;
        ip(
            &self.bridge_ns,
            &[
                "link",
                "set",
                &port,
                "mtu",
                &mtu,
                "master",
                edge.bridge(),
                "up",
            ],
        )
    }

    /// Creates host `index`'s `eth0` inside `ns` on the lab's segment, with its MTU and
    /// addresses, up; returns its bridge port (bridge segment).
    fn make_iface(
        &self,
        index: usize,
        node: &crate::topology::Node,
        ns: &str,
        mtu: u16,
    ) -> Result<Option<String>> {
        // Unique inside the bridge namespace, at most 15 bytes (IFNAMSIZ - 1).
        let mut port = format!("b{index}-{}", node.name());
        port.truncate(15);
        match self.segment {
            SegmentKind::Bridge => self.veth_to_bridge_ns(ns, HOST_IFACE, &port)?,
            // Born beside its lower device under a name unique there, then moved and renamed.
            SegmentKind::Macvlan => {
                let lower = self.bridge().to_string();
                ip(
                    &self.bridge_ns,
                    &[
                        "link", "add", &port, "link", &lower, "type", "macvlan", "mode", "bridge",
                    ],
                )?;
                ip(&self.bridge_ns, &["link", "set", &port, "netns", ns])?;
                ip(ns, &["link", "set", &port, "name", HOST_IFACE])?;
            }
        }
        let mtu_s = mtu.to_string();
        // A node on the edge (the BGP lab's client) is addressed from it and bridged to it.
        let seg = match self.topology.edge() {
            Some(edge) if node.on_edge() => edge,
            _ => self.topology.segment(),
        };
        let bridge = seg.bridge();
        let v4 = format!("{}/{}", node.ipv4(), seg.ipv4().prefix_len());
        let v6 = format!("{}/{}", node.ipv6(), seg.ipv6().prefix_len());
        ip(ns, &["link", "set", "lo", "up"])?;
        ip(ns, &["link", "set", HOST_IFACE, "mtu", &mtu_s])?;
        ip(ns, &["addr", "add", &v4, "dev", HOST_IFACE])?;
        ip(ns, &["addr", "add", &v6, "dev", HOST_IFACE, "nodad"])?;
        ip(ns, &["link", "set", HOST_IFACE, "up"])?;
        // Required for any traffic that an XDP program bounces with XDP_TX (platform notes).
        run(&mut netns_command(
            ns,
            ["ethtool", "-K", HOST_IFACE, "tx", "off"],
        ))?;
        let bridge_port = match self.segment {
            SegmentKind::Bridge => {
                ip(
                    &self.bridge_ns,
                    &["link", "set", &port, "mtu", &mtu_s, "master", bridge, "up"],
                )?;
                Some(port)
            }
            SegmentKind::Macvlan => None,
        };
        Ok(bridge_port)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(e) = self.teardown_inner() {
            tracing::warn!(prefix = self.prefix, "lab teardown: {e}");
            eprintln!("lab {} teardown: {e}", self.prefix);
        }
    }
}

/// `ip -n NS ARGS...`
fn ip(ns: &str, args: &[&str]) -> Result<()> {
    run(tool("ip").args(["-n", ns]).args(args)).map(drop)
}

fn set_sysctls<'s>(ns: &str, kvs: impl Iterator<Item = (&'s str, &'s str)>) -> Result<()> {
    let args: Vec<String> = kvs.map(|(k, v)| format!("{k}={v}")).collect();
    let mut cmd = netns_command(ns, ["sysctl", "-q", "-w"]);
    cmd.args(&args);
    run(&mut cmd).map(drop)
}
