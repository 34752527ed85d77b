//! Which MAC address the data plane must put on a backend's packets, read from the kernel's
//! route and neighbour tables through rtnetlink.
//!
//! A backend on the balancer's own L2 segment gets its own MAC; any other backend gets the MAC
//! of the next hop the kernel would use for it. [`resolve`] answers once (starting ARP/ND and
//! waiting a bounded time when the kernel does not know the address yet); [`Resolver`] keeps a
//! set of addresses resolved in a background task, follows the kernel's neighbour and route
//! notifications, re-checks periodically, and reports each change as a [`NeighbourEvent`].
//!
//! Everything works on the network namespace of the thread that opens the netlink sockets
//! (`lbd` runs under `ip netns exec`). Needs a tokio runtime and `CAP_NET_ADMIN` (to start
//! ARP/ND for an unknown address). IPv4 and IPv6 alike.
//!
//! An address that cannot be resolved is an error naming the reason (`no route to X`,
//! `X on eth0: neighbour FAILED (no ARP reply)`, ...): a stale or made-up MAC is never returned.

mod netlink;
mod resolve;
mod resolver;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use resolve::{ResolveOptions, resolve, resolve_with};
pub use resolver::{NeighbourEvent, RefreshTask, Resolver, ResolverOptions, Trigger};

/// Where frames for one destination go: the MAC to write, the interface, and the gateway when
/// the destination is not on the link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolution {
    /// Destination MAC for frames to this address: the address's own, or the gateway's.
    pub mac: [u8; 6],
    /// Output interface index (in the namespace the resolver runs in).
    pub ifindex: u32,
    /// Output interface name.
    pub ifname: String,
    /// The next hop when the address is reached through a gateway; `None` when it is on-link.
    pub via: Option<IpAddr>,
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", format_mac(&self.mac), self.ifname)?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        Ok(())
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, g] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
}

/// The neighbour an address resolves through, for messages: `10.0.0.5 on eth0` or
/// `192.0.2.7 via 10.0.0.1 on eth0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address asked about.
    pub addr: IpAddr,
    /// The gateway whose MAC stands for it, if any.
    pub via: Option<IpAddr>,
    /// Output interface name.
    pub ifname: String,
}

impl Target {
    /// The address ARP/ND runs for.
    pub fn neighbour(&self) -> IpAddr {
        self.via.unwrap_or(self.addr)
    }

    /// `ARP` (IPv4 neighbour) or `ND` (IPv6 neighbour).
    pub fn protocol(&self) -> &'static str {
        if self.neighbour().is_ipv4() {
            "ARP"
        } else {
            "ND"
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            Some(via) => write!(f, "{} via {via} on {}", self.addr, self.ifname),
            None => write!(f, "{} on {}", self.addr, self.ifname),
        }
    }
}

/// Why an address has no usable MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeighbourError {
    /// The kernel has no route to the address (or the route drops it).
    #[error("no route to {addr}: {reason}")]
    NoRoute {
        /// The address.
        addr: IpAddr,
        /// The kernel's answer.
        reason: String,
    },
    /// The address belongs to this host.
    #[error("{addr} is an address of this host, not a remote backend")]
    Local {
        /// The address.
        addr: IpAddr,
    },
    /// The address is broadcast, multicast or otherwise not one host.
    #[error("{addr} is not a unicast destination (route type {kind})")]
    NotUnicast {
        /// The address.
        addr: IpAddr,
        /// The kernel's route type.
        kind: String,
    },
    /// ARP/ND ran and got no answer.
    #[error("{target}: neighbour FAILED (no {} reply)", target.protocol())]
    Failed {
        /// What was being resolved.
        target: Target,
    },
    /// ARP/ND was started and had no answer yet when the wait ended.
    #[error("{target}: neighbour INCOMPLETE after {waited:?} (no {} reply yet)", target.protocol())]
    Incomplete {
        /// What was being resolved.
        target: Target,
        /// How long we waited.
        waited: Duration,
    },
    /// The entry exists but holds no Ethernet address (e.g. a NOARP interface).
    #[error("{target}: neighbour entry ({state}) has no Ethernet address")]
    NoLinkLayerAddress {
        /// What was being resolved.
        target: Target,
        /// The entry's state.
        state: String,
    },
    /// A netlink request failed for another reason.
    #[error("netlink: {context}: {detail}")]
    Netlink {
        /// What was being asked.
        context: String,
        /// The kernel's or the library's error.
        detail: String,
    },
    /// The netlink socket could not be opened or bound.
    #[error("cannot open a netlink socket: {0}")]
    Socket(String),
    /// Called outside a tokio runtime.
    #[error("neighbour resolution needs a tokio runtime")]
    NoRuntime,
    /// [`Resolver::spawn`] was called while its task is already running.
    #[error("the resolver's refresh task is already running")]
    AlreadyRunning,
}
