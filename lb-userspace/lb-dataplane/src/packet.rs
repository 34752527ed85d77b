//! Building and inspecting Ethernet frames, for tests, benchmarks and the replay tool.
//! Checksums are computed for real so that a packet built here is what a host would send.

use std::net::IpAddr;

use lb_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_LEN: usize = 14;

/// The transport part of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// Echo request (ICMP type 8 / ICMPv6 type 128).
    EchoRequest {
        id: u16,
        seq: u16,
    },
    /// An ICMP message with the given type/code and body after the 4-byte "rest of header".
    Icmp {
        kind: u8,
        code: u8,
        rest: [u8; 4],
        body: Vec<u8>,
    },
    /// Any protocol number with raw bytes (no checksum is touched).
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A frame to build. Defaults describe a client sending a TCP SYN.
#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub tos: u8,
    /// IPv4 options (padded to a multiple of 4 bytes).
    pub ip_options: Vec<u8>,
    /// IPv4: (more fragments, offset in 8-byte units).
    pub fragment: Option<(bool, u16)>,
    pub dont_fragment: bool,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            src_mac: [0x02, 0, 0, 0, 0, 0x10],
            vlan: None,
            src,
            dst,
            ttl: 64,
            tos: 0,
            ip_options: Vec::new(),
            fragment: None,
            dont_fragment: true,
            l4,
            payload: Vec::new(),
        }
    }

    pub fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let mut out = Vec::with_capacity(64 + l4.len());
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        if let Some(tag) = self.vlan {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            out.extend_from_slice(&tag.to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut opts = self.ip_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                let hdr_len = 20 + opts.len();
                let mut h = vec![0u8; hdr_len];
                h[0] = 0x40 | (hdr_len / 4) as u8;
                h[1] = self.tos;
                h[2..4].copy_from_slice(&((hdr_len + l4.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
                let mut frag: u16 = if self.dont_fragment { 0x4000 } else { 0 };
                if let Some((mf, off)) = self.fragment {
                    frag = (if mf { 0x2000 } else { 0 }) | (off & 0x1fff);
                }
                h[6..8].copy_from_slice(&frag.to_be_bytes());
                h[8] = self.ttl;
                h[9] = self.proto();
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h[20..].copy_from_slice(&opts);
                let c = checksum(&h, 0);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = [0u8; 40];
                h[0] = 0x60 | (self.tos >> 4);
                h[1] = self.tos << 4;
                h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                h[6] = self.proto();
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                out.extend_from_slice(&h);
            }
            _ => panic!("Frame: source and destination must be the same IP family"),
        }
        out.extend_from_slice(&l4);
        out
    }

    fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::EchoRequest { .. } | L4::Icmp { .. } => {
                if self.src.is_ipv4() {
                    IPPROTO_ICMP
                } else {
                    IPPROTO_ICMPV6
                }
            }
            L4::Raw { proto, .. } => *proto,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&sport.to_be_bytes());
                t[2..4].copy_from_slice(&dport.to_be_bytes());
                t[4..8].copy_from_slice(&1000u32.to_be_bytes());
                t[12] = 5 << 4;
                t[13] = *flags;
                t[14..16].copy_from_slice(&65535u16.to_be_bytes());
                t
            }
            L4::Udp { sport, dport } => {
                let mut u = vec![0u8; 8];
                u[0..2].copy_from_slice(&sport.to_be_bytes());
                u[2..4].copy_from_slice(&dport.to_be_bytes());
                u[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                u
            }
            L4::EchoRequest { id, seq } => {
                let kind = if self.src.is_ipv4() { 8 } else { 128 };
                let mut e = vec![kind, 0, 0, 0];
                e.extend_from_slice(&id.to_be_bytes());
                e.extend_from_slice(&seq.to_be_bytes());
                e
            }
            L4::Icmp {
                kind,
                code,
                rest,
                body,
            } => {
                let mut e = vec![*kind, *code, 0, 0];
                e.extend_from_slice(rest);
                e.extend_from_slice(body);
                e
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        };
        b.extend_from_slice(&self.payload);
        let csum_at = match self.l4 {
            L4::Tcp { .. } => Some(16),
            L4::Udp { .. } => Some(6),
            L4::EchoRequest { .. } | L4::Icmp { .. } => Some(2),
            L4::Raw { .. } => None,
        };
        if let Some(at) = csum_at {
            let pseudo = if self.src.is_ipv4() && self.proto() == IPPROTO_ICMP {
                0
            } else {
                pseudo_sum(self.src, self.dst, self.proto(), b.len())
            };
            let mut c = checksum(&b, pseudo);
            if c == 0 && matches!(self.l4, L4::Udp { .. }) {
                c = 0xffff;
            }
            b[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        b
    }
}

/// One's-complement sum of the pseudo-header, for [`checksum`]'s `initial`.
pub fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut sum = 0u32;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        _ => {}
    }
    sum + proto as u32 + len as u32
}

/// The Internet checksum of `data` (RFC 1071), starting from `initial`.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum: u64 = initial as u64;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Offset of the IP header of a frame (behind at most one VLAN tag).
pub fn l3_offset(frame: &[u8]) -> Option<usize> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        Some(18)
    } else {
        Some(14)
    }
}

/// Whether the IPv4 header at `off` has a valid checksum.
pub fn ipv4_header_ok(frame: &[u8], off: usize) -> bool {
    let Some(&vihl) = frame.get(off) else {
        return false;
    };
    let len = (vihl & 0x0f) as usize * 4;
    frame
        .get(off..off + len)
        .is_some_and(|h| checksum(h, 0) == 0)
}

/// One line describing a frame: `IPv4 TCP 10.0.0.1:1234 -> 10.0.0.2:80 [S]`, or what it is.
pub fn describe(frame: &[u8]) -> String {
    let Some(l3) = l3_offset(frame) else {
        return format!("{} bytes (runt)", frame.len());
    };
    let ethertype = u16::from_be_bytes([frame[l3 - 2], frame[l3 - 1]]);
    let tag = if l3 == 18 {
        format!(
            "vlan {} ",
            u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff
        )
    } else {
        String::new()
    };
    let (family, proto, src, dst, l4) = match ethertype {
        0x0800 if frame.len() >= l3 + 20 => {
            let ihl = (frame[l3] & 0x0f) as usize * 4;
            let a = |o: usize| {
                std::net::Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3])
                    .to_string()
            };
            (
                "IPv4",
                frame[l3 + 9],
                a(l3 + 12),
                a(l3 + 16),
                l3 + ihl.max(20),
            )
        }
        0x86dd if frame.len() >= l3 + 40 => {
            let a = |o: usize| {
                let b: [u8; 16] = frame[o..o + 16].try_into().unwrap_or([0; 16]);
                std::net::Ipv6Addr::from(b).to_string()
            };
            ("IPv6", frame[l3 + 6], a(l3 + 8), a(l3 + 24), l3 + 40)
        }
        0x0806 => return format!("{tag}ARP"),
        other => return format!("{tag}ethertype {other:#06x}, {} bytes", frame.len()),
    };
    let ports = frame.get(l4..l4 + 4).map(|p| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    });
    match (proto, ports) {
        (IPPROTO_TCP, Some((s, d))) => {
            let flags = frame.get(l4 + 13).copied().unwrap_or(0);
            let names: String = [
                (TCP_SYN, 'S'),
                (TCP_ACK, '.'),
                (TCP_FIN, 'F'),
                (TCP_RST, 'R'),
            ]
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, c)| *c)
            .collect();
            format!("{tag}{family} TCP {src}:{s} -> {dst}:{d} [{names}]")
        }
        (IPPROTO_UDP, Some((s, d))) => format!("{tag}{family} UDP {src}:{s} -> {dst}:{d}"),
        (IPPROTO_ICMP | IPPROTO_ICMPV6, _) => {
            format!(
                "{tag}{family} ICMP type {} {src} -> {dst}",
                frame.get(l4).copied().unwrap_or(0)
            )
        }
        (4, _) => format!(
            "{tag}{family} IPIP {src} -> {dst}: {}",
            describe_inner(frame, l4, 0x0800)
        ),
        (41, _) => format!(
            "{tag}{family} IP6IP6 {src} -> {dst}: {}",
            describe_inner(frame, l4, 0x86dd)
        ),
        (p, _) => format!("{tag}{family} proto {p} {src} -> {dst}"),
    }
}

fn describe_inner(frame: &[u8], at: usize, ethertype: u16) -> String {
    let mut fake = vec![0u8; 12];
    fake.extend_from_slice(&ethertype.to_be_bytes());
    fake.extend_from_slice(frame.get(at..).unwrap_or(&[]));
    describe(&fake)
}
