//! Second chance, balancer side (docs/dataplane.md, "Second chance"): a TCP packet that
//! misses the connection table shortly after its VIP's table flipped may belong to a
//! connection that the previous table sent elsewhere (a restarted balancer, or another one
//! ECMP moved the flow to). It goes to the current choice in a GUE packet that names the
//! previous choice too; the current backend's `xdp_decap` delivers it if it knows the flow
//! and sends it on to the previous backend otherwise.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use lb_common::{
    AF_INET, Algorithm, BACKEND_F_ACTIVE, Backend, FlowKey, ForwardMode, GUE_FLAG_PRIVATE,
    IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, Reason, SECOND_CHANCE_HOPS,
    SECOND_CHANCE_PORT, SECOND_CHANCE_TYPE, VIP_F_SECOND_CHANCE, VipMeta, hash::flow_hash,
};

use crate::{
    forward::{self, Forwarded, make_room, write_ipv4_header},
    hdr::{IPV4_LEN, IPV6_LEN, UDP_LEN, packet_len, store},
    maps::{BACKENDS, SETTINGS},
    parse::{Ip, TCP_ACK, TCP_SYN},
    select,
    stats::{self, Verdict},
};

/// GUE base header: version 0, C 0, header length, inner protocol, flags.
const GUE_LEN: usize = 4;
/// Private data: type, hops left, two reserved bytes, then the previous backend's address.
const PRIV_HEAD: usize = 4;
/// Bytes a second-chance packet adds in front of the inner IP packet.
pub const OVERHEAD4: usize = IPV4_LEN + UDP_LEN + GUE_LEN + PRIV_HEAD + 4;
pub const OVERHEAD6: usize = IPV6_LEN + UDP_LEN + GUE_LEN + PRIV_HEAD + 16;

/// The two choices of a flow whose table flipped under it.
pub struct Choices {
    pub current_id: u32,
    pub current: Backend,
    pub previous: Backend,
}

/// Both choices, when the packet qualifies: a second-chance VIP of a stateless algorithm in
/// `ipip` mode, TCP but no bare SYN (a SYN opens a new connection, which the current choice
/// owns), within the window after the flip, and the two tables disagree for this flow.
/// The clock is read only here, on misses of such VIPs.
#[inline(always)]
pub fn choices(flow: &FlowKey, meta: &VipMeta, tcp_flags: u8) -> Option<Choices> {
    if meta.flags & VIP_F_SECOND_CHANCE == 0
        || meta.mode != ForwardMode::Ipip as u8
        || meta.algo > Algorithm::IpHash as u8
        || flow.proto != IPPROTO_TCP
        || tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    {
        return None;
    }
    if unsafe { bpf_ktime_get_coarse_ns() } >= meta.second_chance_until {
        return None;
    }
    let current_id = select::pick(flow, meta)?;
    let before = VipMeta {
        slot: meta.slot ^ 1,
        table_len: meta.prev_len,
        ..*meta
    };
    let previous_id = select::pick(flow, &before)?;
    if previous_id == current_id {
        return None;
    }
    let current = *BACKENDS.get(current_id)?;
    // A previous backend that was removed may still hold the flow (draining): it is named
    // whatever its flags; its address is all the packet needs.
    let previous = *BACKENDS.get(previous_id)?;
    if current.flags & BACKEND_F_ACTIVE == 0 || previous.family != current.family {
        return None;
    }
    Some(Choices {
        current_id,
        current,
        previous,
    })
}

/// Forwards to the current choice carrying the previous one, unpinned: the next packet of
/// the flow misses the table again and carries both choices again, until the window ends.
#[inline(always)]
pub fn forward(ctx: &XdpContext, ip: &Ip, flow: &FlowKey, meta: &VipMeta, c: &Choices) -> Verdict {
    let bytes = packet_len(ctx);
    // The UDP source port carries the flow hash, for ECMP and RSS on the way to the backend.
    let entropy = flow_hash(flow);
    let out = if ip.family == AF_INET {
        gue4(ctx, ip, c, entropy)
    } else {
        gue6(ctx, ip, c, entropy)
    };
    if out.is_tx() {
        stats::forwarded(meta.id, c.current_id, bytes, false);
    }
    forward::action(out, Reason::TxSecondChance).of(meta.id, c.current_id)
}

/// UDP header (checksum 0: RFC 6935/6936 allow it for tunnels; the receiver is our decap
/// program), GUE base header and the private data's first word, at `at` (proven in bounds).
#[inline(always)]
fn write_udp_gue(at: usize, entropy: u32, udp_len: usize, hlen_words: u8, inner_proto: u8) {
    let sport = (0xc000u16 | (entropy as u16 & 0x3fff)).to_be();
    let flags = GUE_FLAG_PRIVATE.to_be_bytes();
    unsafe {
        store(at, sport);
        store(at + 2, SECOND_CHANCE_PORT.to_be());
        store(at + 4, (udp_len as u16).to_be());
        store(at + 6, 0u16);
        store(
            at + UDP_LEN,
            u32::from_ne_bytes([hlen_words, inner_proto, flags[0], flags[1]]),
        );
        store(
            at + UDP_LEN + GUE_LEN,
            u32::from_ne_bytes([SECOND_CHANCE_TYPE, SECOND_CHANCE_HOPS, 0, 0]),
        );
    }
}

#[inline(always)]
fn gue4(ctx: &XdpContext, ip: &Ip, c: &Choices, entropy: u32) -> Forwarded {
    let Some((tos, src)) = forward::tos_and_src4(ctx, ip) else {
        return Forwarded::Drop(Reason::DropInternal);
    };
    let (outer, inner_len) = match make_room::<OVERHEAD4>(ctx, ip, &c.current) {
        Ok(r) => r,
        Err(f) => return f,
    };
    let total = inner_len + OVERHEAD4;
    write_ipv4_header(outer, tos, total, IPPROTO_UDP, src, c.current.addr[0]);
    let hlen = ((PRIV_HEAD + 4) / 4) as u8;
    write_udp_gue(
        outer + IPV4_LEN,
        entropy,
        total - IPV4_LEN,
        hlen,
        IPPROTO_IPIP,
    );
    unsafe { store(outer + OVERHEAD4 - 4, c.previous.addr[0]) };
    Forwarded::Tx
}

#[inline(always)]
fn gue6(ctx: &XdpContext, ip: &Ip, c: &Choices, entropy: u32) -> Forwarded {
    let Some(src) = SETTINGS.get(0).map(|s| s.ipip_src_v6) else {
        return Forwarded::Drop(Reason::DropInternal);
    };
    let (outer, inner_len) = match make_room::<OVERHEAD6>(ctx, ip, &c.current) {
        Ok(r) => r,
        Err(f) => return f,
    };
    let payload = inner_len + OVERHEAD6 - IPV6_LEN;
    let first = forward::flow_label(entropy);
    forward::write_ipv6_header(outer, first, payload, IPPROTO_UDP, src, c.current.addr);
    let hlen = ((PRIV_HEAD + 16) / 4) as u8;
    write_udp_gue(outer + IPV6_LEN, entropy, payload, hlen, IPPROTO_IPV6);
    unsafe { store(outer + OVERHEAD6 - 16, c.previous.addr) };
    Forwarded::Tx
}
