//! `ipip` packets that would exceed the backend MTU once encapsulated: answered with ICMP
//! "fragmentation needed" / "packet too big" (exact bytes, built here independently), or
//! dropped and counted when no answer is due.

use std::net::IpAddr;

use lb_common::{Algorithm, ForwardMode, IPPROTO_ICMPV6, Reason};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, L4, TCP_ACK, checksum, l3_offset, pseudo_sum};

use crate::fixture::*;

const MTU: u32 = 1400;

fn fx(mode: ForwardMode, mtu: u32) -> Fixture {
    let mut fx = Fixture::new(&[
        vip(
            "web",
            "10.77.0.100",
            80,
            Algorithm::Maglev,
            mode,
            vec![backend("10.77.0.11", 1), backend("10.77.0.12", 1)],
        ),
        vip(
            "web6",
            "fd77::100",
            80,
            Algorithm::Maglev,
            mode,
            vec![backend("fd77::11", 1), backend("fd77::12", 1)],
        ),
    ]);
    fx.set_backend_mtu(mtu);
    fx
}

/// A client's TCP segment whose IP packet is `l3_len` bytes long.
fn segment(client: &str, vipa: &str, l3_len: usize, vlan: Option<u16>) -> Frame {
    let headers = if client.contains(':') { 60 } else { 40 };
    let mut f = Frame::tcp(ip(client), 40000, ip(vipa), 80, TCP_ACK)
        .with_payload(&vec![0xab; l3_len - headers]);
    f.vlan = vlan;
    f
}

/// The reply a router would send, built from the RFCs: link header back to the sender, IPv4
/// header (TOS 0xc0, TTL 64, no DF) + ICMP type 3 code 4 with the next-hop MTU, quoting 84
/// bytes of the packet; or IPv6 (hop limit 64) + ICMPv6 type 2 with a 32-bit MTU, quoting
/// 248 bytes.
fn expected_reply(input: &[u8], vip: IpAddr, client: IpAddr, mtu: u32) -> Vec<u8> {
    let l3 = l3_offset(input).expect("ethertype");
    let mut out = Vec::new();
    out.extend_from_slice(&input[6..12]);
    out.extend_from_slice(&input[0..6]);
    out.extend_from_slice(&input[12..l3]);
    match (vip, client) {
        (IpAddr::V4(v), IpAddr::V4(c)) => {
            let quote = &input[l3..l3 + 84];
            let mut h = vec![0x45, 0xc0];
            h.extend_from_slice(&(20u16 + 8 + 84).to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
            h.extend_from_slice(&v.octets());
            h.extend_from_slice(&c.octets());
            let sum = checksum(&h, 0);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            let mut icmp = vec![3, 4, 0, 0, 0, 0];
            icmp.extend_from_slice(&(mtu as u16).to_be_bytes());
            icmp.extend_from_slice(quote);
            let sum = checksum(&icmp, 0);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(&icmp);
        }
        (IpAddr::V6(v), IpAddr::V6(c)) => {
            let quote = &input[l3..l3 + 248];
            let mut icmp = vec![2, 0, 0, 0];
            icmp.extend_from_slice(&mtu.to_be_bytes());
            icmp.extend_from_slice(quote);
            let sum = checksum(&icmp, pseudo_sum(vip, client, IPPROTO_ICMPV6, icmp.len()));
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            out.extend_from_slice(&[IPPROTO_ICMPV6, 64]);
            out.extend_from_slice(&v.octets());
            out.extend_from_slice(&c.octets());
            out.extend_from_slice(&icmp);
        }
        _ => panic!("one family"),
    }
    out
}

#[test]
fn ipip_packets_over_the_backend_mtu_are_answered_with_icmp() {
    let fx = fx(ForwardMode::Ipip, MTU);
    let mut answered = 0;
    for (client, vipa, overhead) in [
        ("10.77.0.10", "10.77.0.100", 20usize),
        ("fd77::10", "fd77::100", 40),
    ] {
        for vlan in [None, Some(42)] {
            let fits = MTU as usize - overhead;
            // The largest packet that fits goes to a backend, encapsulated to exactly the MTU.
            let ok = fx.run_frame(&segment(client, vipa, fits, vlan));
            assert_eq!(ok.action, XdpAction::Tx, "{client} {vlan:?}: fits");
            let l3 = l3_offset(&ok.packet).expect("ethertype");
            assert_eq!(
                ok.packet.len() - l3,
                MTU as usize,
                "encapsulated to the MTU"
            );

            // One byte more is answered.
            let big = segment(client, vipa, fits + 1, vlan).build();
            let out = fx.run(&big);
            assert_eq!(out.action, XdpAction::Tx, "{client} {vlan:?}: answered");
            let want = expected_reply(&big, ip(vipa), ip(client), (MTU as usize - overhead) as u32);
            assert_eq!(
                out.packet, want,
                "{client} {vlan:?}: ICMP reply\n got: {:02x?}\nwant: {want:02x?}",
                out.packet
            );
            answered += 1;
            assert_eq!(fx.reason(Reason::TxTooBig), answered);
        }
    }
    assert_eq!(fx.reason(Reason::DropTooBig), 0);
}

#[test]
fn ipv6_never_announces_less_than_1280() {
    // A path of 1300 bytes leaves 1260 for the inner packet: below IPv6's minimum link MTU,
    // so the reply says 1280 (the config refuses such an MTU for IPv6; the data plane stays
    // sane anyway).
    let fx = fx(ForwardMode::Ipip, 1300);
    let big = segment("fd77::10", "fd77::100", 1300, None).build();
    let out = fx.run(&big);
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(
        out.packet,
        expected_reply(&big, ip("fd77::100"), ip("fd77::10"), 1280)
    );
}

#[test]
fn too_big_without_df_or_about_icmp_is_dropped_and_counted() {
    let fx = fx(ForwardMode::Ipip, MTU);
    // IPv4 without DF: the sender allows fragmentation, which XDP cannot do.
    let mut f = segment("10.77.0.10", "10.77.0.100", 1500, None);
    f.dont_fragment = false;
    assert_eq!(fx.run_frame(&f).action, XdpAction::Drop);
    assert_eq!(fx.reason(Reason::DropTooBig), 1);

    // An ICMP error about a VIP flow, forwarded to the flow's backend, but too big: never an
    // ICMP error about an ICMP message.
    let reply = Frame::tcp(ip("10.77.0.100"), 80, ip("10.77.0.10"), 40000, TCP_ACK)
        .with_payload(&[0u8; 1400])
        .build();
    let icmp = Frame::new(
        ip("10.77.0.1"),
        ip("10.77.0.100"),
        L4::Icmp {
            kind: 3,
            code: 4,
            rest: [0, 0, 0x05, 0xdc],
            body: reply[14..].to_vec(),
        },
    );
    assert_eq!(fx.run_frame(&icmp).action, XdpAction::Drop);
    assert_eq!(fx.reason(Reason::DropTooBig), 2);
    assert_eq!(fx.reason(Reason::TxTooBig), 0);
    assert_eq!(fx.reason(Reason::TxIcmpError), 0);
}

#[test]
fn answered_packets_do_not_count_as_backend_traffic() {
    let fx = fx(ForwardMode::Ipip, MTU);
    let id = fx.prog.vip_meta("web").expect("web is programmed").id;
    let totals = || fx.prog.maps().vip_totals(id).expect("VIP totals");
    let out = fx.run_frame(&segment("10.77.0.10", "10.77.0.100", 1500, None));
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(fx.reason(Reason::TxTooBig), 1);
    assert_eq!(
        totals().packets,
        0,
        "an answered packet is not traffic sent to a backend"
    );
    // The same flow's packets that fit are counted as usual.
    let out = fx.run_frame(&segment("10.77.0.10", "10.77.0.100", 100, None));
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(totals().packets, 1);
}

#[test]
fn dsr_l2_ignores_the_backend_mtu() {
    // dsr-l2 adds nothing to the packet: the MTU applies to encapsulation only.
    let fx = fx(ForwardMode::DsrL2, MTU);
    let big = segment("10.77.0.10", "10.77.0.100", 1500, None).build();
    let out = fx.run(&big);
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(out.packet[12..], big[12..], "only the MACs change");
    assert_eq!(fx.reason(Reason::TxTooBig), 0);
}
