//! Follows the VRRP interface's addresses through rtnetlink, as keepalived does: one dump at
//! start, then another after every `RTM_NEWADDR` / `RTM_DELADDR` notification for the
//! interface (groups `RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`; a notification also comes
//! when IPv6 duplicate address detection ends) and every `RTM_NEWLINK` / `RTM_DELLINK` for it
//! (`RTMGRP_LINK`: the interface deleted, re-created under its name, renamed). Each dump,
//! with the interface's index, is published on a watch channel that the routers read; nothing
//! is polled at advert rate.
//!
//! Dumping after a notification instead of applying it keeps the kernel's order and flags
//! exact (an IPv4 secondary promoted when its primary goes, a tentative address becoming
//! usable). A dump every [`RESYNC`] covers notifications lost to a receive buffer overrun.

use std::{net::IpAddr, sync::Arc, time::Duration};

use futures_util::{FutureExt, StreamExt};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage},
    link::LinkAttribute,
};
use rtnetlink::MulticastGroup;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, warn};

use super::{addrs::IfAddr, io};

/// How often the addresses are dumped even without a notification.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The interface's addresses at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The interface's index; `None` while no interface has the name.
    pub ifindex: Option<u32>,
    /// Its addresses in the kernel's order, both families.
    pub addrs: Vec<IfAddr>,
}

/// What the routers read: `None` until the first dump.
pub type Addresses = watch::Receiver<Option<Arc<Snapshot>>>;

type Conn = (
    rtnetlink::Handle,
    JoinHandle<()>,
    futures_util::stream::BoxStream<'static, RouteNetlinkMessage>,
);

/// Opens the notification socket (an error here is an error at start) and starts following
/// `iface`; the task ends once every receiver is gone.
pub fn spawn(iface: String) -> std::io::Result<(Addresses, JoinHandle<()>)> {
    let conn = connect()?;
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(follow(iface, conn, tx));
    Ok((rx, task))
}

fn connect() -> std::io::Result<Conn> {
    let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Link,
    ])?;
    let task = tokio::spawn(conn);
    // Only the payload matters; an overrun arrives as a message too and triggers a dump.
    let messages = messages
        .map(|(m, _)| match m.payload {
            NetlinkPayload::InnerMessage(m) => m,
            _ => RouteNetlinkMessage::NewAddress(AddressMessage::default()),
        })
        .boxed();
    Ok((handle, task, messages))
}

/// Whether a notification may concern interface `iface`, of index `ifindex` (unknown: assume
/// it does). A link message under the name matters even with another index: the interface
/// re-created, or another one renamed to it.
fn concerns(m: &RouteNetlinkMessage, iface: &str, ifindex: Option<u32>) -> bool {
    match m {
        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
            ifindex.is_none() || a.header.index == 0 || Some(a.header.index) == ifindex
        }
        RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
            ifindex.is_none()
                || Some(l.header.index) == ifindex
                || l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::IfName(n) if n == iface))
        }
        _ => false,
    }
}

async fn follow(iface: String, conn: Conn, tx: watch::Sender<Option<Arc<Snapshot>>>) {
    let (mut handle, mut task, mut messages) = conn;
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    let mut last_error: Option<String> = None;
    loop {
        match dump(&handle, &iface).await {
            Ok(s) => {
                if last_error.take().is_some() {
                    warn!(interface = %iface, "vrrp: reading the interface's addresses works again");
                }
                tx.send_if_modified(|cur| {
                    let changed = cur.as_deref() != Some(&s);
                    if changed {
                        debug!(interface = %iface, addresses = ?s.addrs, "vrrp: interface addresses");
                        *cur = Some(Arc::new(s));
                    }
                    changed
                });
            }
            Err(e) => {
                if last_error.as_deref() != Some(&e) {
                    warn!(interface = %iface, error = %e, "vrrp: cannot read the interface's addresses; retrying");
                }
                last_error = Some(e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let ifindex = tx.borrow().as_ref().and_then(|s| s.ifindex);
        // Wait for a notification about our interface (then drain the burst: one dump covers
        // them all), the periodic resync, or the end.
        let alive = loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(m) if concerns(&m, &iface, ifindex) => {
                        while let Some(Some(_)) = messages.next().now_or_never() {}
                        break true;
                    }
                    Some(_) => {}
                    None => break false,
                },
                _ = resync.tick() => break true,
                _ = tx.closed() => {
                    task.abort();
                    return;
                }
            }
        };
        if !alive {
            warn!("vrrp: the rtnetlink notification socket closed; reopening it");
            task.abort();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.is_closed() {
                    return;
                }
                match connect() {
                    Ok(c) => {
                        (handle, task, messages) = c;
                        break;
                    }
                    Err(e) => warn!(error = %e, "vrrp: reopening the rtnetlink socket"),
                }
            }
        }
    }
}

/// The interface's addresses now (none if it does not exist).
async fn dump(handle: &rtnetlink::Handle, iface: &str) -> Result<Snapshot, String> {
    let Ok(ifindex) = io::ifindex(iface) else {
        return Ok(Snapshot {
            ifindex: None,
            addrs: Vec::new(),
        });
    };
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute();
    let mut addrs = Vec::new();
    while let Some(m) = stream.next().await {
        let m = m.map_err(|e| format!("address dump: {e}"))?;
        if let Some(a) = parse(&m) {
            addrs.push(a);
        }
    }
    Ok(Snapshot {
        ifindex: Some(ifindex),
        addrs,
    })
}

/// One address message as an [`IfAddr`]; `None` without an address.
pub fn parse(m: &AddressMessage) -> Option<IfAddr> {
    let mut local: Option<IpAddr> = None;
    let mut address: Option<IpAddr> = None;
    let mut flags: Option<AddressFlags> = None;
    for attr in &m.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags = Some(*f),
            _ => {}
        }
    }
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links and
    // the only one IPv6 sends.
    let addr = local.or(address)?;
    let h = m.header.flags;
    let (secondary, tentative) = match flags {
        Some(f) => (
            f.contains(AddressFlags::Secondary),
            f.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed),
        ),
        None => (
            h.contains(AddressHeaderFlags::Secondary),
            h.intersects(AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed),
        ),
    };
    Some(IfAddr {
        addr,
        prefix_len: m.header.prefix_len,
        secondary,
        tentative,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_prefers_local_and_reads_flags() {
        let mut m = AddressMessage::default();
        m.header.prefix_len = 24;
        m.attributes = vec![
            AddressAttribute::Address("10.0.0.1".parse().unwrap()),
            AddressAttribute::Local("10.0.0.2".parse().unwrap()),
            AddressAttribute::Flags(AddressFlags::Secondary),
        ];
        let a = parse(&m).unwrap();
        assert_eq!(a.addr, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert!(a.secondary && !a.tentative);

        let mut m6 = AddressMessage::default();
        m6.header.flags = AddressHeaderFlags::Tentative;
        m6.attributes = vec![AddressAttribute::Address("fe80::1".parse().unwrap())];
        let a = parse(&m6).unwrap();
        assert!(a.tentative && !a.secondary);
        assert!(parse(&AddressMessage::default()).is_none());
    }

    #[test]
    fn notifications_for_other_interfaces_are_ignored() {
        let mut m = AddressMessage::default();
        m.header.index = 7;
        let new = RouteNetlinkMessage::NewAddress(m.clone());
        let del = RouteNetlinkMessage::DelAddress(m);
        assert!(concerns(&new, "eth0", Some(7)) && concerns(&del, "eth0", Some(7)));
        assert!(!concerns(&new, "eth0", Some(3)));
        assert!(
            concerns(&new, "eth0", None),
            "interface unknown yet: dump anyway"
        );
    }

    #[test]
    fn link_notifications_for_the_interface_or_its_name_count() {
        use netlink_packet_route::link::LinkMessage;
        let mut l = LinkMessage::default();
        l.header.index = 7;
        assert!(concerns(
            &RouteNetlinkMessage::DelLink(l.clone()),
            "eth0",
            Some(7)
        ));
        assert!(!concerns(
            &RouteNetlinkMessage::NewLink(l.clone()),
            "eth0",
            Some(3)
        ));
        // Re-created under the same name: a new index, the name tells.
        l.header.index = 9;
        l.attributes = vec![LinkAttribute::IfName("eth0".into())];
        let new = RouteNetlinkMessage::NewLink(l);
        assert!(concerns(&new, "eth0", Some(7)));
        assert!(!concerns(&new, "eth1", Some(7)));
        assert!(
            concerns(&new, "eth1", None),
            "interface missing: any link may be it"
        );
    }
}
