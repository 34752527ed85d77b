//! The few rtnetlink requests the resolver needs: a route lookup for one address, a neighbour
//! lookup, a "use" nudge that starts ARP/ND, and an interface name.

use std::io;
use std::net::IpAddr;

use futures_util::StreamExt;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use tokio::task::JoinHandle;

use super::NeighbourError;

/// Where the kernel sends packets for one destination (`ip route get ADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    /// Output interface.
    pub ifindex: u32,
    /// Next hop when the destination is not on the link.
    pub via: Option<IpAddr>,
}

impl Route {
    /// The address whose link-layer address frames must carry: the gateway, else the destination.
    pub fn neighbour(&self, dst: IpAddr) -> IpAddr {
        self.via.unwrap_or(dst)
    }
}

/// One neighbour table entry, as far as the resolver cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Neighbour {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub state: NeighbourState,
    /// Absent on INCOMPLETE/FAILED entries and on NOARP devices.
    pub lladdr: Option<Vec<u8>>,
}

impl Neighbour {
    /// Parses a kernel neighbour message; `None` for proxy entries and foreign families.
    pub fn from_message(msg: &NeighbourMessage) -> Option<Self> {
        if msg.header.flags.contains(NeighbourFlags::Proxy) {
            return None;
        }
        let mut addr = None;
        let mut lladdr = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    addr = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    addr = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(l) => lladdr = Some(l.clone()),
                _ => {}
            }
        }
        Some(Self {
            ifindex: msg.header.ifindex,
            addr: addr?,
            state: msg.header.state,
            lladdr,
        })
    }
}

/// A unicast rtnetlink connection in the network namespace of the thread that opened it. The
/// connection task is aborted when this is dropped.
#[derive(Debug)]
pub(crate) struct Netlink {
    handle: rtnetlink::Handle,
    task: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The errno of a kernel NACK, if `e` is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The kernel's own words for a NACK (`Network is unreachable (os error 101)`).
fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

fn netlink_err(context: String, e: rtnetlink::Error) -> NeighbourError {
    NeighbourError::Netlink {
        context,
        detail: describe(&e),
    }
}

const ENOENT: i32 = 2;
const EHOSTUNREACH: i32 = 113;
const ENETUNREACH: i32 = 101;
const EACCES: i32 = 13;
const EPERM: i32 = 1;
const EINVAL: i32 = 22;

impl Netlink {
    /// Opens a connection; needs a tokio runtime.
    pub fn open() -> Result<Self, NeighbourError> {
        let (conn, handle, _unsolicited) = rtnetlink::new_connection()
            .map_err(|e: io::Error| NeighbourError::Socket(e.to_string()))?;
        let task = tokio::spawn(conn);
        Ok(Self { handle, task })
    }

    /// Sends `msg` and collects every reply, turning a kernel NACK into an error.
    async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, rtnetlink::Error> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut replies = self.handle.clone().request(req)?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
                // An ACK (error code 0) or the end of a dump.
                _ => {}
            }
        }
        Ok(out)
    }

    /// `ip route get ADDR`: the output interface and gateway, or why there is none.
    pub async fn route_get(&self, addr: IpAddr) -> Result<Route, NeighbourError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(addr);
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        let replies = match self
            .request(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Err(match errno(&e) {
                    Some(ENETUNREACH | EHOSTUNREACH | EACCES | EPERM | EINVAL) => {
                        NeighbourError::NoRoute {
                            addr,
                            reason: describe(&e),
                        }
                    }
                    _ => netlink_err(format!("route lookup for {addr}"), e),
                });
            }
        };
        let route = replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| NeighbourError::Netlink {
                context: format!("route lookup for {addr}"),
                detail: "the kernel sent no route message".to_string(),
            })?;
        parse_route(addr, &route)
    }

    /// `ip neigh get ADDR dev IFINDEX`; `None` when there is no entry.
    pub async fn neighbour_get(
        &self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<Neighbour>, NeighbourError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(addr);
        msg.header.ifindex = ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(addr)));
        match self
            .request(RouteNetlinkMessage::GetNeighbour(msg), NLM_F_REQUEST)
            .await
        {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Neighbour::from_message(n),
                _ => None,
            })),
            Err(e) if errno(&e) == Some(ENOENT) => Ok(None),
            Err(e) => Err(netlink_err(format!("neighbour lookup for {addr}"), e)),
        }
    }

    /// Asks the kernel to resolve (or re-confirm) `addr` on `ifindex` as if a packet were
    /// waiting for it (`NTF_USE`): an absent or FAILED entry goes INCOMPLETE and ARP/ND
    /// starts, a STALE one is probed. No datagram of ours goes on the wire.
    pub async fn nudge(&self, ifindex: u32, addr: IpAddr) -> Result<(), NeighbourError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(addr);
        msg.header.ifindex = ifindex;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(addr)));
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        )
        .await
        .map(drop)
        .map_err(|e| netlink_err(format!("starting ARP/ND for {addr}"), e))
    }

    /// The name of interface `ifindex` (falls back to `if<N>` if it has none).
    pub async fn link_name(&self, ifindex: u32) -> Result<String, NeighbourError> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        while let Some(link) = links.next().await {
            let link = link.map_err(|e| netlink_err(format!("interface #{ifindex}"), e))?;
            for attr in link.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    return Ok(name);
                }
            }
        }
        Ok(format!("if{ifindex}"))
    }
}

fn neighbour_address(addr: IpAddr) -> NeighbourAddress {
    match addr {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Reads the output interface and gateway of a `route get` answer.
fn parse_route(addr: IpAddr, route: &RouteMessage) -> Result<Route, NeighbourError> {
    let kind = route.header.kind;
    match kind {
        RouteType::Unicast => {}
        RouteType::Local => return Err(NeighbourError::Local { addr }),
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit => {
            return Err(NeighbourError::NoRoute {
                addr,
                reason: format!("the matching route is of type {kind:?}"),
            });
        }
        other => {
            return Err(NeighbourError::NotUnicast {
                addr,
                kind: format!("{other:?}"),
            });
        }
    }
    let mut ifindex = None;
    let mut via = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(g) => via = route_addr(g),
            // An IPv4 route through an IPv6 next hop (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet(g)) => via = Some(IpAddr::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => via = Some(IpAddr::V6(*g)),
            _ => {}
        }
    }
    let ifindex = ifindex.ok_or_else(|| NeighbourError::NoRoute {
        addr,
        reason: "the matching route has no output interface".to_string(),
    })?;
    Ok(Route { ifindex, via })
}
