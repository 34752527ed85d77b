//! VRRP version 3 (RFC 5798) advertisements: encoding and strict decoding for IPv4 and IPv6.
//!
//! The checksum covers the IP pseudo-header (RFC 5798 section 5.2.8, what keepalived 2.2.7
//! sends); RFC 9568 changed it to the VRRP message alone, so decoding accepts either form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const PROTO_VRRP: u8 = 112;
/// The IPv4 multicast group adverts go to.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group adverts go to.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit every advert is sent with and must arrive with.
pub const TTL: u8 = 255;
/// Fixed part of a VRRP message, before the addresses.
const HEADER_LEN: usize = 8;
const VERSION: u8 = 3;
const TYPE_ADVERT: u8 = 1;
const IPV4_HEADER_LEN: usize = 20;

pub use lb_config::Centis;

/// The virtual addresses an advert carries, all of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addresses {
    /// IPv4 virtual addresses.
    V4(Vec<Ipv4Addr>),
    /// IPv6 virtual addresses.
    V6(Vec<Ipv6Addr>),
}

impl Addresses {
    fn count(&self) -> usize {
        match self {
            Self::V4(a) => a.len(),
            Self::V6(a) => a.len(),
        }
    }
}

/// One VRRPv3 advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Virtual router id (1..=255).
    pub vrid: u8,
    /// Sender's priority: 255 address owner, 0 the master is leaving.
    pub priority: u8,
    /// The sender's advertisement interval.
    pub interval: Centis,
    /// The virtual addresses.
    pub addresses: Addresses,
}

/// An advert that arrived and passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender's (primary) address: the IP source.
    pub source: IpAddr,
    /// The advert itself.
    pub advert: Advert,
}

/// Why a received packet was dropped; each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Reject {
    /// Shorter than its headers or its address count says.
    #[error("truncated")]
    Truncated,
    /// The IP header is not IPv4 carrying VRRP.
    #[error("not an IPv4 VRRP packet")]
    BadIpHeader,
    /// TTL or hop limit other than 255: it crossed a router.
    #[error("TTL/hop limit not 255")]
    Ttl,
    /// VRRP version other than 3.
    #[error("VRRP version not 3")]
    Version,
    /// Message type other than advertisement.
    #[error("not an advertisement")]
    Type,
    /// Checksum wrong in both the pseudo-header and the message-only form.
    #[error("bad checksum")]
    Checksum,
    /// Another virtual router's advert.
    #[error("wrong virtual router id")]
    Vrid,
    /// Advertisement interval of 0.
    #[error("advertisement interval 0")]
    Interval,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 8] = [
        Reject::Truncated,
        Reject::BadIpHeader,
        Reject::Ttl,
        Reject::Version,
        Reject::Type,
        Reject::Checksum,
        Reject::Vrid,
        Reject::Interval,
    ];

    /// Short snake_case name used in the API and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::BadIpHeader => "bad_ip_header",
            Reject::Ttl => "ttl",
            Reject::Version => "version",
            Reject::Type => "type",
            Reject::Checksum => "checksum",
            Reject::Vrid => "vrid",
            Reject::Interval => "interval",
        }
    }
}

/// Internet checksum (one's complement of the one's complement sum) over `parts`, treated as
/// one byte stream.
pub fn inet_checksum(parts: &[&[u8]]) -> u16 {
    lb_common::csum::checksum(parts, 0)
}

/// The pseudo-header the checksum covers (RFC 5798 5.2.8: IPv4 as in RFC 768, IPv6 as in
/// RFC 2460 8.1).
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, PROTO_VRRP]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            p.extend_from_slice(&v6(s));
            p.extend_from_slice(&v6(d));
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO_VRRP]);
        }
    }
    p
}

impl Advert {
    /// The VRRP message (no IP header) with its checksum over the pseudo-header of `src`->`dst`.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let count = self.addresses.count().min(255);
        let mut m = Vec::with_capacity(HEADER_LEN + count * 16);
        m.push((VERSION << 4) | TYPE_ADVERT);
        m.push(self.vrid);
        m.push(self.priority);
        m.push(count as u8);
        m.extend_from_slice(&(self.interval.get() & Centis::MAX).to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        match &self.addresses {
            Addresses::V4(a) => a.iter().take(count).for_each(|a| m.extend(a.octets())),
            Addresses::V6(a) => a.iter().take(count).for_each(|a| m.extend(a.octets())),
        }
        let sum = inet_checksum(&[&pseudo_header(src, dst, m.len()), &m]);
        m[6..8].copy_from_slice(&sum.to_be_bytes());
        m
    }

    /// A whole IPv4 packet (header with TTL 255, protocol 112) carrying this advert, for a raw
    /// socket with `IP_HDRINCL`.
    pub fn encode_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let msg = self.encode(IpAddr::V4(src), IpAddr::V4(dst));
        ipv4_packet(src, dst, TTL, &msg)
    }
}

/// An IPv4 header (no options) with `payload` behind it. Also used by tests to craft packets
/// with a wrong TTL.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let total = (IPV4_HEADER_LEN + payload.len()) as u16;
    let mut h = vec![0x45, 0xc0]; // DSCP CS6: network control, as keepalived marks it
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, ttl, PROTO_VRRP, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = inet_checksum(&[&h]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// Decodes an IPv4 packet as a raw socket returns it (IP header included).
pub fn decode_ipv4(packet: &[u8], vrid: u8) -> Result<Received, Reject> {
    decode_ipv4_with(packet, vrid, true)
}

/// [`decode_ipv4`], with the TTL check only when `check_ttl` (unicast peers: see
/// [`decode_message`]).
pub fn decode_ipv4_with(packet: &[u8], vrid: u8, check_ttl: bool) -> Result<Received, Reject> {
    if packet.len() < IPV4_HEADER_LEN {
        return Err(Reject::Truncated);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    if packet[0] >> 4 != 4 || ihl < IPV4_HEADER_LEN || packet[9] != PROTO_VRRP {
        return Err(Reject::BadIpHeader);
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if packet.len() < ihl || total < ihl || packet.len() < total {
        return Err(Reject::Truncated);
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    decode_message(
        &packet[ihl..total],
        IpAddr::V4(src),
        IpAddr::V4(dst),
        if check_ttl { packet[8] } else { TTL },
        vrid,
    )
}

/// Decodes a VRRP message whose IP header was already taken apart (IPv6 raw sockets hand
/// over the payload only; the hop limit comes from a control message).
pub fn decode_message(
    msg: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    vrid: u8,
) -> Result<Received, Reject> {
    if msg.len() < HEADER_LEN {
        return Err(Reject::Truncated);
    }
    if ttl != TTL {
        return Err(Reject::Ttl);
    }
    if msg[0] >> 4 != VERSION {
        return Err(Reject::Version);
    }
    if msg[0] & 0x0f != TYPE_ADVERT {
        return Err(Reject::Type);
    }
    let count = usize::from(msg[3]);
    let width = if src.is_ipv4() { 4 } else { 16 };
    let len = HEADER_LEN + count * width;
    if msg.len() < len {
        return Err(Reject::Truncated);
    }
    // Extra bytes past the addresses are tolerated (RFC 5798 leaves room for padding), but the
    // checksum is computed over what the sender says it sent: the whole payload.
    let with_pseudo = inet_checksum(&[&pseudo_header(src, dst, msg.len()), msg]);
    if with_pseudo != 0 && inet_checksum(&[msg]) != 0 {
        return Err(Reject::Checksum);
    }
    if msg[1] != vrid {
        return Err(Reject::Vrid);
    }
    let interval =
        Centis::new(u16::from_be_bytes([msg[4], msg[5]]) & Centis::MAX).ok_or(Reject::Interval)?;
    let body = &msg[HEADER_LEN..len];
    let addresses = if src.is_ipv4() {
        Addresses::V4(
            body.chunks_exact(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                .collect(),
        )
    } else {
        Addresses::V6(
            body.chunks_exact(16)
                .map(|c| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(c);
                    Ipv6Addr::from(o)
                })
                .collect(),
        )
    };
    Ok(Received {
        source: src,
        advert: Advert {
            vrid: msg[1],
            priority: msg[2],
            interval,
            addresses,
        },
    })
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
