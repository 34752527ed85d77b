//! Consistency rules that serde alone cannot express.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::{Node, Role, Topology, TopologyError};

/// Linux interface names hold at most 15 bytes.
const IFNAME_MAX: usize = 15;
/// Node names become part of namespace and interface names: keep them short.
const NODE_NAME_MAX: usize = 32;
/// IPv6 needs at least 1280; veth accepts up to 65535.
const MTU_MIN: u16 = 1280;

fn err(field: impl Into<String>, reason: impl Into<String>) -> TopologyError {
    TopologyError::invalid(field, reason)
}

impl Topology {
    pub(crate) fn validate(&self) -> Result<(), TopologyError> {
        self.validate_segment()?;
        // Every address in use, with the field that claimed it first.
        let mut taken: HashMap<IpAddr, String> = HashMap::new();
        self.validate_vip(&mut taken)?;
        if self.nodes.is_empty() {
            return Err(err("nodes", "the lab needs at least one node"));
        }
        let mut names = HashSet::new();
        let mut priorities: HashMap<u8, &str> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let at = format!("nodes[{i}]");
            validate_name(&format!("{at}.name"), &node.name)?;
            if !names.insert(node.name.as_str()) {
                return Err(err(
                    format!("{at}.name"),
                    format!("`{}` is used by an earlier node", node.name),
                ));
            }
            self.validate_addrs(&at, node, &mut taken)?;
            validate_role_fields(&at, node, &mut priorities)?;
        }
        Ok(())
    }

    fn validate_segment(&self) -> Result<(), TopologyError> {
        let seg = &self.segment;
        let bridge = &seg.bridge;
        if bridge.is_empty()
            || bridge.len() > IFNAME_MAX
            || !bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                "segment.bridge",
                format!("`{bridge}` is not an interface name (1-{IFNAME_MAX} of a-z, 0-9, -, _)"),
            ));
        }
        if seg.ipv4.prefix_len() > 30 {
            return Err(err(
                "segment.ipv4",
                format!("{} leaves no room for hosts (use /30 or wider)", seg.ipv4),
            ));
        }
        if seg.ipv6.prefix_len() > 126 {
            return Err(err(
                "segment.ipv6",
                format!("{} leaves no room for hosts (use /126 or wider)", seg.ipv6),
            ));
        }
        if seg.mtu < MTU_MIN {
            return Err(err(
                "segment.mtu",
                format!("{} is below {MTU_MIN}, the IPv6 minimum", seg.mtu),
            ));
        }
        Ok(())
    }

    fn validate_vip(&self, taken: &mut HashMap<IpAddr, String>) -> Result<(), TopologyError> {
        let vip = &self.vip;
        validate_name("vip.name", &vip.name)?;
        if vip.port == 0 {
            return Err(err("vip.port", "0 is not a service port"));
        }
        self.check_addr("vip.ipv4", IpAddr::V4(vip.ipv4), taken)?;
        self.check_addr("vip.ipv6", IpAddr::V6(vip.ipv6), taken)
    }

    fn validate_addrs(
        &self,
        at: &str,
        node: &Node,
        taken: &mut HashMap<IpAddr, String>,
    ) -> Result<(), TopologyError> {
        let edge = self.bgp.as_ref().map(|b| &b.edge);
        let home = match (node.edge, edge) {
            (false, _) => &self.segment,
            (true, Some(e)) => e,
            (true, None) => {
                return Err(err(
                    format!("{at}.edge"),
                    "no edge segment (the `bgp` section defines it)",
                ));
            }
        };
        self.check_addr_in(home, &format!("{at}.ipv4"), IpAddr::V4(node.ipv4), taken)?;
        self.check_addr_in(home, &format!("{at}.ipv6"), IpAddr::V6(node.ipv6), taken)?;
        match (node.role, node.edge_ipv4, node.edge_ipv6, edge) {
            (super::Role::Router, Some(a), Some(b), Some(e)) => {
                if node.edge {
                    return Err(err(
                        format!("{at}.edge"),
                        "a router sits on the segment, with edge_ipv4/edge_ipv6 on the edge",
                    ));
                }
                self.check_addr_in(e, &format!("{at}.edge_ipv4"), IpAddr::V4(a), taken)?;
                self.check_addr_in(e, &format!("{at}.edge_ipv6"), IpAddr::V6(b), taken)
            }
            (super::Role::Router, _, _, _) => Err(err(
                format!("{at}.edge_ipv4"),
                "a router needs edge_ipv4 and edge_ipv6 on the edge segment",
            )),
            (_, None, None, _) => Ok(()),
            (role, _, _, _) => Err(err(
                format!("{at}.edge_ipv4"),
                format!("only a router has edge addresses, not a {role}"),
            )),
        }
    }

    fn check_addr(
        &self,
        field: &str,
        ip: IpAddr,
        taken: &mut HashMap<IpAddr, String>,
    ) -> Result<(), TopologyError> {
        self.check_addr_in(&self.segment, field, ip, taken)
    }

    /// The address must be a usable host address of `seg` and not used elsewhere.
    fn check_addr_in(
        &self,
        seg: &super::Segment,
        field: &str,
        ip: IpAddr,
        taken: &mut HashMap<IpAddr, String>,
    ) -> Result<(), TopologyError> {
        match ip {
            IpAddr::V4(v4) => {
                if !seg.ipv4.contains(v4) {
                    return Err(err(
                        field,
                        format!("{v4} is outside segment.ipv4 {}", seg.ipv4),
                    ));
                }
                if v4 == seg.ipv4.network() || v4 == seg.ipv4.broadcast() {
                    return Err(err(
                        field,
                        format!("{v4} is the network or broadcast address of {}", seg.ipv4),
                    ));
                }
            }
            IpAddr::V6(v6) => {
                if !seg.ipv6.contains(v6) {
                    return Err(err(
                        field,
                        format!("{v6} is outside segment.ipv6 {}", seg.ipv6),
                    ));
                }
                if v6 == seg.ipv6.network() {
                    return Err(err(
                        field,
                        format!("{v6} is the subnet-router anycast address of {}", seg.ipv6),
                    ));
                }
            }
        }
        if let Some(owner) = taken.get(&ip) {
            return Err(err(field, format!("{ip} is already used by {owner}")));
        }
        taken.insert(ip, field.to_string());
        Ok(())
    }
}

fn validate_name(field: &str, name: &str) -> Result<(), TopologyError> {
    let ok = !name.is_empty()
        && name.len() <= NODE_NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(err(
            field,
            format!(
                "`{name}` is not a valid name (1-{NODE_NAME_MAX} of a-z, 0-9, -, starting with a letter)"
            ),
        ))
    }
}

fn validate_role_fields<'a>(
    at: &str,
    node: &'a Node,
    priorities: &mut HashMap<u8, &'a str>,
) -> Result<(), TopologyError> {
    match (node.role, node.priority) {
        (Role::Balancer, None) => {
            return Err(err(
                format!("{at}.priority"),
                "a balancer needs a VRRP priority (1-254)",
            ));
        }
        (Role::Balancer, Some(p)) => {
            if !(1..=254).contains(&p) {
                return Err(err(
                    format!("{at}.priority"),
                    format!("{p} is outside 1-254"),
                ));
            }
            if let Some(other) = priorities.insert(p, &node.name) {
                return Err(err(
                    format!("{at}.priority"),
                    format!(
                        "{p} is also the priority of `{other}`: the VRRP pair needs distinct priorities"
                    ),
                ));
            }
        }
        (role, Some(_)) => {
            return Err(err(
                format!("{at}.priority"),
                format!("only balancers have a priority, not a {role}"),
            ));
        }
        (_, None) => {}
    }
    // A backend may run services beside app (the reduced VM lab folds the services host into
    // its one backend); any other role runs none.
    if matches!(node.role, Role::Services | Role::Backend) {
        if node.role == Role::Services && node.services.is_empty() {
            return Err(err(
                format!("{at}.services"),
                "a services node lists at least one service",
            ));
        }
        let mut seen = HashSet::new();
        for (j, s) in node.services.iter().enumerate() {
            if !seen.insert(s) {
                return Err(err(
                    format!("{at}.services[{j}]"),
                    format!("`{}` is listed twice", s.as_str()),
                ));
            }
        }
    } else if !node.services.is_empty() {
        return Err(err(
            format!("{at}.services"),
            format!(
                "only a services node or a backend runs services, not a {}",
                node.role
            ),
        ));
    }
    Ok(())
}
