//! The lab description (`vagrant/topology.json`): one L2 segment, one VIP, and the nodes on it.
//!
//! The same file is read by the namespace lab ([`crate::netns::Lab`]) and by `vagrant/Vagrantfile`
//! (Ruby's JSON stdlib), so the two labs cannot drift. Every constructor validates: a
//! [`Topology`] value always has unique names and addresses inside the segment, and every
//! error names the offending field (`nodes[3].ipv4: ...`).

mod builder;
mod net;
mod validate;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use builder::TopologyBuilder;
pub use net::{Ipv4Net, Ipv6Net};

/// Path of the repository's lab description, `vagrant/topology.json`.
pub const LAB_TOPOLOGY_PATH: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../vagrant/topology.json");

/// Why a topology was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A field is missing, malformed or inconsistent with another one.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `nodes[3].ipv4` (`(document)` for syntax errors).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl TopologyError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The path of the field at fault, when the error is about a field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::Read { .. } => None,
        }
    }
}

/// What a node does in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends traffic to the VIP.
    Client,
    /// Runs `lbd` and the XDP program; one of the VRRP pair.
    Balancer,
    /// Runs `app` behind the VIP.
    Backend,
    /// Runs shared services (Redis, PostgreSQL).
    Services,
    /// The BGP lab's router (BIRD 2, ECMP over the balancers): on the segment and on the
    /// edge segment, where the client sits.
    Router,
}

impl Role {
    /// The lowercase name used in the file and in provisioning scripts (`vagrant/provision/ROLE.sh`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Balancer => "balancer",
            Self::Backend => "backend",
            Self::Services => "services",
            Self::Router => "router",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A shared service run by a `services` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// redis-server.
    Redis,
    /// PostgreSQL.
    Postgres,
    /// A Prometheus server scraping every lbd and app, with the rules of `prometheus/`
    /// (namespace lab only: the VM labs leave it out).
    Prometheus,
}

impl Service {
    /// The lowercase name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Postgres => "postgres",
            Self::Prometheus => "prometheus",
        }
    }
}

/// Transport protocol of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lowercase name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// The L2 segment every node sits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    bridge: String,
    ipv4: Ipv4Net,
    ipv6: Ipv6Net,
    mtu: u16,
}

impl Segment {
    /// Bridge device name (inside the lab's bridge namespace).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
    /// IPv4 prefix of the segment.
    pub fn ipv4(&self) -> Ipv4Net {
        self.ipv4
    }
    /// IPv6 prefix of the segment.
    pub fn ipv6(&self) -> Ipv6Net {
        self.ipv6
    }
    /// Default MTU of every link.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }
}

/// The virtual service address the balancers announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    name: String,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    port: u16,
    protocol: Protocol,
}

impl Vip {
    /// Service name (e.g. `web`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Name of the IPv6 VIP in `lbd`'s config: one VIP per family (as with IPVS or Katran),
    /// `NAME-v6` beside `NAME`. The Vagrantfile and the provisioning scripts get it as
    /// `LAB_VIP_NAME_V6`.
    pub fn ipv6_name(&self) -> String {
        format!("{}-v6", self.name)
    }
    /// IPv4 VIP.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }
    /// IPv6 VIP.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }
    /// Service port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Transport protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

/// One host of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    name: String,
    role: Role,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    services: Vec<Service>,
    /// On the edge segment instead of the main one (the BGP lab's client).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    edge: bool,
    /// A router's addresses on the edge segment (its second interface, `eth1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edge_ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edge_ipv6: Option<Ipv6Addr>,
}

impl Node {
    /// Host name (lowercase letters, digits, `-`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What the node does.
    pub fn role(&self) -> Role {
        self.role
    }
    /// IPv4 address on the segment.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }
    /// IPv6 address on the segment.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }
    /// Both addresses, IPv4 first.
    pub fn addrs(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.ipv4), IpAddr::V6(self.ipv6)]
    }
    /// VRRP priority: `Some` exactly for balancers.
    pub fn priority(&self) -> Option<u8> {
        self.priority
    }
    /// Services run by a `services` node, or folded into a backend (empty for other roles).
    pub fn services(&self) -> &[Service] {
        &self.services
    }
    /// Whether the node sits on the edge segment (behind the router) instead of the main one.
    pub fn on_edge(&self) -> bool {
        self.edge
    }
    /// A router's addresses on the edge segment.
    pub fn edge_addrs(&self) -> Option<(Ipv4Addr, Ipv6Addr)> {
        self.edge_ipv4.zip(self.edge_ipv6)
    }

    /// The provisioning scripts of this node, in order (file names in `vagrant/provision/`):
    /// `common.sh`, `services.sh` when a node of another role runs services, then `ROLE.sh`.
    /// The Vagrantfile computes the same list; a test compares them.
    pub fn provision_scripts(&self) -> Vec<String> {
        let mut scripts = vec!["common.sh".to_string()];
        if self.role != Role::Services && !self.services.is_empty() {
            scripts.push(format!("{}.sh", Role::Services.as_str()));
        }
        scripts.push(format!("{}.sh", self.role.as_str()));
        scripts
    }
}

/// How the balancers share the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HaMode {
    /// Today's pair: the VRRP master holds the VIP (the nodes of the file).
    #[default]
    Vrrp,
    /// Active-active: every balancer announces the VIP to the router over BGP, which spreads
    /// flows by ECMP (the nodes of the file changed by its `bgp` section).
    Bgp,
}

impl HaMode {
    /// `vrrp` or `bgp` (`LAB_HA`, `--ha`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vrrp => "vrrp",
            Self::Bgp => "bgp",
        }
    }
}

/// The `bgp` section: how the BGP lab differs from the VRRP pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpLab {
    /// The client's segment, behind the router.
    edge: Segment,
    /// The balancers' AS.
    asn: u32,
    /// The router's AS.
    router_asn: u32,
    hold_time_s: u16,
    keepalive_s: u16,
    /// BFD interval (multiplier 3); 0: no BFD.
    bfd_interval_ms: u32,
    /// Nodes replacing the file's node of the same name, or added.
    nodes: Vec<Node>,
}

impl BgpLab {
    /// The edge segment.
    pub fn edge(&self) -> &Segment {
        &self.edge
    }
    /// The balancers' AS.
    pub fn asn(&self) -> u32 {
        self.asn
    }
    /// The router's AS.
    pub fn router_asn(&self) -> u32 {
        self.router_asn
    }
    /// Hold time of every session.
    pub fn hold_time_s(&self) -> u16 {
        self.hold_time_s
    }
    /// Keepalive interval.
    pub fn keepalive_s(&self) -> u16 {
        self.keepalive_s
    }
    /// BFD interval in ms (0: off).
    pub fn bfd_interval_ms(&self) -> u32 {
        self.bfd_interval_ms
    }
}

/// A validated lab description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    segment: Segment,
    vip: Vip,
    nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bgp: Option<BgpLab>,
    /// Which lab this is (the file's nodes are the VRRP lab; see [`Topology::with_ha`]).
    #[serde(skip)]
    ha: HaMode,
}

impl Topology {
    /// Parses and validates a topology from JSON text.
    pub fn from_json(text: &str) -> Result<Self, TopologyError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let topo: Topology = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(document)".to_string()
            } else {
                path
            };
            TopologyError::invalid(field, e.into_inner().to_string())
        })?;
        topo.validate()?;
        if topo.bgp.is_some() {
            // The BGP lab must be valid too (its nodes are indexed after the merge).
            topo.with_ha(HaMode::Bgp).map_err(|e| match e {
                TopologyError::Invalid { field, reason } => {
                    TopologyError::invalid(format!("bgp lab: {field}"), reason)
                }
                other => other,
            })?;
        }
        Ok(topo)
    }

    /// Reads, parses and validates a topology file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The repository's lab: `vagrant/topology.json`.
    pub fn lab() -> Result<Self, TopologyError> {
        Self::load(LAB_TOPOLOGY_PATH)
    }

    /// Starts an ad-hoc topology on the lab's default segment (10.77.0.0/24, fd77::/64,
    /// bridge `lab0`, MTU 1500) with the default VIP (`web`, 10.77.0.100 / fd77::100, 80/tcp).
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::new()
    }

    /// A small ad-hoc topology for tests: `client` (.10), `lb1` (.2, priority 100) and
    /// `backends` backends `be1`.. (.11, .12, ...), addressed like the full lab.
    pub fn small(backends: u8) -> Result<Self, TopologyError> {
        let mut b = Self::builder()
            .node("client", Role::Client, 10)
            .balancer("lb1", 2, 100);
        for i in 1..=backends {
            b = b.node(&format!("be{i}"), Role::Backend, 10u8.saturating_add(i));
        }
        b.build()
    }

    /// The same segment and VIP with only the named nodes, in the order given.
    pub fn subset(&self, names: &[&str]) -> Result<Self, TopologyError> {
        let mut nodes = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let node = self.node(name).ok_or_else(|| {
                TopologyError::invalid(format!("subset[{i}]"), format!("no node named `{name}`"))
            })?;
            nodes.push(node.clone());
        }
        let topo = Self {
            segment: self.segment.clone(),
            vip: self.vip.clone(),
            nodes,
            bgp: self.bgp.clone(),
            ha: self.ha,
        };
        topo.validate()?;
        Ok(topo)
    }

    /// The lab for `ha`: the file's nodes for VRRP; for BGP those nodes changed by the `bgp`
    /// section (its nodes replace the node of the same name or are added: the router, the
    /// client moved behind it, a third balancer).
    pub fn with_ha(&self, ha: HaMode) -> Result<Self, TopologyError> {
        let mut topo = self.clone();
        topo.ha = ha;
        if ha == HaMode::Bgp {
            let bgp = self.bgp.as_ref().ok_or_else(|| {
                TopologyError::invalid("bgp", "the file has no `bgp` section: no BGP lab")
            })?;
            for n in &bgp.nodes {
                match topo.nodes.iter_mut().find(|m| m.name == n.name) {
                    Some(m) => *m = n.clone(),
                    None => topo.nodes.push(n.clone()),
                }
            }
        }
        topo.validate()?;
        Ok(topo)
    }

    /// The smallest lab that still runs every part, derived from this one for CI's VM test:
    /// the first client, the first balancer and the first backend, which also runs every
    /// service of the services nodes (Redis and PostgreSQL beside app). Addresses, VIP and
    /// segment stay as they are; the VRRP failover needs two balancers and is left to the full
    /// lab.
    pub fn reduced(&self) -> Result<Self, TopologyError> {
        let first = |role: Role| {
            self.nodes_with_role(role).next().cloned().ok_or_else(|| {
                TopologyError::invalid("nodes", format!("the reduced lab needs a {role} node"))
            })
        };
        let client = first(Role::Client)?;
        let balancer = first(Role::Balancer)?;
        let mut backend = first(Role::Backend)?;
        for s in self
            .nodes_with_role(Role::Services)
            .flat_map(|n| n.services.iter().copied())
            // Kept off the one small VM: Prometheus runs in the namespace lab.
            .filter(|s| *s != Service::Prometheus)
        {
            if !backend.services.contains(&s) {
                backend.services.push(s);
            }
        }
        let topo = Self {
            segment: self.segment.clone(),
            vip: self.vip.clone(),
            nodes: vec![client, balancer, backend],
            // The VM lab CI boots is the VRRP one, without the router.
            bgp: None,
            ha: HaMode::Vrrp,
        };
        topo.validate()?;
        Ok(topo)
    }

    /// Which lab this is.
    pub fn ha(&self) -> HaMode {
        self.ha
    }

    /// The `bgp` section, if the file has one.
    pub fn bgp(&self) -> Option<&BgpLab> {
        self.bgp.as_ref()
    }

    /// The edge segment, in the BGP lab.
    pub fn edge(&self) -> Option<&Segment> {
        match self.ha {
            HaMode::Bgp => self.bgp.as_ref().map(|b| &b.edge),
            HaMode::Vrrp => None,
        }
    }

    /// The router, in the BGP lab.
    pub fn router(&self) -> Option<&Node> {
        self.nodes_with_role(Role::Router).next()
    }

    /// Serializes back to pretty JSON (the file format).
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The VIP.
    pub fn vip(&self) -> &Vip {
        &self.vip
    }

    /// All nodes, in file order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Nodes with this role, in file order.
    pub fn nodes_with_role(&self, role: Role) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    /// Environment variables handed to the provisioning scripts (`vagrant/provision/*.sh`) for
    /// `node`. The Vagrantfile computes the same list in Ruby; a test compares the two.
    pub fn provision_env(&self, node: &Node) -> Vec<(String, String)> {
        let seg = &self.segment;
        let vip = &self.vip;
        let mut env = vec![
            ("LAB_NAME", node.name.clone()),
            ("LAB_ROLE", node.role.as_str().to_string()),
            ("LAB_IPV4", node.ipv4.to_string()),
            ("LAB_IPV6", node.ipv6.to_string()),
            ("LAB_IPV4_PREFIX", seg.ipv4.prefix_len().to_string()),
            ("LAB_IPV6_PREFIX", seg.ipv6.prefix_len().to_string()),
            ("LAB_MTU", seg.mtu.to_string()),
            ("LAB_VIP_NAME", vip.name.clone()),
            ("LAB_VIP_NAME_V6", vip.ipv6_name()),
            ("LAB_VIP_IPV4", vip.ipv4.to_string()),
            ("LAB_VIP_IPV6", vip.ipv6.to_string()),
            ("LAB_VIP_PORT", vip.port.to_string()),
            ("LAB_VIP_PROTOCOL", vip.protocol.as_str().to_string()),
            (
                "LAB_PRIORITY",
                node.priority.map(|p| p.to_string()).unwrap_or_default(),
            ),
            (
                "LAB_SERVICES",
                node.services
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ];
        // Peers by role, so a script can reach them without parsing the JSON itself.
        let ipv4s = |role| {
            let list: Vec<String> = self
                .nodes_with_role(role)
                .map(|n| n.ipv4.to_string())
                .collect();
            list.join(" ")
        };
        let ipv6s = |role| {
            let list: Vec<String> = self
                .nodes_with_role(role)
                .map(|n| n.ipv6.to_string())
                .collect();
            list.join(" ")
        };
        env.push(("LAB_BALANCERS", ipv4s(Role::Balancer)));
        env.push(("LAB_BACKENDS", ipv4s(Role::Backend)));
        // Whoever runs the services: the services host, or the backend they were folded into.
        let services: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.services.is_empty())
            .map(|n| n.ipv4.to_string())
            .collect();
        env.push(("LAB_SERVICES_IPV4", services.join(" ")));
        // The BGP lab (empty in the VRRP one): the router, the edge, the sessions.
        let bgp = self.bgp.as_ref().filter(|_| self.ha == HaMode::Bgp);
        let router = self.router();
        let (gw4, gw6) = match (router, node.edge) {
            (Some(r), false) if node.role != Role::Router => {
                (r.ipv4.to_string(), r.ipv6.to_string())
            }
            (Some(r), true) => r
                .edge_addrs()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default(),
            _ => Default::default(),
        };
        let (edge4, edge6) = node
            .edge_addrs()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap_or_default();
        let num = |f: fn(&BgpLab) -> u32| bgp.map(|b| f(b).to_string()).unwrap_or_default();
        let more = [
            ("LAB_HA", self.ha.as_str().to_string()),
            ("LAB_GATEWAY_IPV4", gw4),
            ("LAB_GATEWAY_IPV6", gw6),
            ("LAB_EDGE_IPV4", edge4),
            ("LAB_EDGE_IPV6", edge6),
            (
                "LAB_EDGE_NET4",
                bgp.map(|b| b.edge.ipv4.to_string()).unwrap_or_default(),
            ),
            (
                "LAB_EDGE_NET6",
                bgp.map(|b| b.edge.ipv6.to_string()).unwrap_or_default(),
            ),
            (
                "LAB_ROUTER_IPV4",
                router.map(|r| r.ipv4.to_string()).unwrap_or_default(),
            ),
            (
                "LAB_ROUTER_IPV6",
                router.map(|r| r.ipv6.to_string()).unwrap_or_default(),
            ),
            ("LAB_BGP_ASN", num(|b| b.asn)),
            ("LAB_ROUTER_ASN", num(|b| b.router_asn)),
            ("LAB_BGP_HOLD_S", num(|b| u32::from(b.hold_time_s))),
            ("LAB_BGP_KEEPALIVE_S", num(|b| u32::from(b.keepalive_s))),
            ("LAB_BGP_BFD_MS", num(|b| b.bfd_interval_ms)),
            ("LAB_BALANCERS_V6", ipv6s(Role::Balancer)),
            ("LAB_BACKENDS_V6", ipv6s(Role::Backend)),
        ];
        env.extend(more);
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_topology_is_addressed_like_the_lab() {
        let t = Topology::small(3).unwrap();
        let names: Vec<_> = t.nodes().iter().map(|n| n.name()).collect();
        assert_eq!(names, ["client", "lb1", "be1", "be2", "be3"]);
        let be3 = t.node("be3").unwrap();
        assert_eq!(be3.ipv4(), Ipv4Addr::new(10, 77, 0, 13));
        assert_eq!(be3.ipv6(), "fd77::13".parse::<Ipv6Addr>().unwrap());
        assert_eq!(t.node("lb1").unwrap().priority(), Some(100));
    }

    #[test]
    fn reduced_lab_folds_the_services_into_the_backend() {
        let full = Topology::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../vagrant/topology.json"
        ))
        .unwrap();
        let r = full.reduced().unwrap();
        let names: Vec<_> = r.nodes().iter().map(|n| n.name()).collect();
        assert_eq!(names, ["client", "lb1", "be1"]);
        let be1 = r.node("be1").unwrap();
        assert_eq!(be1.services(), [Service::Redis, Service::Postgres]);
        assert_eq!(
            be1.provision_scripts(),
            ["common.sh", "services.sh", "backend.sh"]
        );
        let env: std::collections::HashMap<_, _> = r.provision_env(be1).into_iter().collect();
        assert_eq!(env["LAB_SERVICES_IPV4"], "10.77.0.11");
        assert_eq!(env["LAB_BALANCERS"], "10.77.0.2");
        assert_eq!(Topology::from_json(&r.to_json()).unwrap(), r);
        let svc = full.node("svc").unwrap();
        assert_eq!(svc.provision_scripts(), ["common.sh", "services.sh"]);
    }

    #[test]
    fn json_round_trip() {
        let t = Topology::small(2).unwrap();
        assert_eq!(Topology::from_json(&t.to_json()).unwrap(), t);
    }
}
