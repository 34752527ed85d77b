//! What the routers ask of the kernel over rtnetlink: add and remove the virtual addresses,
//! and whether an XDP program is attached to an interface (tracking).

use std::io;

use futures_util::TryStreamExt;
use lb_config::VirtualAddr;
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeaderFlags, CacheInfo},
    link::{LinkAttribute, LinkXdp, XdpAttached},
};
use rtnetlink::Handle;

fn nl_err(what: String) -> impl FnOnce(rtnetlink::Error) -> io::Error {
    move |e| io::Error::other(format!("{what}: {e}"))
}

/// A route-netlink socket whose connection task runs on the current runtime.
pub fn connect() -> io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The index of interface `iface`, or `None` if there is none of that name.
async fn index_of(handle: &Handle, iface: &str) -> io::Result<Option<u32>> {
    match handle
        .link()
        .get()
        .match_name(iface.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl_err(format!("looking up interface {iface}"))(e)),
    }
}

async fn require_index(handle: &Handle, iface: &str) -> io::Result<u32> {
    index_of(handle, iface)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {iface}")))
}

/// Adds a virtual address to the interface (an address already present is fine).
pub async fn add_address(handle: &Handle, a: &VirtualAddr, iface: &str) -> io::Result<()> {
    let index = require_index(handle, iface).await?;
    let mut req = handle.address().add(index, a.addr, a.prefix).replace();
    if a.addr.is_ipv6() {
        // The address moves between nodes: duplicate address detection would hold it
        // tentative (unusable) for a second, and the old owner is gone or leaving anyway.
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        // Deprecated (preferred lifetime 0, `ip addr ... preferred_lft 0`): it still receives
        // traffic and is announced, but the kernel never picks it as the source of this
        // node's own connections. A /128 VIP would otherwise win source selection (longest
        // matching prefix) for every address of the segment: the health checks would leave
        // from the VIP, and backends holding it on lo for direct server return would answer
        // themselves.
        let mut lifetimes = CacheInfo::default();
        lifetimes.ifa_preferred = 0;
        lifetimes.ifa_valid = u32::MAX;
        req.message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo(lifetimes));
    }
    req.execute()
        .await
        .map_err(nl_err(format!("adding {a} to {iface}")))
}

/// Removes a virtual address; returns whether it was present.
pub async fn remove_address(handle: &Handle, a: &VirtualAddr, iface: &str) -> io::Result<bool> {
    let Some(index) = index_of(handle, iface).await? else {
        return Ok(false);
    };
    let found = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(a.addr)
        .set_prefix_length_filter(a.prefix)
        .execute()
        .try_next()
        .await
        .map_err(nl_err(format!("listing the addresses of {iface}")))?;
    let Some(msg) = found else {
        return Ok(false);
    };
    handle
        .address()
        .del(msg)
        .execute()
        .await
        .map_err(nl_err(format!("removing {a} from {iface}")))?;
    Ok(true)
}

/// Whether the kernel reports an XDP program attached to `iface` (in any mode).
pub async fn xdp_attached(handle: &Handle, iface: &str) -> io::Result<bool> {
    let link = handle
        .link()
        .get()
        .match_name(iface.to_string())
        .execute()
        .try_next()
        .await;
    let link = match link {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(false),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            return Ok(false);
        }
        Err(e) => return Err(nl_err(format!("looking up interface {iface}"))(e)),
    };
    Ok(link.attributes.iter().any(|attr| match attr {
        LinkAttribute::Xdp(xdp) => xdp.iter().any(|x| match x {
            LinkXdp::Attached(mode) => *mode != XdpAttached::None,
            LinkXdp::ProgId(id) => *id != 0,
            _ => false,
        }),
        _ => false,
    }))
}
