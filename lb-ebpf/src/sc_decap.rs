//! Second chance, backend side (docs/dataplane.md, "Second chance"): `xdp_decap` hands over
//! UDP packets for one of its addresses. A GUE packet from the balancer carrying a previous
//! choice is delivered here when this host knows its flow (any socket but a listener: the
//! kernel's TCP state is the truth, as in GLB) or when it is a bare SYN; otherwise it goes on
//! to the previous backend with one hop less, and is dropped once no hop is left.

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_tuple, xdp_action},
    helpers::{bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};
use lb_common::{
    AF_INET, GUE_FLAG_PRIVATE, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, Reason,
    SECOND_CHANCE_PORT, SECOND_CHANCE_TYPE,
};

use crate::{
    forward::write_ipv4_header,
    hdr::{
        ETH_LEN, IPV4_LEN, IPV6_LEN, TCP_LEN, UDP_LEN, VLAN_LEN, check, load, store, strip_outer,
        swap_macs,
    },
    parse::{Ip, TCP_ACK, TCP_SYN},
    second_chance::{OVERHEAD4, OVERHEAD6},
    stats::{drop, pass},
};

/// `TCP_LISTEN` in `bpf_sock::state`: a listener only says the port is served, not that this
/// host holds the connection.
const TCP_LISTEN: u32 = 10;

/// The lookup key `bpf_skc_lookup_tcp` takes for IPv4 (the first 12 bytes of
/// `bpf_sock_tuple`), seen from this host: the client is the source.
#[repr(C)]
struct Tuple4 {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

#[repr(C)]
struct Tuple6 {
    saddr: [u32; 4],
    daddr: [u32; 4],
    sport: u16,
    dport: u16,
}

/// A UDP packet to one of the decap addresses.
#[inline(always)]
pub fn handle(ctx: &XdpContext, ip: &Ip) -> u32 {
    if ip.family == AF_INET {
        if ip.l4_off != ip.l3_off + IPV4_LEN {
            return xdp_action::XDP_PASS;
        }
        if ip.l3_off > ETH_LEN {
            v4::<{ ETH_LEN + VLAN_LEN }>(ctx)
        } else {
            v4::<ETH_LEN>(ctx)
        }
    } else {
        if ip.l4_off != ip.l3_off + IPV6_LEN {
            return xdp_action::XDP_PASS;
        }
        if ip.l3_off > ETH_LEN {
            v6::<{ ETH_LEN + VLAN_LEN }>(ctx)
        } else {
            v6::<ETH_LEN>(ctx)
        }
    }
}

/// The UDP + GUE + private header at `at` (proven in bounds): the hops left, if it is ours
/// and of the expected shape.
#[inline(always)]
fn gue(at: usize, hlen_words: u8, inner_proto: u8) -> Option<u8> {
    let dport: u16 = unsafe { load(at + 2) };
    let base: [u8; 4] = unsafe { load(at + UDP_LEN) };
    let private: [u8; 4] = unsafe { load(at + UDP_LEN + 4) };
    let flags = GUE_FLAG_PRIVATE.to_be_bytes();
    let ours = dport == SECOND_CHANCE_PORT.to_be()
        && base == [hlen_words, inner_proto, flags[0], flags[1]]
        && private[0] == SECOND_CHANCE_TYPE;
    ours.then_some(private[1])
}

/// Whether this host holds the connection: any socket but a listener (established, request
/// or time-wait sockets all belong here).
#[inline(always)]
fn known<T>(ctx: &XdpContext, tuple: &mut T) -> bool {
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut _,
            tuple as *mut T as *mut bpf_sock_tuple,
            core::mem::size_of::<T>() as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    let state = unsafe { (*sk).state };
    unsafe { bpf_sk_release(sk as *mut _) };
    state != TCP_LISTEN
}

#[inline(always)]
fn bare_syn(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

#[inline(always)]
fn v4<const L2: usize>(ctx: &XdpContext) -> u32 {
    const PRIV: usize = IPV4_LEN + UDP_LEN + 4;
    let Some(outer) = check(ctx, L2, OVERHEAD4 + IPV4_LEN) else {
        return xdp_action::XDP_PASS;
    };
    let Some(hops) = gue(outer + IPV4_LEN, 2, IPPROTO_IPIP) else {
        return xdp_action::XDP_PASS;
    };
    let inner = outer + OVERHEAD4;
    let (vihl, proto): (u8, u8) = unsafe { (load(inner), load(inner + 9)) };
    let ihl = (vihl & 0x0f) as usize * 4;
    if vihl >> 4 != 4 || ihl < IPV4_LEN || proto != IPPROTO_TCP {
        return drop(Reason::DropMalformed).action;
    }
    let Some(tcp) = check(ctx, L2 + OVERHEAD4 + ihl, TCP_LEN) else {
        return drop(Reason::DropMalformed).action;
    };
    let mut tuple = Tuple4 {
        saddr: unsafe { load(inner + 12) },
        daddr: unsafe { load(inner + 16) },
        sport: unsafe { load(tcp) },
        dport: unsafe { load(tcp + 2) },
    };
    let flags: u8 = unsafe { load(tcp + 13) };
    if bare_syn(flags) || known(ctx, &mut tuple) {
        if !strip_outer::<L2, OVERHEAD4>(ctx) {
            return drop(Reason::DropInternal).action;
        }
        return pass(Reason::PassSecondChance).action;
    }
    if hops == 0 {
        return drop(Reason::DropHopLimit).action;
    }
    // On to the previous backend, from this host's address: back through the neighbour that
    // delivered it (the router or balancer in front of the backends), which routes it.
    unsafe {
        let tos: u8 = load(outer + 1);
        let total = u16::from_be(load(outer + 2)) as usize;
        let here: u32 = load(outer + 16);
        let previous: u32 = load(outer + PRIV + 4);
        write_ipv4_header(outer, tos, total, IPPROTO_UDP, here, previous);
        store(outer + PRIV + 1, hops - 1);
    }
    redirect(ctx)
}

#[inline(always)]
fn v6<const L2: usize>(ctx: &XdpContext) -> u32 {
    const PRIV: usize = IPV6_LEN + UDP_LEN + 4;
    let Some(outer) = check(ctx, L2, OVERHEAD6 + IPV6_LEN + TCP_LEN) else {
        return xdp_action::XDP_PASS;
    };
    let Some(hops) = gue(outer + IPV6_LEN, 5, IPPROTO_IPV6) else {
        return xdp_action::XDP_PASS;
    };
    let inner = outer + OVERHEAD6;
    let (v, next): (u8, u8) = unsafe { (load(inner), load(inner + 6)) };
    // Only TCP right behind the inner header: the balancer sends nothing else this way.
    if v >> 4 != 6 || next != IPPROTO_TCP {
        return drop(Reason::DropMalformed).action;
    }
    let tcp = inner + IPV6_LEN;
    let mut tuple = Tuple6 {
        saddr: unsafe { load(inner + 8) },
        daddr: unsafe { load(inner + 24) },
        sport: unsafe { load(tcp) },
        dport: unsafe { load(tcp + 2) },
    };
    let flags: u8 = unsafe { load(tcp + 13) };
    if bare_syn(flags) || known(ctx, &mut tuple) {
        if !strip_outer::<L2, OVERHEAD6>(ctx) {
            return drop(Reason::DropInternal).action;
        }
        return pass(Reason::PassSecondChance).action;
    }
    if hops == 0 {
        return drop(Reason::DropHopLimit).action;
    }
    unsafe {
        let here: [u32; 4] = load(outer + 24);
        let previous: [u32; 4] = load(outer + PRIV + 4);
        store(outer + 7, 64u8);
        store(outer + 8, here);
        store(outer + 24, previous);
        store(outer + PRIV + 1, hops - 1);
    }
    redirect(ctx)
}

#[inline(always)]
fn redirect(ctx: &XdpContext) -> u32 {
    let Some(eth) = check(ctx, 0, ETH_LEN) else {
        return drop(Reason::DropInternal).action;
    };
    swap_macs(eth);
    crate::stats::reason(Reason::TxSecondChanceRedirect);
    xdp_action::XDP_TX
}
