//! The XDP programs of the load balancer.
//!
//! `xdp_balancer` is a short pipeline, in the spirit of Katran's balancer:
//! parse -> VIP lookup -> connection table / algorithm -> forward. Everything that is not for a
//! VIP leaves untouched with XDP_PASS (ARP, neighbour discovery, VRRP, local traffic). While a
//! capture runs, it hands packets to `xdp_balancer_captured`, the same pipeline recording what
//! it saw and did (`capture.rs`); `xdp_balancer_unhooked` is the pipeline without even the
//! capture flag, the benchmark's baseline for what the flag costs.
//! `xdp_decap` runs on backends and removes the IPIP / IP6IP6 header the balancer added.
//! `xdp_pass`, `xdp_floor` and `xdp_harness` serve veth peers, tests and benchmarks.
#![no_std]
#![no_main]
#![allow(internal_features)]
// Map helpers take a pointer to a key or value on the stack; passing `&key` says so (the
// by-value form clippy suggests compiles to the same code).
#![allow(clippy::needless_borrows_for_generic_args)]
#![feature(core_intrinsics)]

mod capture;
mod csum;
mod forward;
mod hdr;
mod icmp;
mod maps;
mod parse;
mod sc_decap;
mod second_chance;
mod select;
mod stats;
mod toobig;
mod vip;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_jiffies64, bpf_xdp_adjust_head, bpf_xdp_store_bytes},
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{
    AF_INET, AF_INET6, FlowKey, HARNESS_MAX_PACKET, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPIP,
    IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, MAX_IFACES, Reason, VipKey, capture::CAPTURE_NONE,
};

use crate::{
    hdr::{
        ETH_LEN, IPV4_LEN, IPV6_LEN, VLAN_LEN, check, load, packet_len, store, strip_outer,
        swap_macs,
    },
    maps::{DECAP_ADDRS, HARNESS_PACKET, HARNESS_PROGS, SETTINGS},
    parse::{Ip, L3, Shape},
};

use crate::stats::{Verdict, drop, pass};

/// A packet we cannot use: dropped when it is addressed to a VIP address (so a malformed
/// packet never reaches a backend or the balancer's own stack as VIP traffic), passed
/// otherwise (not ours to judge).
#[inline(always)]
fn unusable(ip: &Ip, vip_reason: Reason) -> Verdict {
    if vip::is_vip_address(ip) {
        drop(vip_reason)
    } else {
        pass(Reason::PassNotVip)
    }
}

/// Whether the frame is addressed to this interface (or to a group address). A unicast frame
/// for another MAC reached us only because a switch flooded it: forwarding it would duplicate
/// the packet the other balancer forwards.
#[inline(always)]
fn for_us(ctx: &XdpContext) -> bool {
    let Some(settings) = SETTINGS.get(0) else {
        return true;
    };
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(eth) = check(ctx, 0, ETH_LEN) else {
        return true;
    };
    let dst: [u8; 6] = unsafe { load(eth) };
    if dst[0] & 1 != 0 {
        return true;
    }
    for i in 0..MAX_IFACES {
        if let Some(iface) = settings.ifaces.get(i)
            && iface.ifindex != 0
            && iface.ifindex == ifindex
        {
            return iface.mac == dst;
        }
    }
    true
}

// `#[xdp]` wraps the body in an inner function; once the body grew past LLVM's inlining
// threshold it stayed a separate function, called on every packet (a BPF-to-BPF call: about
// 5 ns on non-VIP pass). `inline(always)` keeps it inside the program's entry.
#[xdp]
#[inline(always)]
pub fn xdp_balancer(ctx: XdpContext) -> u32 {
    // A running capture takes the packet to the same pipeline under the capture hook: one
    // global flag, read once; nothing else on the way when off.
    if capture::on() {
        capture::divert(&ctx);
    }
    balance(ctx).action
}

/// `xdp_balancer` while a capture runs (reached by a tail call, loaded only for captures):
/// keeps the packet as it arrived, then records the verdict.
#[xdp]
#[inline(always)]
pub fn xdp_balancer_captured(ctx: XdpContext) -> u32 {
    let raw = ctx.ctx;
    capture::begin(raw);
    let v = balance(ctx);
    capture::finish(raw, &v)
}

/// `xdp_balancer` without the capture flag (benchmarks: the flag's cost, in the same run).
#[xdp]
#[inline(always)]
pub fn xdp_balancer_unhooked(ctx: XdpContext) -> u32 {
    balance(ctx).action
}

#[inline(always)]
fn balance(ctx: XdpContext) -> Verdict {
    let ip = match parse::l3(&ctx) {
        L3::Ip(ip) => ip,
        L3::NotIp => return pass(Reason::PassNonIp),
        L3::Truncated => return pass(Reason::PassTruncated),
    };
    // Not a VIP address: passed untouched whatever follows the addresses (every later branch
    // would pass it too), so the common non-VIP case costs one array load.
    if !vip::maybe_vip_address(&ip.dst) {
        return pass(Reason::PassNotVip);
    }
    if !for_us(&ctx) {
        return pass(Reason::PassOtherHost);
    }
    // Malformed (IP length beyond the frame...), fragments (only the first carries ports, so
    // they cannot be hashed consistently) and IPv6 extension chains we do not forward: dropped
    // and counted when addressed to a VIP address (docs/dataplane.md).
    if let Some(reason) = ip.shape.refused() {
        return unusable(&ip, reason);
    }
    let is_icmp = (ip.family == AF_INET && ip.proto == IPPROTO_ICMP)
        || (ip.family == AF_INET6 && ip.proto == IPPROTO_ICMPV6);
    if is_icmp {
        return if vip::is_vip_address(&ip) {
            icmp::handle(&ctx, &ip)
        } else {
            pass(Reason::PassNotVip)
        };
    }
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return pass(Reason::PassNotVip);
    }
    let Some(ports) = parse::ports(&ctx, &ip) else {
        return unusable(&ip, Reason::DropMalformed);
    };
    let flow = FlowKey {
        src: ip.src,
        dst: ip.dst,
        sport: ports.sport,
        dport: ports.dport,
        proto: ip.proto,
        family: ip.family,
        _pad: [0; 2],
    };
    // Jiffies (tick resolution) are enough for idle expiry, and the verifier inlines the
    // helper into one load: a clock helper call cost ~15-20 ns per table hit.
    let now = unsafe { bpf_jiffies64() };
    // Established flows first: the connection table names the VIP, so the common case needs
    // no VIP hash lookup (only VIP traffic creates entries; the address filter already let
    // this packet in).
    if let Some(e) = select::established(&flow, ports.tcp_flags, now) {
        let bytes = packet_len(&ctx);
        let out = forward::to_backend(&ctx, &ip, e.mode, &e.choice.backend, &flow);
        // Only what reached the backend counts as its traffic (not a packet answered with
        // ICMP "too big", nor one dropped).
        if out.is_tx() {
            stats::forwarded(e.vip_id, e.choice.id, bytes, false);
        }
        return forward::action(out, Reason::TxForward).of(e.vip_id, e.choice.id);
    }
    let Some(meta) = vip::lookup(ip.family, ip.dst, ports.dport, ip.proto) else {
        return pass(Reason::PassNotVip);
    };
    if let Some(c) = second_chance::choices(&flow, &meta, ports.tcp_flags) {
        return second_chance::forward(&ctx, &ip, &flow, &meta, &c);
    }
    let Some(choice) = select::new_flow(&flow, &meta, ports.tcp_flags, now) else {
        return drop(Reason::DropNoBackend).of(meta.id, CAPTURE_NONE);
    };
    let bytes = packet_len(&ctx);
    let out = forward::to_backend(&ctx, &ip, meta.mode, &choice.backend, &flow);
    if out.is_tx() {
        stats::forwarded(meta.id, choice.id, bytes, choice.new_flow);
    }
    let reason = if choice.unpinned {
        Reason::TxForwardUnpinned
    } else {
        Reason::TxForward
    };
    forward::action(out, reason).of(meta.id, choice.id)
}

/// On a backend: strips the outer header of IPIP / IP6IP6 packets addressed to one of the
/// addresses in `DECAP_ADDRS`, then lets the kernel deliver the inner packet (the VIP is on
/// `lo`). GUE packets that carry a second choice go to `sc_decap`. Everything else passes
/// untouched.
#[xdp]
#[inline(always)]
pub fn xdp_decap(ctx: XdpContext) -> u32 {
    let ip = match parse::l3(&ctx) {
        L3::Ip(ip) if ip.shape == Shape::Whole => ip,
        _ => return xdp_action::XDP_PASS,
    };
    let (outer_len, inner_version) = match (ip.family, ip.proto) {
        (AF_INET, IPPROTO_IPIP) if ip.l4_off == ip.l3_off + IPV4_LEN => (IPV4_LEN, 4u8),
        (AF_INET6, IPPROTO_IPV6) if ip.l4_off == ip.l3_off + IPV6_LEN => (IPV6_LEN, 6u8),
        // Maybe GUE carrying a second choice (sc_decap.rs), once the address is known ours.
        (_, IPPROTO_UDP) => (0, 0),
        _ => return xdp_action::XDP_PASS,
    };
    let key = VipKey {
        // A volatile read: knowing an IPv4 address's three zero words, LLVM merged them with
        // the zero port and protocol into a 15-byte memset, a function call on BPF.
        addr: unsafe { core::ptr::read_volatile(&ip.dst) },
        port: 0,
        proto: 0,
        family: ip.family,
    };
    if unsafe { DECAP_ADDRS.get(&key) }.is_none() {
        return xdp_action::XDP_PASS;
    }
    if outer_len == 0 {
        return sc_decap::handle(&ctx, &ip);
    }
    // A whole inner header must be there (a one-byte check is also one the verifier cannot use).
    let inner_min = if inner_version == 4 {
        IPV4_LEN
    } else {
        IPV6_LEN
    };
    match parse::within(&ctx, &ip, ip.l4_off, inner_min) {
        Some(inner) if unsafe { load::<u8>(inner) } >> 4 == inner_version => {}
        _ => return xdp_action::XDP_PASS,
    }
    const TAGGED: usize = ETH_LEN + VLAN_LEN;
    let stripped = match (outer_len == IPV4_LEN, ip.l3_off > ETH_LEN) {
        (true, false) => strip_outer::<ETH_LEN, IPV4_LEN>(&ctx),
        (true, true) => strip_outer::<TAGGED, IPV4_LEN>(&ctx),
        (false, false) => strip_outer::<ETH_LEN, IPV6_LEN>(&ctx),
        (false, true) => strip_outer::<TAGGED, IPV6_LEN>(&ctx),
    };
    if !stripped {
        return drop(Reason::DropInternal).action;
    }
    pass(Reason::PassDecap).action
}

/// Attached to the far end of veth pairs: XDP_TX on a veth needs a program on its peer.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The floor for benchmarks: the least an XDP_TX forwarder can do (swap MACs, transmit).
#[xdp]
pub fn xdp_floor(ctx: XdpContext) -> u32 {
    let Some(eth) = check(&ctx, 0, ETH_LEN) else {
        return xdp_action::XDP_PASS;
    };
    swap_macs(eth);
    xdp_action::XDP_TX
}

/// Benchmark harness: BPF_PROG_TEST_RUN with `repeat` does not restore the packet between
/// runs, so a rewriting program would be measured on its own output. This program restores
/// the original length and bytes, then tail-calls the program under test (slot 0).
#[xdp]
pub fn xdp_harness(ctx: XdpContext) -> u32 {
    let Some(orig) = HARNESS_PACKET.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let orig = unsafe { &mut *orig };
    let want = orig.len as usize;
    if want > HARNESS_MAX_PACKET {
        return xdp_action::XDP_ABORTED;
    }
    let have = packet_len(&ctx);
    if have != want {
        let delta = have as i32 - want as i32;
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
            return xdp_action::XDP_ABORTED;
        }
    }
    // One helper call copies the original bytes back; the kernel checks the bounds.
    let len = (want as u32) & (HARNESS_MAX_PACKET as u32 * 2 - 1);
    if len == 0 || len as usize > HARNESS_MAX_PACKET {
        return xdp_action::XDP_ABORTED;
    }
    let src = orig.bytes.as_mut_ptr() as *mut core::ffi::c_void;
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, src, len) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    // A new source address per run: IPv4 (offset 26) or the last word of IPv6 (offset 34).
    // Constant offsets keep the store provable for the verifier.
    if orig.vary_offset != 0 {
        orig.counter = orig.counter.wrapping_add(1);
        let at = match orig.vary_offset {
            26 => check(&ctx, 26, 4),
            34 => check(&ctx, 34, 4),
            _ => return xdp_action::XDP_ABORTED,
        };
        let Some(at) = at else {
            return xdp_action::XDP_ABORTED;
        };
        unsafe { store(at, orig.counter) };
    }
    unsafe { HARNESS_PROGS.tail_call(&ctx, 0) };
    xdp_action::XDP_ABORTED
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
