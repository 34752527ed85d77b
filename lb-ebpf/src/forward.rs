//! Forwarding to the chosen backend: `dsr-l2` (MAC rewrite) or `ipip` (IPv4-in-IPv4 /
//! IPv6-in-IPv6, as Katran does). Both transmit on the interface the packet came in on.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    AF_INET, Backend, FlowKey, ForwardMode, IPPROTO_IPIP, IPPROTO_IPV6, Reason, hash::flow_hash,
};

use crate::{
    csum,
    hdr::{ETH_LEN, IPV4_LEN, IPV6_LEN, VLAN_LEN, check, load, packet_len, store},
    maps::SETTINGS,
    parse::Ip,
    stats::{self, Verdict},
    toobig,
};

pub enum Forwarded {
    /// Sent on to the backend.
    Tx,
    /// Answered: sent back to where it came from (an ICMP error built in place).
    Reply(Reason),
    Drop(Reason),
}

impl Forwarded {
    #[inline(always)]
    pub fn is_tx(&self) -> bool {
        matches!(self, Forwarded::Tx)
    }
}

#[inline(always)]
pub fn to_backend(ctx: &XdpContext, ip: &Ip, mode: u8, b: &Backend, flow: &FlowKey) -> Forwarded {
    if mode == ForwardMode::Ipip as u8 {
        if ip.family == AF_INET {
            ipip4(ctx, ip, b)
        } else {
            // Only IPv6 carries the flow hash (in the flow label): IPv4 skips the hash.
            ipip6(ctx, ip, b, flow_hash(flow))
        }
    } else {
        dsr_l2(ctx, b)
    }
}

/// Destination MAC := backend, source MAC := the frame's old destination (our interface).
#[inline(always)]
fn rewrite_macs(eth: usize, b: &Backend) {
    // `Backend` is 4-byte aligned and `mac` sits at offset 16, so the MAC reads as one u32 and
    // one u16 (as `[u8; 6]` it would be six byte loads and six byte stores).
    const MAC_OFF: usize = core::mem::offset_of!(Backend, mac);
    const _: () = assert!(MAC_OFF.is_multiple_of(4) && core::mem::align_of::<Backend>() >= 4);
    unsafe {
        let mac = (b as *const Backend as *const u8).add(MAC_OFF);
        let dst_hi = core::ptr::read(mac as *const u32);
        let dst_lo = core::ptr::read(mac.add(4) as *const u16);
        let our_hi: u32 = load(eth);
        let our_lo: u16 = load(eth + 4);
        store(eth + 6, our_hi);
        store(eth + 10, our_lo);
        store(eth, dst_hi);
        store(eth + 4, dst_lo);
    }
}

#[inline(always)]
fn dsr_l2(ctx: &XdpContext, b: &Backend) -> Forwarded {
    let Some(eth) = check(ctx, 0, ETH_LEN) else {
        return Forwarded::Drop(Reason::DropInternal);
    };
    rewrite_macs(eth, b);
    Forwarded::Tx
}

/// The backend MTU when an encapsulated packet of `inner_len + overhead` bytes exceeds it.
#[inline(always)]
fn too_big(inner_len: usize, overhead: usize) -> Option<u32> {
    let mtu = SETTINGS.get(0)?.backend_mtu;
    (mtu != 0 && inner_len + overhead > mtu as usize).then_some(mtu)
}

/// Grows the head by `OVERHEAD` bytes and moves the `L2`-byte link header (and VLAN tag) to
/// the new front. Returns the address of the new start of the packet. Constant lengths keep
/// every access provable for the verifier.
#[inline(always)]
fn grow<const L2: usize, const OVERHEAD: usize>(ctx: &XdpContext) -> Option<usize> {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OVERHEAD as i32)) } != 0 {
        return None;
    }
    // The old link header now starts at OVERHEAD; it is at most 18 bytes, so the copy never
    // overlaps its destination.
    let start = check(ctx, 0, OVERHEAD + L2)?;
    unsafe {
        let a: u64 = load(start + OVERHEAD);
        let b: u32 = load(start + OVERHEAD + 8);
        let c: u16 = load(start + OVERHEAD + 12);
        store(start, a);
        store(start + 8, b);
        store(start + 12, c);
        if L2 > ETH_LEN {
            let tag: u32 = load(start + OVERHEAD + ETH_LEN);
            store(start + ETH_LEN, tag);
        }
    }
    Some(start)
}

#[inline(always)]
pub fn grow_head<const OVERHEAD: usize>(ctx: &XdpContext, l3_off: usize) -> Option<usize> {
    if l3_off > ETH_LEN {
        grow::<{ ETH_LEN + VLAN_LEN }, OVERHEAD>(ctx)
    } else {
        grow::<ETH_LEN, OVERHEAD>(ctx)
    }
}

/// Room for `OVERHEAD` bytes of outer headers in front of the IP packet, the frame addressed
/// to `b`: the outer headers' address and the inner packet's length. `Err` when the packet
/// would exceed the backend MTU (answered with ICMP) or a helper failed.
#[inline(always)]
pub fn make_room<const OVERHEAD: usize>(
    ctx: &XdpContext,
    ip: &Ip,
    b: &Backend,
) -> Result<(usize, usize), Forwarded> {
    let l3_off = ip.l3_off;
    let inner_len = packet_len(ctx) - l3_off;
    if let Some(mtu) = too_big(inner_len, OVERHEAD) {
        return Err(toobig::answer(ctx, ip, mtu));
    }
    let Some(start) = grow_head::<OVERHEAD>(ctx, l3_off) else {
        return Err(Forwarded::Drop(Reason::DropInternal));
    };
    let Some(outer) = check(ctx, l3_off, OVERHEAD) else {
        return Err(Forwarded::Drop(Reason::DropInternal));
    };
    rewrite_macs(start, b);
    Ok((outer, inner_len))
}

/// The inner IPv4 header's TOS (copied to the outer header) and the IPv4 outer source.
#[inline(always)]
pub fn tos_and_src4(ctx: &XdpContext, ip: &Ip) -> Option<(u8, u32)> {
    let inner = check(ctx, ip.l3_off, IPV4_LEN)?;
    let tos: u8 = unsafe { load(inner + 1) };
    Some((tos, SETTINGS.get(0)?.ipip_src_v4))
}

#[inline(always)]
fn ipip4(ctx: &XdpContext, ip: &Ip, b: &Backend) -> Forwarded {
    let Some((tos, src)) = tos_and_src4(ctx, ip) else {
        return Forwarded::Drop(Reason::DropInternal);
    };
    let (outer, inner_len) = match make_room::<IPV4_LEN>(ctx, ip, b) {
        Ok(r) => r,
        Err(f) => return f,
    };
    write_ipv4_header(
        outer,
        tos,
        inner_len + IPV4_LEN,
        IPPROTO_IPIP,
        src,
        b.addr[0],
    );
    Forwarded::Tx
}

/// Writes a 20-byte IPv4 header (no options, TTL 64, no fragmentation flags, its checksum)
/// at `at`, proven in bounds for 20 bytes. Addresses in network order.
#[inline(always)]
pub fn write_ipv4_header(at: usize, tos: u8, total_len: usize, proto: u8, src: u32, dst: u32) {
    let total = (total_len as u16).to_be();
    // The header as five 32-bit words as they sit in memory (little-endian host: the first
    // byte of a word is its low byte); the one's-complement sum does not care about order.
    let w0 = u32::from_ne_bytes([0x45, tos, total as u8, (total >> 8) as u8]);
    let w2 = u32::from_ne_bytes([64, proto, 0, 0]);
    let check = csum::ipv4_header_words(&[w0, 0, w2, src, dst]);
    unsafe {
        store(at, w0);
        store(at + 4, 0u32);
        store(at + 8, w2 | ((check as u32) << 16));
        store(at + 12, src);
        store(at + 16, dst);
    }
}

/// Writes a 40-byte IPv6 header (hop limit 64) at `at`, proven in bounds for 40 bytes.
/// `first` is the first word in network order (version, traffic class, flow label).
#[inline(always)]
pub fn write_ipv6_header(
    at: usize,
    first: u32,
    payload_len: usize,
    next: u8,
    src: [u32; 4],
    dst: [u32; 4],
) {
    unsafe {
        store(at, first);
        store(at + 4, (payload_len as u16).to_be());
        store(at + 6, next);
        store(at + 7, 64u8);
        store(at + 8, src);
        store(at + 24, dst);
    }
}

#[inline(always)]
fn ipip6(ctx: &XdpContext, ip: &Ip, b: &Backend, entropy: u32) -> Forwarded {
    let Some(src) = SETTINGS.get(0).map(|s| s.ipip_src_v6) else {
        return Forwarded::Drop(Reason::DropInternal);
    };
    let (outer, inner_len) = match make_room::<IPV6_LEN>(ctx, ip, b) {
        Ok(r) => r,
        Err(f) => return f,
    };
    // The flow label carries the flow hash so that ECMP and RSS on the way spread flows.
    write_ipv6_header(
        outer,
        flow_label(entropy),
        inner_len,
        IPPROTO_IPV6,
        src,
        b.addr,
    );
    Forwarded::Tx
}

/// First word of an outer IPv6 header (network order) whose flow label is `entropy`.
#[inline(always)]
pub fn flow_label(entropy: u32) -> u32 {
    (0x6000_0000u32 | (entropy & 0x000f_ffff)).to_be()
}

/// Counts a forwarding result and turns it into a verdict.
#[inline(always)]
pub fn action(f: Forwarded, ok: Reason) -> Verdict {
    match f {
        Forwarded::Tx => stats::tx(ok),
        Forwarded::Reply(r) => stats::tx(r),
        Forwarded::Drop(r) => stats::drop(r),
    }
}
