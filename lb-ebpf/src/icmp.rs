//! ICMP for VIP addresses: echo requests are answered here; "destination unreachable" and
//! "fragmentation needed" / "packet too big" about a VIP flow go to the backend that owns the
//! flow (found from the embedded header), so path-MTU discovery works through the balancer.

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET, Algorithm, FlowKey, IPPROTO_TCP, IPPROTO_UDP, Reason};

use crate::{
    csum, forward,
    hdr::{
        ETH_LEN, ICMP_DEST_UNREACH, ICMP_LEN, ICMPV6_PKT_TOOBIG, IPV4_LEN, IPV6_LEN, VLAN_LEN,
        check, load, packet_len, store, swap_macs,
    },
    maps::{BACKENDS, CONNS},
    parse::{self, Ip},
    select, stats, vip,
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO: u8 = 8;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

use crate::stats::{Verdict, drop, pass, tx};

/// ICMP/ICMPv6 addressed to `ip.dst`, which is known to be a VIP address.
#[inline(always)]
pub fn handle(ctx: &XdpContext, ip: &Ip) -> Verdict {
    let Some(icmp) = parse::within(ctx, ip, ip.l4_off, ICMP_LEN) else {
        return drop(Reason::DropMalformed);
    };
    let kind: u8 = unsafe { load(icmp) };
    if ip.family == AF_INET {
        match kind {
            ICMP_ECHO => echo_reply(ctx, ip, icmp, ICMP_ECHO_REPLY),
            ICMP_DEST_UNREACH => error4(ctx, ip),
            _ => pass(Reason::PassIcmp),
        }
    } else {
        match kind {
            ICMPV6_ECHO_REQUEST => echo_reply(ctx, ip, icmp, ICMPV6_ECHO_REPLY),
            ICMPV6_DEST_UNREACH | ICMPV6_PKT_TOOBIG => error6(ctx, ip),
            _ => pass(Reason::PassIcmp),
        }
    }
}

/// Turns the request into its reply in place: swap MACs and addresses, change the type and
/// patch the checksum. Swapping addresses leaves both the IPv4 header checksum and the IPv6
/// pseudo-header sum unchanged.
#[inline(always)]
fn echo_reply(ctx: &XdpContext, ip: &Ip, icmp: usize, reply_type: u8) -> Verdict {
    if !echo_request_whole(ctx, ip) {
        return drop(Reason::DropMalformed);
    }
    let Some(eth) = check(ctx, 0, ETH_LEN) else {
        return drop(Reason::DropInternal);
    };
    swap_macs(eth);
    if ip.family == AF_INET {
        let Some(hdr) = check(ctx, ip.l3_off, IPV4_LEN) else {
            return drop(Reason::DropInternal);
        };
        unsafe {
            store(hdr + 12, ip.dst[0]);
            store(hdr + 16, ip.src[0]);
        }
    } else {
        let Some(hdr) = check(ctx, ip.l3_off, IPV6_LEN) else {
            return drop(Reason::DropInternal);
        };
        unsafe {
            store(hdr + 8, ip.dst);
            store(hdr + 24, ip.src);
        }
    }
    // `icmp` was checked before any write; re-derive it for the verifier after the stores.
    let Some(icmp2) = check(ctx, ip.l4_off, ICMP_LEN) else {
        return drop(Reason::DropInternal);
    };
    let _ = icmp;
    unsafe {
        let old: u16 = load(icmp2);
        store(icmp2, reply_type);
        let new: u16 = load(icmp2);
        let sum: u16 = load(icmp2 + 2);
        store(icmp2 + 2, csum::replace16(sum, old, new));
    }
    tx(Reason::TxEchoReply)
}

/// Whether an echo request is one the kernel would answer: its IP length inside the frame
/// and its ICMP header inside the IP length (both checked by the parser and [`handle`]) and,
/// for IPv4, a header checksum that verifies. The reply is the request edited in place, so a
/// request that fails here would be answered with a reply that fails its own checksum.
#[inline(always)]
fn echo_request_whole(ctx: &XdpContext, ip: &Ip) -> bool {
    ip.family != AF_INET || ipv4_header_valid(ctx, ip)
}

/// Whether the IPv4 header, options included, sums to all ones (RFC 1071).
#[inline(always)]
fn ipv4_header_valid(ctx: &XdpContext, ip: &Ip) -> bool {
    let words = (ip.l4_off - ip.l3_off) / 4;
    // A constant header offset per case keeps every word's bounds check constant for the
    // verifier (a variable base plus a loop index loses the proven range).
    if ip.l3_off == ETH_LEN {
        header_sums_to_ones::<ETH_LEN>(ctx, words)
    } else {
        header_sums_to_ones::<{ ETH_LEN + VLAN_LEN }>(ctx, words)
    }
}

#[inline(always)]
fn header_sums_to_ones<const L3: usize>(ctx: &XdpContext, words: usize) -> bool {
    let mut sum: u64 = 0;
    let mut i = 0;
    // At most 15 words (IHL is 4 bits).
    while i < 15 {
        if i >= words {
            break;
        }
        let Some(at) = check(ctx, L3 + i * 4, 4) else {
            return false;
        };
        sum += unsafe { load::<u32>(at) } as u64;
        i += 1;
    }
    csum::fold64(sum) == 0xffff
}

/// The flow an ICMP error is about: the embedded packet is the backend's reply
/// (VIP -> client), so the flow is that tuple reversed.
#[inline(always)]
fn forward_error(
    ctx: &XdpContext,
    ip: &Ip,
    family: u8,
    proto: u8,
    inner_src: [u32; 4],
    inner_dst: [u32; 4],
    ports: usize,
) -> Verdict {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return pass(Reason::PassIcmp);
    }
    let (vip_port, client_port): (u16, u16) = unsafe { (load(ports), load(ports + 2)) };
    let Some(meta) = vip::lookup(family, inner_src, vip_port, proto) else {
        return pass(Reason::PassIcmp);
    };
    let flow = FlowKey {
        src: inner_dst,
        dst: inner_src,
        sport: client_port,
        dport: vip_port,
        proto,
        family,
        _pad: [0; 2],
    };
    let from_table = match unsafe { CONNS.get(&flow) } {
        Some(e) => Some(e.backend as u32),
        // Without an entry only the hashing algorithms can say which backend owns the flow.
        None if meta.algo == Algorithm::Maglev as u8 || meta.algo == Algorithm::IpHash as u8 => {
            select::pick(&flow, &meta)
        }
        None => None,
    };
    let Some(id) = from_table else {
        return pass(Reason::PassIcmp);
    };
    let Some(backend) = BACKENDS.get(id).copied() else {
        return pass(Reason::PassIcmp);
    };
    if backend.flags & lb_common::BACKEND_F_ACTIVE == 0 {
        return drop(Reason::DropNoBackend).of(meta.id, id);
    }
    let bytes = packet_len(ctx);
    let out = forward::to_backend(ctx, ip, meta.mode, &backend, &flow);
    if out.is_tx() {
        stats::forwarded(meta.id, id, bytes, false);
    }
    forward::action(out, Reason::TxIcmpError).of(meta.id, id)
}

#[inline(always)]
fn error4(ctx: &XdpContext, ip: &Ip) -> Verdict {
    let off = ip.l4_off + ICMP_LEN;
    let Some(inner) = parse::within(ctx, ip, off, IPV4_LEN) else {
        return drop(Reason::DropMalformed);
    };
    let vihl: u8 = unsafe { load(inner) };
    let ihl = (vihl & 0x0f) as usize;
    if vihl >> 4 != 4 || ihl < 5 {
        return drop(Reason::DropMalformed);
    }
    let Some(ports) = parse::within(ctx, ip, off + ihl * 4, 4) else {
        return drop(Reason::DropMalformed);
    };
    let (proto, src, dst): (u8, u32, u32) =
        unsafe { (load(inner + 9), load(inner + 12), load(inner + 16)) };
    forward_error(
        ctx,
        ip,
        AF_INET,
        proto,
        [src, 0, 0, 0],
        [dst, 0, 0, 0],
        ports,
    )
}

#[inline(always)]
fn error6(ctx: &XdpContext, ip: &Ip) -> Verdict {
    let off = ip.l4_off + ICMP_LEN;
    let Some(inner) = parse::within(ctx, ip, off, IPV6_LEN + 4) else {
        return drop(Reason::DropMalformed);
    };
    let (proto, src, dst): (u8, [u32; 4], [u32; 4]) =
        unsafe { (load(inner + 6), load(inner + 8), load(inner + 24)) };
    forward_error(ctx, ip, ip.family, proto, src, dst, inner + IPV6_LEN)
}
