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
    /// IPv6 extension headers between the IPv6 header and `l4`, in order.
    pub ext_headers: Vec<ExtHeader>,
    pub l4: L4,
    pub payload: Vec<u8>,
}

/// An IPv6 extension header: its type (next-header value) and what follows its first two
/// bytes. The builder writes the next-header and length bytes and pads `data` to the
/// header's unit (8 bytes, or 4 for AH) with zeros.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtHeader {
    pub kind: u8,
    pub data: Vec<u8>,
}

/// IPv6 extension header types (RFC 8200; AH: RFC 4302).
pub const EXT_HOP_BY_HOP: u8 = 0;
pub const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
pub const EXT_AH: u8 = 51;
pub const EXT_DEST_OPTS: u8 = 60;

impl ExtHeader {
    /// A header of `kind` with 6 bytes of options (PadN): one 8-byte unit.
    pub fn padded(kind: u8) -> Self {
        Self {
            kind,
            data: vec![1, 4, 0, 0, 0, 0],
        }
    }

    /// A routing header (type 4, segment routing) with `segments_left` and one address.
    pub fn routing(segments_left: u8) -> Self {
        let mut data = vec![4, segments_left, 0, 0, 0, 0];
        data.extend_from_slice(&[0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99]);
        Self {
            kind: EXT_ROUTING,
            data,
        }
    }

    /// Bytes this header takes on the wire (its type's unit, at least 8).
    fn unit(&self) -> usize {
        if self.kind == EXT_AH { 4 } else { 8 }
    }

    fn encode(&self, next: u8) -> Result<Vec<u8>, FrameError> {
        let unit = self.unit();
        let mut len = (2 + self.data.len()).max(8);
        len = len.div_ceil(unit) * unit;
        let units = if self.kind == EXT_AH {
            len / 4 - 2
        } else {
            len / 8 - 1
        };
        let units = u8::try_from(units).map_err(|_| FrameError::ExtHeaderTooLong(self.kind))?;
        let mut out = vec![next, units];
        out.extend_from_slice(&self.data);
        out.resize(len, 0);
        Ok(out)
    }
}

/// Why a [`Frame`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("source and destination must be the same IP family")]
    MixedFamilies,
    #[error("IPv4 options are {0} bytes; at most 40 fit the header")]
    OptionsTooLong(usize),
    #[error("extension headers belong to IPv6 only")]
    ExtHeadersOnIpv4,
    #[error("extension header {0} is longer than its length byte can say")]
    ExtHeaderTooLong(u8),
    #[error("the IP packet would be {0} bytes; its length field holds at most 65,535")]
    TooLong(usize),
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
            ext_headers: Vec::new(),
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

    /// The frame's bytes. Panics on a frame that cannot exist ([`Frame::try_build`] says why):
    /// for tests and benchmarks, which build only frames they made valid.
    pub fn build(&self) -> Vec<u8> {
        match self.try_build() {
            Ok(b) => b,
            Err(e) => panic!("Frame::build: {e}"),
        }
    }

    /// The frame's bytes, or why they cannot be built.
    pub fn try_build(&self) -> Result<Vec<u8>, FrameError> {
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
                if !self.ext_headers.is_empty() {
                    return Err(FrameError::ExtHeadersOnIpv4);
                }
                let mut opts = self.ip_options.clone();
                while !opts.len().is_multiple_of(4) {
                    opts.push(0);
                }
                if opts.len() > 40 {
                    return Err(FrameError::OptionsTooLong(opts.len()));
                }
                let hdr_len = 20 + opts.len();
                let total = hdr_len + l4.len();
                let total16 = u16::try_from(total).map_err(|_| FrameError::TooLong(total))?;
                let mut h = vec![0u8; hdr_len];
                h[0] = 0x40 | (hdr_len / 4) as u8;
                h[1] = self.tos;
                h[2..4].copy_from_slice(&total16.to_be_bytes());
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
                let mut ext = Vec::new();
                for (i, e) in self.ext_headers.iter().enumerate() {
                    let next = self
                        .ext_headers
                        .get(i + 1)
                        .map_or_else(|| self.proto(), |n| n.kind);
                    ext.extend(e.encode(next)?);
                }
                let payload = ext.len() + l4.len();
                let payload16 =
                    u16::try_from(payload).map_err(|_| FrameError::TooLong(payload + 40))?;
                let mut h = [0u8; 40];
                h[0] = 0x60 | (self.tos >> 4);
                h[1] = self.tos << 4;
                h[4..6].copy_from_slice(&payload16.to_be_bytes());
                h[6] = self
                    .ext_headers
                    .first()
                    .map_or_else(|| self.proto(), |e| e.kind);
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                out.extend_from_slice(&h);
                out.extend_from_slice(&ext);
            }
            _ => return Err(FrameError::MixedFamilies),
        }
        out.extend_from_slice(&l4);
        Ok(out)
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
    lb_common::csum::checksum(&[data], initial)
}

/// Offset of the IP header of a frame (behind at most one VLAN tag); `None` when the frame
/// is too short to hold its ethertype (and, when tagged, the whole tag).
pub fn l3_offset(frame: &[u8]) -> Option<usize> {
    let ethertype = be16(frame, 12)?;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        be16(frame, 16).map(|_| 18)
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

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Encapsulations nested deeper than this are described as such, not followed (a crafted
/// frame could nest IPIP a few thousand times).
const MAX_NESTING: usize = 4;

/// One line describing a frame: `IPv4 TCP 10.0.0.1:1234 -> 10.0.0.2:80 [S]`, or what it is.
/// Total: any bytes at all get a description, never a panic.
pub fn describe(frame: &[u8]) -> String {
    describe_at(frame, 0)
}

fn describe_at(frame: &[u8], depth: usize) -> String {
    let Some(l3) = l3_offset(frame) else {
        return format!("{} bytes (runt)", frame.len());
    };
    let (Some(ethertype), tag) = (be16(frame, l3 - 2), be16(frame, 14).filter(|_| l3 == 18)) else {
        return format!("{} bytes (runt)", frame.len());
    };
    let tag = tag
        .map(|t| format!("vlan {} ", t & 0x0fff))
        .unwrap_or_default();
    let ip = match ethertype {
        0x0800 => ipv4(frame, l3),
        0x86dd => ipv6(frame, l3),
        0x0806 => return format!("{tag}ARP"),
        other => return format!("{tag}ethertype {other:#06x}, {} bytes", frame.len()),
    };
    let Some(ip) = ip else {
        let family = if ethertype == 0x0800 { "IPv4" } else { "IPv6" };
        return format!("{tag}{family} truncated, {} bytes", frame.len());
    };
    format!("{tag}{}", describe_ip(frame, &ip, depth))
}

/// What the describer reads of an IP header.
struct IpView {
    family: &'static str,
    proto: u8,
    src: String,
    dst: String,
    /// Offset of the transport header.
    l4: usize,
    /// Notes on the IP layer: length disagreements, fragments, extension headers.
    notes: Vec<String>,
}

fn ipv4(frame: &[u8], l3: usize) -> Option<IpView> {
    let h = frame.get(l3..l3 + 20)?;
    let a = |o: usize| std::net::Ipv4Addr::new(h[o], h[o + 1], h[o + 2], h[o + 3]).to_string();
    let ihl = (h[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    let mut notes = Vec::new();
    if h[0] >> 4 != 4 || ihl < 20 {
        notes.push(format!("bad header (version {}, IHL {ihl})", h[0] >> 4));
    }
    length_note(&mut notes, "total length", total, frame.len() - l3);
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x3fff != 0 {
        notes.push(format!(
            "fragment (offset {}{})",
            (frag & 0x1fff) * 8,
            if frag & 0x2000 != 0 { ", more" } else { "" }
        ));
    }
    Some(IpView {
        family: "IPv4",
        proto: h[9],
        src: a(12),
        dst: a(16),
        l4: l3 + ihl.max(20),
        notes,
    })
}

fn ipv6(frame: &[u8], l3: usize) -> Option<IpView> {
    let h = frame.get(l3..l3 + 40)?;
    let a = |o: usize| {
        let b: [u8; 16] = h[o..o + 16].try_into().unwrap_or([0; 16]);
        std::net::Ipv6Addr::from(b).to_string()
    };
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    let mut notes = Vec::new();
    if h[0] >> 4 != 6 {
        notes.push(format!("bad version {}", h[0] >> 4));
    }
    length_note(&mut notes, "payload length", payload + 40, frame.len() - l3);
    // Extension headers, as far as the frame holds them (at most 8 named).
    let (mut proto, mut at) = (h[6], l3 + 40);
    let mut chain = Vec::new();
    while chain.len() < 8 {
        let name = match proto {
            EXT_HOP_BY_HOP => "hop-by-hop",
            EXT_ROUTING => "routing",
            EXT_FRAGMENT => "fragment",
            EXT_AH => "AH",
            EXT_DEST_OPTS => "destination options",
            _ => break,
        };
        let (Some(&next), Some(&units)) = (frame.get(at), frame.get(at + 1)) else {
            chain.push(format!("{name} (truncated)"));
            break;
        };
        chain.push(match (proto, frame.get(at + 3)) {
            (EXT_ROUTING, Some(&left)) => format!("routing (segments left {left})"),
            _ => name.to_string(),
        });
        at += if proto == EXT_AH {
            (units as usize + 2) * 4
        } else {
            (units as usize + 1) * 8
        };
        proto = next;
    }
    if !chain.is_empty() {
        notes.push(format!("ext {}", chain.join(", ")));
    }
    Some(IpView {
        family: "IPv6",
        proto,
        src: a(8),
        dst: a(24),
        l4: at,
        notes,
    })
}

/// Notes an IP length the frame does not hold (malformed) or exceeds (Ethernet padding).
fn length_note(notes: &mut Vec<String>, field: &str, says: usize, holds: usize) {
    match says.cmp(&holds) {
        std::cmp::Ordering::Greater => {
            notes.push(format!("{field} {says} > {holds} bytes in the frame"))
        }
        std::cmp::Ordering::Less => notes.push(format!("{} bytes of padding", holds - says)),
        std::cmp::Ordering::Equal => {}
    }
}

fn describe_ip(frame: &[u8], ip: &IpView, depth: usize) -> String {
    let IpView {
        family,
        src,
        dst,
        l4,
        ..
    } = ip;
    let l4 = *l4;
    let ports = be16(frame, l4).zip(be16(frame, l4 + 2));
    let main = match (ip.proto, ports) {
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
            format!("{family} TCP {src}:{s} -> {dst}:{d} [{names}]")
        }
        (IPPROTO_UDP, Some((s, d))) => format!("{family} UDP {src}:{s} -> {dst}:{d}"),
        (IPPROTO_ICMP | IPPROTO_ICMPV6, _) => match frame.get(l4) {
            Some(kind) => format!("{family} ICMP type {kind} {src} -> {dst}"),
            None => format!("{family} ICMP (truncated) {src} -> {dst}"),
        },
        (4 | 41, _) if depth >= MAX_NESTING => {
            format!(
                "{family} proto {} {src} -> {dst} (nested too deep)",
                ip.proto
            )
        }
        (4, _) => format!(
            "{family} IPIP {src} -> {dst}: {}",
            describe_inner(frame, l4, 0x0800, depth)
        ),
        (41, _) => format!(
            "{family} IP6IP6 {src} -> {dst}: {}",
            describe_inner(frame, l4, 0x86dd, depth)
        ),
        (IPPROTO_TCP | IPPROTO_UDP, None) => {
            let name = if ip.proto == IPPROTO_TCP {
                "TCP"
            } else {
                "UDP"
            };
            format!("{family} {name} (truncated) {src} -> {dst}")
        }
        (p, _) => format!("{family} proto {p} {src} -> {dst}"),
    };
    if ip.notes.is_empty() {
        main
    } else {
        format!("{main} ({})", ip.notes.join("; "))
    }
}

fn describe_inner(frame: &[u8], at: usize, ethertype: u16, depth: usize) -> String {
    let mut fake = vec![0u8; 12];
    fake.extend_from_slice(&ethertype.to_be_bytes());
    fake.extend_from_slice(frame.get(at..).unwrap_or(&[]));
    describe_at(&fake, depth + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_short_vlan_tagged_frame_is_described_not_a_panic() {
        let mut f = Frame::tcp(ip("10.0.0.1"), 1, ip("10.0.0.2"), 80, TCP_SYN);
        f.vlan = Some(7);
        let full = f.build();
        for len in 0..full.len() {
            let d = describe(&full[..len]);
            assert!(!d.is_empty(), "length {len}");
        }
        assert_eq!(describe(&full[..16]), "16 bytes (runt)");
        assert!(describe(&full[..30]).starts_with("vlan 7 IPv4 truncated"));
        assert!(describe(&full).starts_with("vlan 7 IPv4 TCP 10.0.0.1:1 -> 10.0.0.2:80 [S]"));
    }

    #[test]
    fn every_prefix_of_every_kind_of_frame_is_described() {
        let mut v6 = Frame::tcp(ip("fd00::1"), 1, ip("fd00::2"), 80, TCP_SYN);
        v6.ext_headers = vec![
            ExtHeader::padded(EXT_HOP_BY_HOP),
            ExtHeader::routing(0),
            ExtHeader::padded(EXT_DEST_OPTS),
        ];
        let frames = [
            v6.build(),
            Frame::new(
                ip("10.0.0.1"),
                ip("10.0.0.2"),
                L4::EchoRequest { id: 1, seq: 1 },
            )
            .build(),
            Frame::new(
                ip("10.0.0.1"),
                ip("10.0.0.2"),
                L4::Raw {
                    proto: 4,
                    bytes: Frame::udp(ip("10.0.0.3"), 5, ip("10.0.0.4"), 53).build()[14..].to_vec(),
                },
            )
            .build(),
        ];
        for f in &frames {
            for len in 0..=f.len() {
                describe(&f[..len]);
            }
        }
        assert_eq!(
            describe(&frames[0]),
            "IPv6 TCP fd00::1:1 -> fd00::2:80 [S] (ext hop-by-hop, routing (segments left 0), \
             destination options)"
        );
        assert_eq!(
            describe(&frames[2]),
            "IPv4 IPIP 10.0.0.1 -> 10.0.0.2: IPv4 UDP 10.0.0.3:5 -> 10.0.0.4:53"
        );
    }

    #[test]
    fn length_disagreements_are_named() {
        let mut p = Frame::tcp(ip("10.0.0.1"), 1, ip("10.0.0.2"), 80, TCP_SYN).build();
        p.extend_from_slice(&[0; 6]);
        assert!(
            describe(&p).ends_with("(6 bytes of padding)"),
            "{}",
            describe(&p)
        );
        p.truncate(40);
        assert!(
            describe(&p).contains("total length 40 > 26 bytes"),
            "{}",
            describe(&p)
        );
    }

    #[test]
    fn deep_nesting_stops() {
        let mut inner = Frame::udp(ip("10.0.0.3"), 5, ip("10.0.0.4"), 53).build()[14..].to_vec();
        for _ in 0..3000 {
            let mut h = vec![
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 4, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            let total = (20 + inner.len()).min(65535) as u16;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&inner);
            inner = h;
        }
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&inner);
        assert!(describe(&frame).contains("nested too deep"));
    }

    #[test]
    fn frames_that_cannot_exist_are_errors() {
        let mut f = Frame::tcp(ip("10.0.0.1"), 1, ip("fd00::2"), 80, TCP_SYN);
        assert_eq!(f.try_build(), Err(FrameError::MixedFamilies));
        f.dst = ip("10.0.0.2");
        f.ip_options = vec![1; 41];
        assert_eq!(f.try_build(), Err(FrameError::OptionsTooLong(44)));
        f.ip_options.clear();
        f.payload = vec![0; 70_000];
        assert!(matches!(f.try_build(), Err(FrameError::TooLong(_))));
    }
}
