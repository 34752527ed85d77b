//! Header parsing: Ethernet (at most one 802.1Q/802.1ad tag), IPv4 (with options), IPv6
//! (with its extension headers), and the TCP/UDP/ICMP header that follows. Nothing is
//! written here.
//!
//! The IP length fields are checked against the frame as the kernel does (`ip_rcv`,
//! `ipv6_rcv`): a frame shorter than its IP length is malformed; a longer one carries
//! Ethernet padding, which is fine (and forwarded as it came), but nothing is read from it.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    AF_INET, AF_INET6, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP,
    Reason,
};

use crate::hdr::{
    ETH_LEN, IPV4_LEN, IPV6_LEN, TCP_LEN, UDP_LEN, VLAN_LEN, check, load, packet_len,
};

/// IPv6 extension headers (RFC 8200 section 4; AH: RFC 4302).
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers walked before the transport header; a longer chain is refused (as
/// Cilium's `IPV6_MAX_HEADERS`). RFC 8200's recommended order has at most hop-by-hop,
/// destination options, routing, destination options before the payload.
const MAX_EXT_HEADERS: usize = 4;

/// What the IP layer says about a packet, before any port is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Headers whole and inside the IP length: the packet can be balanced.
    Whole,
    /// A broken IP header (version, IHL), a frame shorter than its IP length, or an IPv6
    /// extension header running past the payload: the addresses are valid, nothing after.
    Malformed,
    /// An IPv4 fragment (MF set or non-zero offset) or an IPv6 fragment header.
    Fragment,
    /// An IPv6 extension-header chain that is not forwarded: a routing header with segments
    /// left (the VIP is not the final destination), a hop-by-hop header that is not first, or
    /// more than [`MAX_EXT_HEADERS`] headers.
    Unsupported,
}

impl Shape {
    /// Why a packet of this shape cannot be balanced (`None`: it can).
    #[inline(always)]
    pub fn refused(self) -> Option<Reason> {
        match self {
            Shape::Whole => None,
            Shape::Malformed => Some(Reason::DropMalformed),
            Shape::Fragment => Some(Reason::DropFragment),
            Shape::Unsupported => Some(Reason::DropExtHeader),
        }
    }
}

/// The network layer of a packet.
#[derive(Clone, Copy)]
pub struct Ip {
    /// Offset of the IP header (14, or 18 behind a VLAN tag).
    pub l3_off: usize,
    /// Offset of the transport header (IPv4 honours IHL, IPv6 follows the extension headers).
    pub l4_off: usize,
    /// Offset where the IP packet ends (its length field); Ethernet padding may follow.
    pub end: usize,
    pub family: u8,
    /// Transport protocol (IPv6: the next header after the extension headers).
    pub proto: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub shape: Shape,
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
    let total = u16::from_be(unsafe { load::<u16>(ip + 2) }) as usize;
    let frag = u16::from_be(unsafe { load::<u16>(ip + 6) });
    let hdr_len = (vihl & 0x0f) as usize * 4;
    let mut out = Ip {
        l3_off,
        l4_off: l3_off + hdr_len,
        end: l3_off + total,
        family: AF_INET,
        proto: unsafe { load(ip + 9) },
        src: [unsafe { load(ip + 12) }, 0, 0, 0],
        dst: [unsafe { load(ip + 16) }, 0, 0, 0],
        shape: if frag & 0x3fff != 0 {
            Shape::Fragment
        } else {
            Shape::Whole
        },
    };
    // Options are legal; a header shorter than 20 bytes, or longer than the total length, or
    // a total length the frame does not hold (options past the end included) is not.
    if vihl >> 4 != 4 || hdr_len < IPV4_LEN || total < hdr_len || out.end > packet_len(ctx) {
        out.shape = Shape::Malformed;
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
    let payload = u16::from_be(unsafe { load::<u16>(ip + 4) }) as usize;
    let mut out = Ip {
        l3_off,
        l4_off: l3_off + IPV6_LEN,
        end: l3_off + IPV6_LEN + payload,
        family: AF_INET6,
        proto: unsafe { load(ip + 6) },
        src: unsafe { load(ip + 8) },
        dst: unsafe { load(ip + 24) },
        shape: Shape::Whole,
    };
    // A jumbogram (payload length 0 and a jumbo option) cannot arrive over Ethernet: with a
    // hop-by-hop header it fails the walk below as a header past the payload.
    if version >> 4 != 6 || out.end > packet_len(ctx) {
        out.shape = Shape::Malformed;
        return L3::Ip(out);
    }
    (out.l4_off, out.proto, out.shape) = extension_headers(ctx, out.l4_off, out.end, out.proto);
    L3::Ip(out)
}

/// Walks the IPv6 extension headers from `off` (next header `next`) to the transport
/// header: hop-by-hop (first only), destination options, routing (segments left 0) and AH
/// are skipped; the packet is balanced on what follows them and forwarded whole. Returns the
/// transport header's offset and protocol, and the packet's shape (docs/dataplane.md,
/// "IPv6 extension headers").
#[inline(always)]
fn extension_headers(
    ctx: &XdpContext,
    mut off: usize,
    end: usize,
    mut next: u8,
) -> (usize, u8, Shape) {
    for i in 0..=MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {}
            IPPROTO_FRAGMENT => return (off, next, Shape::Fragment),
            _ => return (off, next, Shape::Whole),
        }
        if i == MAX_EXT_HEADERS || (next == IPPROTO_HOPOPTS && i != 0) {
            return (off, next, Shape::Unsupported);
        }
        // Every extension header is at least 8 bytes (AH at least 12).
        let Some(h) = check(ctx, off, 8).filter(|_| off + 8 <= end) else {
            return (off, next, Shape::Malformed);
        };
        let (following, units): (u8, u8) = unsafe { (load(h), load(h + 1)) };
        if next == IPPROTO_ROUTING && unsafe { load::<u8>(h + 3) } != 0 {
            return (off, next, Shape::Unsupported);
        }
        off += if next == IPPROTO_AH {
            (units as usize + 2) * 4
        } else {
            (units as usize + 1) * 8
        };
        if off > end {
            return (off, next, Shape::Malformed);
        }
        next = following;
    }
    (off, next, Shape::Unsupported)
}

/// `len` bytes at `off`, if they are inside both the frame and the IP packet (never in the
/// padding after it).
#[inline(always)]
pub fn within(ctx: &XdpContext, ip: &Ip, off: usize, len: usize) -> Option<usize> {
    if off + len > ip.end {
        return None;
    }
    check(ctx, off, len)
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

/// Ports of the TCP/UDP header of `ip`; `None` when it is truncated (by the frame or by the
/// IP length) or (TCP) its data offset is below 5 words or runs past the packet.
#[inline(always)]
pub fn ports(ctx: &XdpContext, ip: &Ip) -> Option<Ports> {
    if ip.proto == IPPROTO_TCP {
        let tcp = within(ctx, ip, ip.l4_off, TCP_LEN)?;
        let doff = (unsafe { load::<u8>(tcp + 12) } >> 4) as usize;
        if doff < 5 {
            return None;
        }
        within(ctx, ip, ip.l4_off, doff * 4)?;
        Some(Ports {
            sport: unsafe { load(tcp) },
            dport: unsafe { load(tcp + 2) },
            tcp_flags: unsafe { load(tcp + 13) },
        })
    } else if ip.proto == IPPROTO_UDP {
        let udp = within(ctx, ip, ip.l4_off, UDP_LEN)?;
        Some(Ports {
            sport: unsafe { load(udp) },
            dport: unsafe { load(udp + 2) },
            tcp_flags: 0,
        })
    } else {
        None
    }
}
