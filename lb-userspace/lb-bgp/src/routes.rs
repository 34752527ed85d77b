//! lbd's kernel table: one blackhole route per announced VIP address, over rtnetlink. The
//! table is consulted by no rule, so the routes never forward anything: they only tell the
//! speaker (BIRD's kernel protocol, `learn`) what to announce.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures_util::TryStreamExt;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// A route-netlink socket whose connection task runs on the current runtime.
pub fn connect() -> io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

fn message(addr: IpAddr, table: u32) -> io::Result<RouteMessage> {
    let len = if addr.is_ipv4() { 32 } else { 128 };
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(addr, len)
        .map(|b| {
            b.table_id(table)
                .kind(RouteType::BlackHole)
                .protocol(RouteProtocol::Static)
                .scope(RouteScope::Universe)
                .build()
        })
        .map_err(|e| io::Error::other(format!("route to {addr}: {e}")))
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn destination(m: &RouteMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

/// Host routes in `table` (both families): what is announced now.
pub async fn list(handle: &Handle, table: u32) -> io::Result<BTreeSet<IpAddr>> {
    let mut out = BTreeSet::new();
    let requests = [
        RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(table)
            .build(),
        RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(table)
            .build(),
    ];
    for req in requests {
        let mut routes = handle.route().get(req).execute();
        while let Some(m) = routes
            .try_next()
            .await
            .map_err(|e| io::Error::other(format!("reading kernel table {table}: {e}")))?
        {
            // The kernel may answer with every table's routes: keep ours.
            if table_of(&m) != table {
                continue;
            }
            let full = m.header.destination_prefix_length;
            if let Some(a) = destination(&m)
                && full == if a.is_ipv4() { 32 } else { 128 }
            {
                out.insert(a);
            }
        }
    }
    Ok(out)
}

/// Announces `addr` (an existing route is fine).
pub async fn add(handle: &Handle, addr: IpAddr, table: u32) -> io::Result<()> {
    handle
        .route()
        .add(message(addr, table)?)
        .replace()
        .execute()
        .await
        .map_err(|e| io::Error::other(format!("adding {addr} to kernel table {table}: {e}")))
}

/// Withdraws `addr` (a missing route is fine).
pub async fn del(handle: &Handle, addr: IpAddr, table: u32) -> io::Result<()> {
    match handle.route().del(message(addr, table)?).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        Err(e) => Err(io::Error::other(format!(
            "removing {addr} from kernel table {table}: {e}"
        ))),
    }
}
