//! Ad-hoc topologies built in code (small labs for tests), addressed like the full lab.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{
    Ipv4Net, Ipv6Net, Node, Protocol, Role, Segment, Service, Topology, TopologyError, Vip,
};

/// Builds a [`Topology`] in code. Host number `N` gets `10.77.0.N` and `fd77::N` (the same
/// digits, as in `vagrant/topology.json`), relative to the segment's prefixes.
///
/// ```
/// use tests::topology::{Role, Topology};
/// let topo = Topology::builder()
///     .node("client", Role::Client, 10)
///     .balancer("lb1", 2, 100)
///     .node("be1", Role::Backend, 11)
///     .build()
///     .unwrap();
/// assert_eq!(topo.node("be1").unwrap().ipv6().to_string(), "fd77::11");
/// ```
#[derive(Debug)]
pub struct TopologyBuilder {
    segment: Segment,
    vip: Vip,
    nodes: Vec<Node>,
    /// First problem met while adding nodes; reported by `build` with its field.
    error: Option<TopologyError>,
}

impl TopologyBuilder {
    pub(super) fn new() -> Self {
        Self {
            segment: Segment {
                bridge: "lab0".to_string(),
                ipv4: Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 24).expect("constant prefix"),
                ipv6: Ipv6Net::new(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0), 64)
                    .expect("constant prefix"),
                mtu: 1500,
            },
            vip: Vip {
                name: "web".to_string(),
                ipv4: Ipv4Addr::new(10, 77, 0, 100),
                ipv6: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100),
                port: 80,
                protocol: Protocol::Tcp,
            },
            nodes: Vec::new(),
            error: None,
        }
    }

    /// Sets the default MTU of every link.
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.segment.mtu = mtu;
        self
    }

    /// Sets the VIP's port and protocol (addresses stay host number 100).
    pub fn vip_port(mut self, port: u16, protocol: Protocol) -> Self {
        self.vip.port = port;
        self.vip.protocol = protocol;
        self
    }

    /// Adds a node with host number `n`. Balancers need [`Self::balancer`] (a priority) and
    /// services nodes [`Self::services`]; `build` reports the missing field otherwise.
    pub fn node(self, name: &str, role: Role, n: u8) -> Self {
        self.push(name, role, n, None, Vec::new())
    }

    /// Adds a balancer with host number `n` and VRRP priority `priority`.
    pub fn balancer(self, name: &str, n: u8, priority: u8) -> Self {
        self.push(name, Role::Balancer, n, Some(priority), Vec::new())
    }

    /// Adds a services node with host number `n` running `services`.
    pub fn services(self, name: &str, n: u8, services: &[Service]) -> Self {
        self.push(name, Role::Services, n, None, services.to_vec())
    }

    fn push(
        mut self,
        name: &str,
        role: Role,
        n: u8,
        priority: Option<u8>,
        services: Vec<Service>,
    ) -> Self {
        let field = format!("nodes[{}]", self.nodes.len());
        let ipv4 = self.segment.ipv4.host(u32::from(n));
        // "fd77::N" with N's decimal digits read as hex, so .10 pairs with ::10 as in the file.
        let ipv6 = u128::from_str_radix(&n.to_string(), 16)
            .ok()
            .and_then(|h| self.segment.ipv6.host(h));
        match (ipv4, ipv6) {
            (Some(ipv4), Some(ipv6)) => self.nodes.push(Node {
                name: name.to_string(),
                role,
                ipv4,
                ipv6,
                priority,
                services,
                edge: false,
                edge_ipv4: None,
                edge_ipv6: None,
            }),
            _ => {
                let e = TopologyError::invalid(
                    field,
                    format!("host number {n} is outside the segment"),
                );
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Validates and returns the topology.
    pub fn build(self) -> Result<Topology, TopologyError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let topo = Topology {
            segment: self.segment,
            vip: self.vip,
            nodes: self.nodes,
            bgp: None,
            ha: Default::default(),
        };
        topo.validate()?;
        Ok(topo)
    }
}
