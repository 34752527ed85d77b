//! The VIP address filter: a clear bit passes traffic after one array load, a set bit only
//! means "look it up", and the control plane keeps the bits equal to the VIP addresses.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{Algorithm, ForwardMode, Reason, addr_filter_bit, user::addr_words};
use lb_userspace::{dataplane::XdpAction, packet::Frame, packet::TCP_SYN};

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

fn vip_at(addr: &str) -> lb_userspace::dataplane::VipSpec {
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
