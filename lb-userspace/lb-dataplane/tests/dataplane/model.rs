//! A reference model of `xdp_balancer`, written from docs/dataplane.md in plain Rust over byte
//! slices: for any frame it decides what the program must do (pass, drop, forward to which
//! backend, or answer) and which reason counter it must bump. It keeps its own connection
//! table, least-connections counts and round-robin cursors, so it also predicts stateful
//! choices. The random-packet test runs both on every packet and compares.
//!
//! The model covers what the random test's fixture uses: no interface MACs in the settings
//! (every frame is "for us"), the flood guard off, backends that never fail, and a connection
//! table large enough never to evict. It reads the Maglev / ip-hash / round-robin tables the
//! control plane wrote (the control plane's work, not the program's).

use std::collections::HashMap;
use std::net::IpAddr;

use lb_common::{
    AF_INET, AF_INET6, Algorithm, FlowKey, ForwardMode, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, Reason,
    hash::{flow_hash, source_hash},
    user::addr_words,
};
use lb_dataplane::{BackendSpec, VipSpec};

use crate::fixture::Fixture;

/// What the program must do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// XDP_PASS, the frame untouched.
    Pass(Reason),
    Drop(Reason),
    /// XDP_TX to this backend.
    Forward {
        backend: IpAddr,
        reason: Reason,
    },
    /// XDP_TX back to the sender (an echo reply, an ICMP "too big").
    Reply(Reason),
}

impl Verdict {
    pub fn reason(&self) -> Reason {
        match self {
            Verdict::Pass(r) | Verdict::Drop(r) | Verdict::Reply(r) => *r,
            Verdict::Forward { reason, .. } => *reason,
        }
    }
}

const MAX_EXT_HEADERS: usize = 4;
/// Bytes of the offending packet an ICMP "too big" quotes (IPv4, IPv6).
const QUOTE4: usize = 84;
const QUOTE6: usize = 248;

/// The IP layer as the model reads it.
struct Ip {
    family: u8,
    l3: usize,
    l4: usize,
    /// Where the IP packet ends (its length field).
    end: usize,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    refused: Option<Reason>,
    /// IPv4 "don't fragment".
    df: bool,
}

/// A connection-table entry of the model.
#[derive(Clone, Copy)]
struct Conn {
    /// The VIP the entry was made for (its forwarding mode applies).
    vip: usize,
    backend: IpAddr,
    closing: bool,
}

pub struct Model {
    vips: Vec<VipSpec>,
    backend_mtu: u32,
    conns: HashMap<FlowKey, Conn>,
    lc: HashMap<(String, IpAddr), u64>,
    rr: HashMap<String, u32>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A field as the program loads it (network order kept).
fn ne16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn addr(b: &[u8], at: usize, family: u8) -> IpAddr {
    if family == AF_INET {
        let o: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        IpAddr::from(o)
    } else {
        let o: [u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
        IpAddr::from(o)
    }
}

fn family_of(a: IpAddr) -> u8 {
    if a.is_ipv4() { AF_INET } else { AF_INET6 }
}

fn flow(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: addr_words(src),
        dst: addr_words(dst),
        sport,
        dport,
        proto,
        family: family_of(src),
        _pad: [0; 2],
    }
}

/// The network layer, or the verdict when there is none to read.
fn parse(p: &[u8]) -> Result<Ip, Verdict> {
    let mut l3 = 14;
    let mut ethertype = be16(p, 12);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if p.len() < 18 {
            return Err(Verdict::Pass(Reason::PassTruncated));
        }
        ethertype = be16(p, 16);
        l3 = 18;
    }
    match ethertype {
        0x0800 => parse4(p, l3),
        0x86dd => parse6(p, l3),
        _ => Err(Verdict::Pass(Reason::PassNonIp)),
    }
}

fn parse4(p: &[u8], l3: usize) -> Result<Ip, Verdict> {
    if p.len() < l3 + 20 {
        return Err(Verdict::Pass(Reason::PassTruncated));
    }
    let hdr_len = (p[l3] & 0x0f) as usize * 4;
    let total = be16(p, l3 + 2) as usize;
    let frag = be16(p, l3 + 6);
    let malformed = p[l3] >> 4 != 4 || hdr_len < 20 || total < hdr_len || l3 + total > p.len();
    let refused = if malformed {
        Some(Reason::DropMalformed)
    } else if frag & 0x3fff != 0 {
        Some(Reason::DropFragment)
    } else {
        None
    };
    Ok(Ip {
        family: AF_INET,
        l3,
        l4: l3 + hdr_len,
        end: l3 + total,
        proto: p[l3 + 9],
        src: addr(p, l3 + 12, AF_INET),
        dst: addr(p, l3 + 16, AF_INET),
        refused,
        df: frag & 0x4000 != 0,
    })
}

fn parse6(p: &[u8], l3: usize) -> Result<Ip, Verdict> {
    if p.len() < l3 + 40 {
        return Err(Verdict::Pass(Reason::PassTruncated));
    }
    let end = l3 + 40 + be16(p, l3 + 4) as usize;
    let mut ip = Ip {
        family: AF_INET6,
        l3,
        l4: l3 + 40,
        end,
        proto: p[l3 + 6],
        src: addr(p, l3 + 8, AF_INET6),
        dst: addr(p, l3 + 24, AF_INET6),
        refused: None,
        df: true,
    };
    if p[l3] >> 4 != 6 || end > p.len() {
        ip.refused = Some(Reason::DropMalformed);
        return Ok(ip);
    }
    // The extension-header policy of docs/dataplane.md.
    for i in 0..=MAX_EXT_HEADERS {
        match ip.proto {
            0 | 43 | 51 | 60 => {}
            44 => {
                ip.refused = Some(Reason::DropFragment);
                return Ok(ip);
            }
            _ => return Ok(ip),
        }
        if i == MAX_EXT_HEADERS || (ip.proto == 0 && i > 0) {
            ip.refused = Some(Reason::DropExtHeader);
            return Ok(ip);
        }
        if ip.l4 + 8 > end {
            ip.refused = Some(Reason::DropMalformed);
            return Ok(ip);
        }
        if ip.proto == 43 && p[ip.l4 + 3] != 0 {
            ip.refused = Some(Reason::DropExtHeader);
            return Ok(ip);
        }
        let units = p[ip.l4 + 1] as usize;
        let next = p[ip.l4];
        ip.l4 += if ip.proto == 51 {
            (units + 2) * 4
        } else {
            (units + 1) * 8
        };
        if ip.l4 > end {
            ip.refused = Some(Reason::DropMalformed);
            return Ok(ip);
        }
        ip.proto = next;
    }
    unreachable!("the loop returns by its last round")
}

/// Sum of a byte range as 16-bit words (RFC 1071), folded.
fn sums_to_ones(b: &[u8]) -> bool {
    lb_dataplane::packet::checksum(b, 0) == 0
}

impl Model {
    pub fn new(vips: &[VipSpec], backend_mtu: u32) -> Self {
        Self {
            vips: vips.to_vec(),
            backend_mtu,
            conns: HashMap::new(),
            lc: HashMap::new(),
            rr: HashMap::new(),
        }
    }

    fn is_vip_address(&self, a: IpAddr) -> bool {
        self.vips.iter().any(|v| v.addr == a)
    }

    /// Exact (address, port, protocol), then the address's port-0 VIP: its index.
    fn lookup(&self, a: IpAddr, port: u16, proto: u8) -> Option<usize> {
        let find = |port: u16| {
            self.vips
                .iter()
                .position(|v| v.addr == a && v.port == port && v.proto == proto)
        };
        find(u16::from_be(port)).or_else(|| find(0))
    }

    /// What the program does with `p` (at least 14 bytes); updates the model's state as the
    /// program updates its maps.
    pub fn decide(&mut self, fx: &Fixture, p: &[u8]) -> Verdict {
        let ip = match parse(p) {
            Ok(ip) => ip,
            Err(v) => return v,
        };
        if !self.is_vip_address(ip.dst) {
            return Verdict::Pass(Reason::PassNotVip);
        }
        if let Some(r) = ip.refused {
            return Verdict::Drop(r);
        }
        let icmp = if ip.family == AF_INET {
            IPPROTO_ICMP
        } else {
            IPPROTO_ICMPV6
        };
        if ip.proto == icmp {
            return self.icmp(fx, p, &ip);
        }
        if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
            return Verdict::Pass(Reason::PassNotVip);
        }
        let Some((sport, dport, flags)) = ports(p, &ip) else {
            return Verdict::Drop(Reason::DropMalformed);
        };
        let key = flow(ip.src, ip.dst, sport, dport, ip.proto);
        let syn_only = flags & 0x12 == 0x02;
        let closing = flags & 0x05 != 0;
        if !syn_only && let Some(c) = self.conns.get_mut(&key) {
            c.closing |= closing;
            let (vip, backend) = (c.vip, c.backend);
            return self.forward(p, &ip, &self.vips[vip], backend, Reason::TxForward);
        }
        let Some(index) = self.lookup(ip.dst, dport, ip.proto) else {
            return Verdict::Pass(Reason::PassNotVip);
        };
        let vip = self.vips[index].clone();
        let Some(picked) = self.pick(fx, &vip, &key) else {
            return Verdict::Drop(Reason::DropNoBackend);
        };
        let entry = Conn {
            vip: index,
            backend: picked,
            closing,
        };
        let backend = match self.conns.get(&key) {
            // A retransmitted SYN keeps its backend, unless its connection was closed.
            Some(c) if syn_only && !c.closing => c.backend,
            _ => {
                self.conns.insert(key, entry);
                if vip.algorithm == Algorithm::LeastConnections {
                    *self.lc.entry((vip.name.clone(), picked)).or_default() += 1;
                }
                picked
            }
        };
        self.forward(p, &ip, &vip, backend, Reason::TxForward)
    }

    fn active(vip: &VipSpec) -> Vec<&BackendSpec> {
        vip.backends.iter().filter(|b| b.weight > 0).collect()
    }

    fn pick(&mut self, fx: &Fixture, vip: &VipSpec, key: &FlowKey) -> Option<IpAddr> {
        if Self::active(vip).is_empty() {
            return None;
        }
        Some(match vip.algorithm {
            Algorithm::Maglev => fx.table_choice(&vip.name, flow_hash(key)),
            Algorithm::IpHash => fx.table_choice(&vip.name, source_hash(key)),
            Algorithm::WeightedRoundRobin => {
                let len = fx.prog.vip_meta(&vip.name).expect("programmed").table_len;
                let cursor = self.rr.entry(vip.name.clone()).or_default();
                let pos = *cursor % len;
                *cursor = pos + 1;
                fx.table_choice(&vip.name, pos)
            }
            Algorithm::LeastConnections => {
                let list = Self::active(vip);
                let n = list.len() as u32;
                let start = flow_hash(key) % n;
                let mut best: Option<(IpAddr, u64, u64)> = None;
                for i in 0..n {
                    let b = list[((start + i) % n) as usize];
                    let conns = self
                        .lc
                        .get(&(vip.name.clone(), b.addr))
                        .copied()
                        .unwrap_or(0);
                    let w = b.weight as u64;
                    if best.is_none_or(|(_, bc, bw)| conns * bw < bc * w) {
                        best = Some((b.addr, conns, w));
                    }
                }
                best.expect("a candidate").0
            }
        })
    }

    /// The forwarding step: `dsr-l2` always transmits; `ipip` over the backend MTU answers
    /// with "too big" (TCP/UDP; IPv4 only with DF; only if the packet holds the quote) or
    /// drops.
    fn forward(
        &self,
        p: &[u8],
        ip: &Ip,
        vip: &VipSpec,
        backend: IpAddr,
        reason: Reason,
    ) -> Verdict {
        if vip.mode == ForwardMode::Ipip && self.backend_mtu != 0 {
            let (overhead, quote) = if ip.family == AF_INET {
                (20, QUOTE4)
            } else {
                (40, QUOTE6)
            };
            let inner = p.len() - ip.l3;
            if inner + overhead > self.backend_mtu as usize {
                let answerable =
                    (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) && ip.df && inner >= quote;
                return if answerable {
                    Verdict::Reply(Reason::TxTooBig)
                } else {
                    Verdict::Drop(Reason::DropTooBig)
                };
            }
        }
        Verdict::Forward { backend, reason }
    }

    fn icmp(&self, fx: &Fixture, p: &[u8], ip: &Ip) -> Verdict {
        if ip.l4 + 8 > ip.end {
            return Verdict::Drop(Reason::DropMalformed);
        }
        let kind = p[ip.l4];
        match (ip.family, kind) {
            (AF_INET, 8) => {
                if sums_to_ones(&p[ip.l3..ip.l4]) {
                    Verdict::Reply(Reason::TxEchoReply)
                } else {
                    Verdict::Drop(Reason::DropMalformed)
                }
            }
            (AF_INET6, 128) => Verdict::Reply(Reason::TxEchoReply),
            (AF_INET, 3) => {
                let off = ip.l4 + 8;
                if off + 20 > ip.end {
                    return Verdict::Drop(Reason::DropMalformed);
                }
                let ihl = (p[off] & 0x0f) as usize * 4;
                if p[off] >> 4 != 4 || ihl < 20 || off + ihl + 4 > ip.end {
                    return Verdict::Drop(Reason::DropMalformed);
                }
                let (src, dst) = (addr(p, off + 12, AF_INET), addr(p, off + 16, AF_INET));
                self.icmp_error(fx, p, ip, p[off + 9], src, dst, off + ihl)
            }
            (AF_INET6, 1 | 2) => {
                let off = ip.l4 + 8;
                if off + 44 > ip.end {
                    return Verdict::Drop(Reason::DropMalformed);
                }
                let (src, dst) = (addr(p, off + 8, AF_INET6), addr(p, off + 24, AF_INET6));
                self.icmp_error(fx, p, ip, p[off + 6], src, dst, off + 40)
            }
            _ => Verdict::Pass(Reason::PassIcmp),
        }
    }

    /// An ICMP error quoting the backend's reply (VIP -> client): forwarded to the backend
    /// that owns the flow, from the connection table or, for the hashing algorithms, the table.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error(
        &self,
        fx: &Fixture,
        p: &[u8],
        ip: &Ip,
        proto: u8,
        inner_src: IpAddr,
        inner_dst: IpAddr,
        ports_at: usize,
    ) -> Verdict {
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return Verdict::Pass(Reason::PassIcmp);
        }
        let (vip_port, client_port) = (ne16(p, ports_at), ne16(p, ports_at + 2));
        let Some(index) = self.lookup(inner_src, vip_port, proto) else {
            return Verdict::Pass(Reason::PassIcmp);
        };
        let vip = &self.vips[index];
        let key = flow(inner_dst, inner_src, client_port, vip_port, proto);
        let backend = match (self.conns.get(&key), vip.algorithm) {
            (Some(c), _) => c.backend,
            (None, Algorithm::Maglev) => fx.table_choice(&vip.name, flow_hash(&key)),
            (None, Algorithm::IpHash) => fx.table_choice(&vip.name, source_hash(&key)),
            (None, _) => return Verdict::Pass(Reason::PassIcmp),
        };
        self.forward(p, ip, vip, backend, Reason::TxIcmpError)
    }
}

/// Ports (network order) and TCP flags of the TCP/UDP header, inside the IP length.
fn ports(p: &[u8], ip: &Ip) -> Option<(u16, u16, u8)> {
    let l4 = ip.l4;
    if ip.proto == IPPROTO_TCP {
        if l4 + 20 > ip.end {
            return None;
        }
        let doff = (p[l4 + 12] >> 4) as usize;
        if doff < 5 || l4 + doff * 4 > ip.end {
            return None;
        }
        Some((ne16(p, l4), ne16(p, l4 + 2), p[l4 + 13]))
    } else {
        if l4 + 8 > ip.end {
            return None;
        }
        Some((ne16(p, l4), ne16(p, l4 + 2), 0))
    }
}
