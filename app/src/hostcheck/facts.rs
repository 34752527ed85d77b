//! What the self-check reads from the host: interfaces with their addresses, MTU and XDP
//! program (over rtnetlink), the sysctls that decide ARP and reverse-path filtering (from
//! /proc/sys), and, where the process may (CAP_SYS_ADMIN or CAP_BPF), the XDP program's name and
//! the addresses the decap program accepts. Nothing here changes the host.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkXdp, XdpAttached};

/// An XDP program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xdp {
    pub id: u32,
    /// `driver`, `generic`, `offload` or `multi`.
    pub mode: &'static str,
    /// The program's name, or why it could not be read.
    pub name: Result<String, String>,
    /// For a decap program: the outer destinations it accepts (its `DECAP_ADDRS`), or why
    /// they could not be read.
    pub decap_addresses: Result<Vec<IpAddr>, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
    pub xdp: Option<Xdp>,
}

/// The host as the checks see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub ifaces: Vec<Iface>,
    /// `net.ipv4.conf.<scope>.<key>` values read, by (scope, key); scope `all` or a name.
    pub sysctls: BTreeMap<(String, String), i64>,
}

impl Facts {
    pub fn iface_with(&self, addr: IpAddr) -> Option<&Iface> {
        self.ifaces.iter().find(|i| i.addrs.contains(&addr))
    }

    pub fn iface(&self, name: &str) -> Option<&Iface> {
        self.ifaces.iter().find(|i| i.name == name)
    }

    /// `net.ipv4.conf.<scope>.<key>`, if it could be read.
    pub fn conf(&self, scope: &str, key: &str) -> Option<i64> {
        self.sysctls
            .get(&(scope.to_string(), key.to_string()))
            .copied()
    }

    /// The value the kernel applies on `iface` for a setting it takes as the larger of the
    /// `all` and the interface's own value (arp_ignore, arp_announce, rp_filter).
    pub fn effective(&self, iface: &str, key: &str) -> Option<i64> {
        match (self.conf("all", key), self.conf(iface, key)) {
            (Some(a), Some(i)) => Some(a.max(i)),
            (a, i) => a.or(i),
        }
    }
}

const KEYS: [&str; 3] = ["arp_ignore", "arp_announce", "rp_filter"];

fn read_conf(scope: &str, key: &str) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{scope}/{key}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn nl(what: &str) -> impl FnOnce(rtnetlink::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

/// Reads the host (the network namespace the process runs in).
pub async fn gather() -> io::Result<Facts> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let driver = tokio::spawn(conn);
    let result = gather_with(&handle).await;
    driver.abort();
    result
}

async fn gather_with(handle: &rtnetlink::Handle) -> io::Result<Facts> {
    let mut ifaces = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(link) = links
        .try_next()
        .await
        .map_err(nl("listing the interfaces"))?
    {
        let mut i = Iface {
            index: link.header.index,
            name: String::new(),
            mtu: 0,
            up: link.header.flags.contains(LinkFlags::Up),
            loopback: link.header.flags.contains(LinkFlags::Loopback),
            addrs: Vec::new(),
            xdp: None,
        };
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => i.name = n.clone(),
                LinkAttribute::Mtu(m) => i.mtu = *m,
                LinkAttribute::Xdp(x) => i.xdp = xdp_of(x),
                _ => {}
            }
        }
        ifaces.push(i);
    }
    let mut addrs = handle.address().get().execute();
    while let Some(a) = addrs
        .try_next()
        .await
        .map_err(nl("listing the addresses"))?
    {
        let index = a.header.index;
        for attr in &a.attributes {
            // IFA_LOCAL is the interface's own address where it differs from IFA_ADDRESS
            // (point-to-point); both count as local.
            let ip = match attr {
                AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => *ip,
                _ => continue,
            };
            if let Some(i) = ifaces.iter_mut().find(|i| i.index == index)
                && !i.addrs.contains(&ip)
            {
                i.addrs.push(ip);
            }
        }
    }
    let mut sysctls = BTreeMap::new();
    let scopes = std::iter::once("all".to_string()).chain(ifaces.iter().map(|i| i.name.clone()));
    for scope in scopes {
        for key in KEYS {
            if let Some(v) = read_conf(&scope, key) {
                sysctls.insert((scope.clone(), key.to_string()), v);
            }
        }
    }
    for i in &mut ifaces {
        if let Some(x) = &mut i.xdp {
            describe_program(x);
        }
    }
    Ok(Facts { ifaces, sysctls })
}

fn xdp_of(attrs: &[LinkXdp]) -> Option<Xdp> {
    let mut mode = None;
    let mut id = 0;
    for a in attrs {
        match a {
            LinkXdp::Attached(m) => {
                mode = match m {
                    XdpAttached::None => None,
                    XdpAttached::Driver => Some("driver"),
                    XdpAttached::SocketBuffer => Some("generic"),
                    XdpAttached::Hardware => Some("offload"),
                    XdpAttached::Multiple => Some("multi"),
                    _ => Some("unknown"),
                }
            }
            LinkXdp::ProgId(p) => id = *p,
            _ => {}
        }
    }
    let mode = mode?;
    Some(Xdp {
        id,
        mode,
        name: Err("not read".into()),
        decap_addresses: Err("not read".into()),
    })
}

/// The program's name and, for `xdp_decap`, the addresses in its `DECAP_ADDRS` map: both
/// need CAP_SYS_ADMIN (or CAP_BPF); without, the finding says so.
fn describe_program(x: &mut Xdp) {
    let unreadable =
        |e: &dyn std::fmt::Display| format!("unreadable without CAP_SYS_ADMIN or CAP_BPF ({e})");
    let info = aya::programs::loaded_programs()
        .find(|p| p.as_ref().map(|p| p.id() == x.id).unwrap_or(true));
    let info = match info {
        Some(Ok(info)) => info,
        Some(Err(e)) => {
            x.name = Err(unreadable(&e));
            x.decap_addresses = Err(unreadable(&e));
            return;
        }
        None => {
            x.name = Err(format!("program {} is gone", x.id));
            return;
        }
    };
    x.name = Ok(info.name_as_str().unwrap_or("").to_string());
    x.decap_addresses = decap_addresses(&info);
}

fn decap_addresses(info: &aya::programs::ProgramInfo) -> Result<Vec<IpAddr>, String> {
    let ids = info
        .map_ids()
        .map_err(|e| e.to_string())?
        .ok_or("the kernel does not list the program's maps")?;
    for id in ids {
        let Ok(m) = aya::maps::MapInfo::from_id(id) else {
            continue;
        };
        if m.name_as_str() != Some(lb_common::names::MAP_DECAP_ADDRS) {
            continue;
        }
        let data = aya::maps::MapData::from_id(id).map_err(|e| e.to_string())?;
        let map = aya::maps::Map::from_map_data(data).map_err(|e| e.to_string())?;
        let hash: aya::maps::HashMap<_, lb_common::VipKey, u32> =
            aya::maps::HashMap::try_from(map).map_err(|e| e.to_string())?;
        return Ok(hash.keys().filter_map(Result::ok).map(|k| k.ip()).collect());
    }
    Err(format!(
        "the program has no {} map (not lb-xdp's xdp_decap)",
        lb_common::names::MAP_DECAP_ADDRS
    ))
}
