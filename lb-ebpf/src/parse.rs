//! Header parsing: Ethernet (at most one 802.1Q/802.1ad tag), IPv4 (with options), IPv6,
//! and the TCP/UDP/ICMP header that follows. Nothing is written here.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    AF_INET, AF_INET6, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::hdr::{ETH_LEN, IPV4_LEN, IPV6_LEN, TCP_LEN, UDP_LEN, VLAN_LEN, check, load};

/// IPv6 fragment extension header.
const IPPROTO_FRAGMENT: u8 = 44;

/// The network layer of a packet.
#[derive(Clone, Copy)]
pub struct Ip {
    /// Offset of the IP header (14, or 18 behind a VLAN tag).
    pub l3_off: usize,
    /// Offset of the transport header (IPv4 honours IHL).
    pub l4_off: usize,
    pub family: u8,
    /// Transport protocol (the IPv6 next header).
    pub proto: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// An IPv4 fragment (MF set or non-zero offset) or an IPv6 fragment header.
    pub fragment: bool,
    /// The header itself is broken (IHL < 5, options past the end): the addresses are
    /// valid but nothing after them is.
    pub malformed: bool,
}

pub enum L3 {
    /// Not IPv4/IPv6, or a second VLAN tag.
    NotIp,
    /// Too short to read the addresses.
    Truncated,
    Ip(Ip),
}

/// Offset of the IP header and the ethertype, or `None` when truncated.
#[inline(always)]
fn ethernet(ctx: &XdpContext) -> Option<(usize, u16)> {
    let eth = check(ctx, 0, ETH_LEN)?;
    let proto = u16::from_be(unsafe { load::<u16>(eth + 12) });
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let vlan = check(ctx, ETH_LEN, VLAN_LEN)?;
        let inner = u16::from_be(unsafe { load::<u16>(vlan + 2) });
        return Some((ETH_LEN + VLAN_LEN, inner));
    }
    Some((ETH_LEN, proto))
}

#[inline(always)]
pub fn l3(ctx: &XdpContext) -> L3 {
    let Some((l3_off, proto)) = ethernet(ctx) else {
        return L3::Truncated;
    };
    match proto {
        ETH_P_IP => ipv4(ctx, l3_off),
        ETH_P_IPV6 => ipv6(ctx, l3_off),
        _ => L3::NotIp,
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3_off: usize) -> L3 {
    let Some(ip) = check(ctx, l3_off, IPV4_LEN) else {
        return L3::Truncated;
    };
    let vihl: u8 = unsafe { load(ip) };
    let frag = u16::from_be(unsafe { load::<u16>(ip + 6) });
    let ihl = (vihl & 0x0f) as usize;
    let hdr_len = ihl * 4;
    let mut out = Ip {
        l3_off,
        l4_off: l3_off + hdr_len,
        family: AF_INET,
        proto: unsafe { load(ip + 9) },
        src: [unsafe { load(ip + 12) }, 0, 0, 0],
        dst: [unsafe { load(ip + 16) }, 0, 0, 0],
        fragment: frag & 0x3fff != 0,
        malformed: false,
    };
    // Options are legal; a header shorter than 20 bytes or running past the packet is not.
    if vihl >> 4 != 4 || ihl < 5 || check(ctx, l3_off, hdr_len).is_none() {
        out.malformed = true;
        out.l4_off = l3_off + IPV4_LEN;
    }
    L3::Ip(out)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3_off: usize) -> L3 {
    let Some(ip) = check(ctx, l3_off, IPV6_LEN) else {
        return L3::Truncated;
    };
    let version: u8 = unsafe { load(ip) };
    let next: u8 = unsafe { load(ip + 6) };
    L3::Ip(Ip {
        l3_off,
        l4_off: l3_off + IPV6_LEN,
        family: AF_INET6,
        proto: next,
        src: unsafe { load(ip + 8) },
        dst: unsafe { load(ip + 24) },
        fragment: next == IPPROTO_FRAGMENT,
        malformed: version >> 4 != 6,
    })
}

/// The transport header of a TCP or UDP packet.
#[derive(Clone, Copy)]
pub struct Ports {
    /// Network byte order, as in the packet.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// Ports of a TCP/UDP header at `l4_off`; `None` when truncated or (TCP) the data offset is
/// below 5 words or runs past the packet.
#[inline(always)]
pub fn ports(ctx: &XdpContext, l4_off: usize, proto: u8) -> Option<Ports> {
    if proto == IPPROTO_TCP {
        let tcp = check(ctx, l4_off, TCP_LEN)?;
        let doff = (unsafe { load::<u8>(tcp + 12) } >> 4) as usize;
        if doff < 5 {
            return None;
        }
        check(ctx, l4_off, doff * 4)?;
        Some(Ports {
            sport: unsafe { load(tcp) },
            dport: unsafe { load(tcp + 2) },
            tcp_flags: unsafe { load(tcp + 13) },
        })
    } else if proto == IPPROTO_UDP {
        let udp = check(ctx, l4_off, UDP_LEN)?;
        Some(Ports {
            sport: unsafe { load(udp) },
            dport: unsafe { load(udp + 2) },
            tcp_flags: 0,
        })
    } else {
        None
    }
}
