//! The shortcuts of the fast path. The VIP address filter: a clear bit passes traffic after one
//! array load, a set bit only means "look it up", and the control plane keeps the bits equal to
//! the VIP addresses. Established flows: forwarded from the connection table and `VIP_MODES`
//! without a VIP lookup, so VIP removal and mode changes must reach them.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{Algorithm, ForwardMode, Reason, addr_filter_bit, user::addr_words};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, TCP_ACK, TCP_SYN};

use crate::fixture::*;

fn bit(a: IpAddr) -> u32 {
    addr_filter_bit(&addr_words(a))
}

/// Another IPv4 address with the same filter bit as `a` (the filter is a hash: they exist).
fn colliding(a: IpAddr) -> IpAddr {
    let want = bit(a);
    (0x0a00_0000u32..0x0b00_0000)
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .find(|c| *c != a && bit(*c) == want)
        .expect("a colliding address in 10/8")
}

fn vip_at(addr: &str) -> lb_dataplane::VipSpec {
    vip(
        "web",
        addr,
        80,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        vec![backend("10.77.0.11", 1)],
    )
}

#[test]
fn a_colliding_non_vip_address_still_passes_untouched() {
    let fx = Fixture::new(&[vip_at("10.77.0.100")]);
    let other = colliding(ip("10.77.0.100"));
    let ok = Frame::tcp(ip("10.9.0.1"), 40000, other, 80, TCP_SYN).build();
    // A header the data plane would drop if `other` were a VIP address (IHL 4).
    let mut bad = ok.clone();
    bad[14] = 0x44;
    for (i, pkt) in [ok, bad].iter().enumerate() {
        let out = fx.run(pkt);
        assert_eq!(out.action, XdpAction::Pass, "case {i}: {other} is no VIP");
        assert_eq!(&out.packet, pkt, "case {i}: passed untouched");
    }
    assert_eq!(fx.reason(Reason::PassNotVip), 2);
    assert_eq!(fx.reason(Reason::DropMalformed), 0);
}

#[test]
fn filter_bits_follow_the_vip_addresses() {
    let mut fx = Fixture::new(&[vip_at("10.77.0.100")]);
    let to = |addr: &str| Frame::tcp(ip("10.9.0.1"), 40000, ip(addr), 80, TCP_SYN).build();
    assert_eq!(fx.run(&to("10.77.0.100")).action, XdpAction::Tx);
    assert_eq!(fx.run(&to("10.77.0.200")).action, XdpAction::Pass);

    // The VIP moves: the new address is forwarded at once, the old one is no longer ours.
    fx.prog.apply(&[vip_at("10.77.0.200")]).expect("apply");
    assert_ne!(bit(ip("10.77.0.100")), bit(ip("10.77.0.200")));
    assert_eq!(fx.run(&to("10.77.0.200")).action, XdpAction::Tx);
    let old = to("10.77.0.100");
    let out = fx.run(&old);
    assert_eq!(out.action, XdpAction::Pass);
    assert_eq!(out.packet, old);

    // IPv6 VIPs use the same filter (the address words folded).
    fx.prog
        .apply(&[vip(
            "web6",
            "fd77::100",
            80,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            vec![backend("fd77::11", 1)],
        )])
        .expect("apply v6");
    let v6 = Frame::tcp(ip("fd00::9"), 40000, ip("fd77::100"), 80, TCP_SYN).build();
    assert_eq!(fx.run(&v6).action, XdpAction::Tx);
    assert_eq!(fx.run(&to("10.77.0.200")).action, XdpAction::Pass);
}

/// Established flows are forwarded from the connection table without a VIP lookup: once the
/// VIP is gone (another VIP keeps the address, so the filter still lets packets in) its flows
/// must not be forwarded any more, and a mode change applies to established flows at once.
#[test]
fn established_flows_follow_vip_removal_and_mode_changes() {
    let web = |mode| {
        vip(
            "web",
            "10.77.0.100",
            80,
            Algorithm::Maglev,
            mode,
            vec![backend("10.77.0.11", 1)],
        )
    };
    let other = vip(
        "other",
        "10.77.0.100",
        81,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        vec![backend("10.77.0.12", 1)],
    );
    let mut fx = Fixture::new(&[web(ForwardMode::DsrL2), other.clone()]);
    let syn = Frame::tcp(ip("10.9.0.1"), 40000, ip("10.77.0.100"), 80, TCP_SYN).build();
    let ack = Frame::tcp(ip("10.9.0.1"), 40000, ip("10.77.0.100"), 80, TCP_ACK).build();
    assert_eq!(fx.run(&syn).action, XdpAction::Tx);
    let out = fx.run(&ack);
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(out.packet.len(), ack.len(), "dsr-l2 keeps the length");

    // The same VIP switched to ipip: the established flow is encapsulated from now on.
    fx.prog
        .apply(&[web(ForwardMode::Ipip), other.clone()])
        .expect("apply ipip");
    let out = fx.run(&ack);
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(
        out.packet.len(),
        ack.len() + 20,
        "ipip adds an outer header"
    );
    assert_eq!(out.packet[23], 4, "outer protocol IPIP");

    // The VIP removed: its established flow is passed to the kernel untouched.
    fx.prog.apply(&[other]).expect("apply without web");
    let forwarded_before = fx.reason(Reason::TxForward);
    let out = fx.run(&ack);
    assert_eq!(out.action, XdpAction::Pass);
    assert_eq!(out.packet, ack);
    assert_eq!(fx.reason(Reason::TxForward), forwarded_before);
}
