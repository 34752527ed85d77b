//! Second chance on the balancer: a TCP packet that misses the connection table within the
//! window after a table flip goes (GUE) to the current choice and names the previous one.

use std::{net::IpAddr, time::Duration};

use lb_common::{Algorithm, FlowKey, ForwardMode, IPPROTO_TCP, Reason, hash::flow_hash};
use lb_dataplane::packet::{Frame, TCP_ACK, TCP_SYN, checksum, ipv4_header_ok};
use lb_dataplane::{SecondChance, VipSpec, XdpAction};

use crate::fixture::*;

const V4: (&str, &str, [&str; 4]) = (
    "10.77.0.10",
    "10.77.0.100",
    ["10.77.0.11", "10.77.0.12", "10.77.0.13", "10.77.0.14"],
);
const V6: (&str, &str, [&str; 4]) = (
    "fd77::10",
    "fd77::100",
    ["fd77::11", "fd77::12", "fd77::13", "fd77::14"],
);

fn spec(vipa: &str, bes: &[&str], sc: SecondChance) -> VipSpec {
    let mut v = vip(
        "web",
        vipa,
        80,
        Algorithm::Maglev,
        ForwardMode::Ipip,
        bes.iter().map(|b| backend(b, 1)).collect(),
    );
    v.second_chance = sc;
    v
}

const ON: SecondChance = SecondChance::On {
    window: Duration::from_secs(600),
};

/// A fixture whose VIP had three backends and now has four: the table flipped.
fn flipped(addrs: (&str, &str, [&str; 4]), sc: SecondChance) -> Fixture {
    let mut fx = Fixture::new(&[spec(addrs.1, &addrs.2[..3], sc)]);
    fx.prog
        .apply(&[spec(addrs.1, &addrs.2, sc)])
        .expect("add a backend");
    fx
}

/// The previous and the current table's backend for `flow`.
fn choices(fx: &Fixture, flow: &FlowKey) -> (IpAddr, IpAddr) {
    let meta = fx.prog.vip_meta("web").expect("vip");
    let h = flow_hash(flow);
    let prev_id = fx
        .prog
        .maps()
        .table_entry(meta.id, meta.slot ^ 1, h % meta.prev_len.max(1))
        .expect("previous table");
    let prev = fx
        .prog
        .backend_ids()
        .find(|(_, _, id)| *id == prev_id)
        .map(|(_, a, _)| a)
        .expect("previous backend");
    (prev, fx.table_choice("web", h))
}

/// The first source port whose flow the two tables send to different backends (`moved`) or
/// to the same one.
fn flow_port(fx: &Fixture, client: &str, vipa: &str, moved: bool) -> (u16, FlowKey) {
    (1000..4000)
        .map(|p| (p, FlowKey::new(ip(client), p, ip(vipa), 80, IPPROTO_TCP)))
        .find(|(_, f)| {
            let (a, b) = choices(fx, f);
            (a != b) == moved
        })
        .expect("a flow of that kind among 3,000 ports")
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The exact frame the balancer must send: GUE to `current`, naming `previous`.
fn expected(input: &[u8], flow: &FlowKey, current: IpAddr, previous: IpAddr) -> Vec<u8> {
    let inner = &input[14..];
    let h = flow_hash(flow);
    let v4 = current.is_ipv4();
    let priv_len = if v4 { 8 } else { 20 };
    let udp_len = 8 + 4 + priv_len + inner.len();
    let mut want = mac_of(current).to_vec();
    want.extend_from_slice(&input[0..6]);
    if v4 {
        want.extend_from_slice(&[0x08, 0x00]);
        let mut outer = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        outer[2..4].copy_from_slice(&((udp_len + 20) as u16).to_be_bytes());
        outer.extend_from_slice(&addr_bytes(ip(IPIP_SRC_V4)));
        outer.extend_from_slice(&addr_bytes(current));
        let c = checksum(&outer, 0);
        outer[10..12].copy_from_slice(&c.to_be_bytes());
        want.extend_from_slice(&outer);
    } else {
        want.extend_from_slice(&[0x86, 0xdd]);
        want.extend_from_slice(&(0x6000_0000u32 | (h & 0x000f_ffff)).to_be_bytes());
        want.extend_from_slice(&(udp_len as u16).to_be_bytes());
        want.extend_from_slice(&[17, 64]);
        want.extend_from_slice(&addr_bytes(ip(IPIP_SRC_V6)));
        want.extend_from_slice(&addr_bytes(current));
    }
    want.extend_from_slice(&(0xc000u16 | (h as u16 & 0x3fff)).to_be_bytes());
    want.extend_from_slice(&6080u16.to_be_bytes());
    want.extend_from_slice(&(udp_len as u16).to_be_bytes());
    want.extend_from_slice(&[0, 0]);
    let hlen = (priv_len / 4) as u8;
    want.extend_from_slice(&[hlen, if v4 { 4 } else { 41 }, 0x00, 0x01]);
    want.extend_from_slice(&[0x53, 1, 0, 0]);
    want.extend_from_slice(&addr_bytes(previous));
    want.extend_from_slice(inner);
    want
}

#[test]
fn a_non_syn_miss_after_a_flip_carries_both_choices() {
    for addrs in [V4, V6] {
        let fx = flipped(addrs, ON);
        let (port, flow) = flow_port(&fx, addrs.0, addrs.1, true);
        let (prev, cur) = choices(&fx, &flow);
        let input = Frame::tcp(ip(addrs.0), port, ip(addrs.1), 80, TCP_ACK)
            .with_payload(b"GET / HTTP/1.1\r\n\r\n")
            .build();
        // Twice: the flow gets no entry, so its next packet carries both choices again.
        for n in 1..=2 {
            let out = fx.run(&input);
            assert_eq!(out.action, XdpAction::Tx, "{}", addrs.1);
            assert_eq!(
                out.packet,
                expected(&input, &flow, cur, prev),
                "GUE to {cur} naming {prev}"
            );
            if cur.is_ipv4() {
                assert!(ipv4_header_ok(&out.packet, 14));
            }
            assert_eq!(fx.reason(Reason::TxSecondChance), n);
            assert_eq!(fx.reason(Reason::TxForward), 0);
        }
    }
}

#[test]
fn syns_unmoved_flows_and_other_vips_go_plain() {
    for addrs in [V4, V6] {
        let fx = flipped(addrs, ON);
        // A bare SYN opens a new connection: the current choice owns it.
        let (port, _) = flow_port(&fx, addrs.0, addrs.1, true);
        let syn = fx.run_frame(&Frame::tcp(ip(addrs.0), port, ip(addrs.1), 80, TCP_SYN));
        assert_eq!(syn.action, XdpAction::Tx);
        // Both tables agree: nothing to carry.
        let (port, _) = flow_port(&fx, addrs.0, addrs.1, false);
        let same = fx.run_frame(&Frame::tcp(ip(addrs.0), port, ip(addrs.1), 80, TCP_ACK));
        assert_eq!(same.action, XdpAction::Tx);
        for out in [&syn, &same] {
            let next = if addrs.1.contains(':') { 41 } else { 4 };
            let proto_at = if next == 4 { 14 + 9 } else { 14 + 6 };
            assert_eq!(out.packet[proto_at], next, "plain IPIP");
        }
        assert_eq!(fx.reason(Reason::TxSecondChance), 0);
        assert_eq!(fx.reason(Reason::TxForward), 2);
    }
}

#[test]
fn off_or_past_the_window_the_flow_is_simply_rehashed() {
    let expired = SecondChance::On {
        window: Duration::ZERO,
    };
    for sc in [SecondChance::Off, expired] {
        let fx = flipped(V4, sc);
        let (port, flow) = flow_port(&fx, V4.0, V4.1, true);
        let (_, cur) = choices(&fx, &flow);
        let out = fx.run_frame(&Frame::tcp(ip(V4.0), port, ip(V4.1), 80, TCP_ACK));
        assert_eq!(fx.backend_of(&out, &V4.2.map(ip)), cur, "{sc:?}");
        assert_eq!(out.packet[14 + 9], 4, "plain IPIP ({sc:?})");
        assert_eq!(fx.reason(Reason::TxSecondChance), 0, "{sc:?}");
    }
}

/// A GUE frame as the balancer sends it, for a flow from `client:sport` to `vipa:dport`.
fn gue_frame(
    client: &str,
    sport: u16,
    vipa: &str,
    dport: u16,
    flags: u8,
    current: IpAddr,
    previous: IpAddr,
) -> (Vec<u8>, Vec<u8>) {
    let input = Frame::tcp(ip(client), sport, ip(vipa), dport, flags)
        .with_payload(b"ping")
        .build();
    let flow = FlowKey::new(ip(client), sport, ip(vipa), dport, IPPROTO_TCP);
    let gue = expected(&input, &flow, current, previous);
    (input, gue)
}

/// A decap fixture: this host is `here`, `previous` is the other backend's address.
fn backend_host(here: IpAddr, previous: IpAddr) -> Fixture {
    let mut fx = Fixture::new(&[]);
    for a in [here, previous] {
        fx.prog
            .maps_mut()
            .add_decap_address(a)
            .expect("decap address");
    }
    fx
}

/// The inner frame as `xdp_decap` passes it up: the GUE frame's link header, the client's
/// IP packet byte for byte.
fn delivered(gue: &[u8], input: &[u8]) -> Vec<u8> {
    let mut want = gue[0..14].to_vec();
    want.extend_from_slice(&input[14..]);
    want
}

#[test]
fn decap_delivers_a_flow_with_a_local_socket() {
    // A real connection on loopback in the test's network namespace: the kernel's TCP state
    // is what the decap program asks.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (_server, _) = listener.accept().expect("accept");
    let cport = client.local_addr().expect("client addr").port();
    let (here, prev) = (ip("10.77.0.11"), ip("10.77.0.12"));
    let fx = backend_host(here, prev);
    let (input, gue) = gue_frame("127.0.0.1", cport, "127.0.0.1", port, TCP_ACK, here, prev);
    let out = fx.decap(&gue);
    assert_eq!(out.action, XdpAction::Pass, "a known flow is delivered");
    assert_eq!(out.packet, delivered(&gue, &input));
    assert_eq!(fx.reason(Reason::PassSecondChance), 1);
    // A bare SYN needs no socket: a new connection belongs to the current choice.
    let (input, gue) = gue_frame("10.77.0.10", 1234, "10.77.0.100", 80, TCP_SYN, here, prev);
    let out = fx.decap(&gue);
    assert_eq!(
        (out.action, out.packet),
        (XdpAction::Pass, delivered(&gue, &input))
    );
    assert_eq!(fx.reason(Reason::PassSecondChance), 2);
    assert_eq!(fx.reason(Reason::TxSecondChanceRedirect), 0);
}

/// The frame the decap program must send on to `previous`: MACs swapped (back to the
/// neighbour that delivered it), outer source := this host, destination := previous, no hop
/// left.
fn redirected(gue: &[u8], here: IpAddr, previous: IpAddr) -> Vec<u8> {
    let mut want = gue.to_vec();
    want[0..6].copy_from_slice(&gue[6..12]);
    want[6..12].copy_from_slice(&gue[0..6]);
    if here.is_ipv4() {
        let mut outer = vec![0x45, 0, gue[16], gue[17], 0, 0, 0, 0, 64, 17, 0, 0];
        outer.extend_from_slice(&addr_bytes(here));
        outer.extend_from_slice(&addr_bytes(previous));
        let c = checksum(&outer, 0);
        outer[10..12].copy_from_slice(&c.to_be_bytes());
        want[14..34].copy_from_slice(&outer);
        want[14 + 20 + 8 + 4 + 1] = 0;
    } else {
        want[14 + 8..14 + 24].copy_from_slice(&addr_bytes(here));
        want[14 + 24..14 + 40].copy_from_slice(&addr_bytes(previous));
        want[14 + 40 + 8 + 4 + 1] = 0;
    }
    want
}

#[test]
fn decap_redirects_an_unknown_flow_and_drops_at_the_hop_limit() {
    // A listener alone does not make a flow known: an ACK for a port that is only listened
    // on belongs to a connection elsewhere.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let lport = listener.local_addr().expect("addr").port();
    for (client, vipa, dport, here, prev) in [
        ("10.77.0.10", "10.77.0.100", 80, "10.77.0.11", "10.77.0.12"),
        ("127.0.0.1", "127.0.0.1", lport, "10.77.0.11", "10.77.0.12"),
        ("fd77::10", "fd77::100", 80, "fd77::11", "fd77::12"),
    ] {
        let (here, prev) = (ip(here), ip(prev));
        let fx = backend_host(here, prev);
        let (_, gue) = gue_frame(client, 4321, vipa, dport, TCP_ACK, here, prev);
        let out = fx.decap(&gue);
        assert_eq!(out.action, XdpAction::Tx, "{client} -> {vipa}:{dport}");
        assert_eq!(out.packet, redirected(&gue, here, prev));
        if here.is_ipv4() {
            assert!(ipv4_header_ok(&out.packet, 14));
        }
        assert_eq!(fx.reason(Reason::TxSecondChanceRedirect), 1);
        // At the previous backend (no socket there either): no hop left, dropped.
        let last = fx.decap(&out.packet);
        assert_eq!(last.action, XdpAction::Drop);
        assert_eq!(fx.reason(Reason::DropHopLimit), 1);
        assert_eq!(fx.reason(Reason::PassSecondChance), 0);
    }
}

#[test]
fn decap_leaves_other_udp_alone() {
    let (here, prev) = (ip("10.77.0.11"), ip("10.77.0.12"));
    let fx = backend_host(here, prev);
    // Plain UDP to this host, and GUE to a port that is not ours: the kernel's business.
    let dns = Frame::udp(ip("10.77.0.10"), 5353, here, 53).build();
    let (_, mut other) = gue_frame("10.77.0.10", 1, "10.77.0.100", 80, TCP_ACK, here, prev);
    other[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&6081u16.to_be_bytes());
    for f in [dns, other] {
        let out = fx.decap(&f);
        assert_eq!((out.action, &out.packet), (XdpAction::Pass, &f));
    }
}
