//! ICMP "fragmentation needed" (IPv4) / "packet too big" (IPv6) sent back to the client when
//! an `ipip` packet would not fit the backend path (`SETTINGS.backend_mtu`), as Katran's
//! `ICMP_TOOBIG_GENERATION` does. Dropping it silently would black-hole the flow: the
//! client's TCP would retransmit the same segment forever, because only an ICMP error makes
//! it lower its path MTU by the tunnel's overhead.
//!
//! The reply is built in place: the packet is cut to a fixed quote of its IP header and
//! first bytes, a new IP + ICMP header is put in front of the quote, the link header (with
//! its VLAN tag) moves to the new front and the MACs swap. Fixed lengths keep every bounds
//! check constant for the verifier and the checksums a single helper call each.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{AF_INET, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Reason};

use crate::{
    csum,
    forward::{Forwarded, grow_head, write_ipv4_header, write_ipv6_header},
    hdr::{
        ETH_LEN, ICMP_DEST_UNREACH, ICMP_LEN, ICMPV6_PKT_TOOBIG, IPV4_LEN, IPV6_LEN, check, load,
        packet_len, store, swap_macs,
    },
    parse::Ip,
};

/// Bytes of the offending IPv4 packet quoted: its header (options included) and at least
/// the 8 bytes RFC 792 asks for (ports and TCP sequence number), as Katran quotes.
const QUOTE4: usize = 84;
/// Bytes of the offending IPv6 packet quoted (header and 208 bytes), as Katran quotes.
const QUOTE6: usize = 248;
/// The smallest MTU an IPv6 link may have (RFC 8200): never announce less.
const IPV6_MIN_MTU: u32 = 1280;

const ICMP_FRAG_NEEDED: u8 = 4;
/// IPv4 "don't fragment" bit, in the flags/offset word's first byte.
const IP_DF: u8 = 0x40;
/// Precedence "internetwork control", which Linux gives its own ICMP errors.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// Answers a packet that is `overhead` bytes too large once encapsulated for a path of
/// `mtu` bytes. Only TCP and UDP are answered (never an ICMP error about an ICMP message),
/// and IPv4 only with DF set: a sender that allows fragmentation does not expect the error,
/// and an XDP program cannot fragment, so those are dropped and counted.
// Not inlined: a rare path, and `forward` is inlined at three call sites, which would carry
// three copies of both replies (a BPF-to-BPF call costs a few ns, only here).
#[inline(never)]
pub fn answer(ctx: &XdpContext, ip: &Ip, mtu: u32) -> Forwarded {
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Forwarded::Drop(Reason::DropTooBig);
    }
    if ip.family == AF_INET {
        let Some(hdr) = check(ctx, ip.l3_off, IPV4_LEN) else {
            return Forwarded::Drop(Reason::DropInternal);
        };
        let flags: u8 = unsafe { load(hdr + 6) };
        if flags & IP_DF == 0 {
            return Forwarded::Drop(Reason::DropTooBig);
        }
        reply4(ctx, ip, mtu.saturating_sub(IPV4_LEN as u32))
    } else {
        let announced = mtu.saturating_sub(IPV6_LEN as u32);
        reply6(
            ctx,
            ip,
            if announced < IPV6_MIN_MTU {
                IPV6_MIN_MTU
            } else {
                announced
            },
        )
    }
}

/// Cuts the packet to its link header plus `quote` bytes of L3. `None` when it is shorter
/// (only possible with an MTU below any real link's, which the config refuses).
#[inline(always)]
fn cut_to_quote(ctx: &XdpContext, l3_off: usize, quote: usize) -> Option<()> {
    let keep = l3_off + quote;
    let len = packet_len(ctx);
    if len < keep {
        return None;
    }
    if len > keep && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((len - keep) as i32)) } != 0 {
        return None;
    }
    Some(())
}

/// Turns the packet into `link header | NEW bytes to fill | QUOTE bytes of the packet`,
/// addressed back to its sender, and returns the address of the NEW bytes. A packet shorter
/// than the quote is `DropTooBig` (see [`cut_to_quote`]).
#[inline(always)]
fn make_room<const NEW: usize, const QUOTE: usize>(
    ctx: &XdpContext,
    l3_off: usize,
) -> Result<usize, Reason> {
    cut_to_quote(ctx, l3_off, QUOTE).ok_or(Reason::DropTooBig)?;
    grow_head::<NEW>(ctx, l3_off).ok_or(Reason::DropInternal)?;
    let eth = check(ctx, 0, ETH_LEN).ok_or(Reason::DropInternal)?;
    swap_macs(eth);
    check(ctx, l3_off, NEW + QUOTE).ok_or(Reason::DropInternal)
}

/// One's-complement sum of `LEN` bytes of packet at `addr` (a multiple of 4, at most 512),
/// started from `seed`; `None` if the helper refuses.
#[inline(always)]
fn sum_bytes<const LEN: usize>(addr: usize, seed: u32) -> Option<u32> {
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, addr as *mut u32, LEN as u32, seed) };
    if r < 0 { None } else { Some(r as u32) }
}

#[inline(always)]
fn reply4(ctx: &XdpContext, ip: &Ip, announced: u32) -> Forwarded {
    const NEW: usize = IPV4_LEN + ICMP_LEN;
    let hdr = match make_room::<NEW, QUOTE4>(ctx, ip.l3_off) {
        Ok(hdr) => hdr,
        Err(r) => return Forwarded::Drop(r),
    };
    let icmp = hdr + IPV4_LEN;
    // From the VIP back to the client.
    write_ipv4_header(
        hdr,
        TOS_INTERNETWORK_CONTROL,
        NEW + QUOTE4,
        IPPROTO_ICMP,
        ip.dst[0],
        ip.src[0],
    );
    let mtu = (announced as u16).to_be();
    unsafe {
        store(
            icmp,
            u16::from_ne_bytes([ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED]),
        );
        store(icmp + 2, 0u16);
        store(icmp + 4, 0u16);
        store(icmp + 6, mtu);
    }
    let Some(sum) = sum_bytes::<{ ICMP_LEN + QUOTE4 }>(icmp, 0) else {
        return Forwarded::Drop(Reason::DropInternal);
    };
    unsafe { store(icmp + 2, !csum::fold(sum)) };
    Forwarded::Reply(Reason::TxTooBig)
}

#[inline(always)]
fn reply6(ctx: &XdpContext, ip: &Ip, announced: u32) -> Forwarded {
    const NEW: usize = IPV6_LEN + ICMP_LEN;
    const PAYLOAD: usize = ICMP_LEN + QUOTE6;
    let hdr = match make_room::<NEW, QUOTE6>(ctx, ip.l3_off) {
        Ok(hdr) => hdr,
        Err(r) => return Forwarded::Drop(r),
    };
    let icmp = hdr + IPV6_LEN;
    // From the VIP back to the client.
    write_ipv6_header(
        hdr,
        0x6000_0000u32.to_be(),
        PAYLOAD,
        IPPROTO_ICMPV6,
        ip.dst,
        ip.src,
    );
    unsafe {
        store(icmp, u16::from_ne_bytes([ICMPV6_PKT_TOOBIG, 0]));
        store(icmp + 2, 0u16);
        store(icmp + 4, announced.to_be());
    }
    // The pseudo-header's addresses sit right before the ICMPv6 message, so one sum covers
    // both; its length and next-header words are added as the seed.
    // (Both are below 2^16 before the byte swap, so their swapped sum cannot overflow.)
    let seed = (PAYLOAD as u32).to_be() + (IPPROTO_ICMPV6 as u32).to_be();
    let Some(sum) = sum_bytes::<{ 32 + PAYLOAD }>(hdr + 8, seed) else {
        return Forwarded::Drop(Reason::DropInternal);
    };
    unsafe { store(icmp + 2, !csum::fold(sum)) };
    Forwarded::Reply(Reason::TxTooBig)
}
