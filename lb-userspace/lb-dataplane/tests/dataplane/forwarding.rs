//! Exact output bytes for each mode, family and protocol; non-VIP traffic; VLAN; IP options.

use lb_common::{Algorithm, ForwardMode, IPPROTO_UDP, Reason, hash::flow_hash};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, L4, TCP_SYN, checksum, ipv4_header_ok};

use crate::fixture::*;

fn one_backend(mode: ForwardMode, v6: bool, udp: bool) -> (Fixture, std::net::IpAddr, Frame) {
    let (vip_addr, be, client) = if v6 {
        ("fd77::100", "fd77::11", "fd77::10")
    } else {
        ("10.77.0.100", "10.77.0.11", "10.77.0.10")
    };
    let mut v = vip(
        "web",
        vip_addr,
        80,
        Algorithm::Maglev,
        mode,
        vec![backend(be, 1)],
    );
    if udp {
        v.proto = IPPROTO_UDP;
    }
    let fx = Fixture::new(&[v]);
    let frame = if udp {
        Frame::udp(ip(client), 40000, ip(vip_addr), 80).with_payload(b"hello")
    } else {
        Frame::tcp(ip(client), 40000, ip(vip_addr), 80, TCP_SYN)
    };
    (fx, ip(be), frame)
}

/// dsr-l2: only the MACs change: destination = backend, source = our interface (the old
/// destination).
fn expect_dsr(input: &[u8], out: &[u8], backend_mac: [u8; 6]) {
    let mut want = input.to_vec();
    want[0..6].copy_from_slice(&backend_mac);
    want[6..12].copy_from_slice(&input[0..6]);
    assert_eq!(
        out,
        want.as_slice(),
        "dsr-l2 output differs from the expected bytes"
    );
}

#[test]
fn dsr_l2_tcp_udp_v4_v6() {
    for v6 in [false, true] {
        for udp in [false, true] {
            let (fx, be, frame) = one_backend(ForwardMode::DsrL2, v6, udp);
            let input = frame.build();
            let out = fx.run(&input);
            assert_eq!(out.action, XdpAction::Tx, "v6={v6} udp={udp}");
            expect_dsr(&input, &out.packet, mac_of(be));
            assert_eq!(fx.reason(Reason::TxForward), 1);
        }
    }
}

#[test]
fn ipip_v4_exact_bytes() {
    for udp in [false, true] {
        let (fx, be, frame) = one_backend(ForwardMode::Ipip, false, udp);
        let input = frame.build();
        let out = fx.run(&input);
        assert_eq!(out.action, XdpAction::Tx);
        let inner = &input[14..];
        let mut outer = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 4, 0, 0];
        outer[2..4].copy_from_slice(&((inner.len() + 20) as u16).to_be_bytes());
        outer.extend_from_slice(&[10, 77, 0, 2]);
        outer.extend_from_slice(&[10, 77, 0, 11]);
        let c = checksum(&outer, 0);
        outer[10..12].copy_from_slice(&c.to_be_bytes());
        let mut want = mac_of(be).to_vec();
        want.extend_from_slice(&input[0..6]);
        want.extend_from_slice(&[0x08, 0x00]);
        want.extend_from_slice(&outer);
        want.extend_from_slice(inner);
        assert_eq!(out.packet, want, "ipip v4 output (udp={udp})");
        assert!(ipv4_header_ok(&out.packet, 14));
    }
}

#[test]
fn ipip_v6_exact_bytes() {
    let (fx, be, frame) = one_backend(ForwardMode::Ipip, true, false);
    let input = frame.build();
    let out = fx.run(&input);
    assert_eq!(out.action, XdpAction::Tx);
    let inner = &input[14..];
    let flow = lb_common::FlowKey::new(ip("fd77::10"), 40000, ip("fd77::100"), 80, 6);
    let label = flow_hash(&flow) & 0x000f_ffff;
    let mut want = mac_of(be).to_vec();
    want.extend_from_slice(&input[0..6]);
    want.extend_from_slice(&[0x86, 0xdd]);
    want.extend_from_slice(&(0x6000_0000u32 | label).to_be_bytes());
    want.extend_from_slice(&(inner.len() as u16).to_be_bytes());
    want.extend_from_slice(&[41, 64]);
    want.extend_from_slice(&ip6("fd77::2"));
    want.extend_from_slice(&ip6("fd77::11"));
    want.extend_from_slice(inner);
    assert_eq!(out.packet, want, "ipip v6 output");
}

fn ip6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("v6").octets()
}

#[test]
fn non_vip_traffic_passes_untouched() {
    let (fx, _, _) = one_backend(ForwardMode::DsrL2, false, false);
    let cases = [
        // another address
        Frame::tcp(ip("10.77.0.10"), 40000, ip("10.77.0.101"), 80, TCP_SYN).build(),
        // the VIP address, another port
        Frame::tcp(ip("10.77.0.10"), 40000, ip("10.77.0.100"), 81, TCP_SYN).build(),
        // the VIP address and port, another protocol
        Frame::udp(ip("10.77.0.10"), 40000, ip("10.77.0.100"), 80).build(),
        // VRRP (IP protocol 112) to 224.0.0.18
        Frame::new(
            ip("10.77.0.2"),
            ip("224.0.0.18"),
            L4::Raw {
                proto: 112,
                bytes: vec![0x31, 1, 100, 1, 0, 100, 0, 0],
            },
        )
        .build(),
        // ARP
        {
            let mut arp = vec![0xff; 6];
            arp.extend_from_slice(&[2, 0, 0, 0, 0, 0x10, 0x08, 0x06]);
            arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            arp.extend_from_slice(&[0u8; 20]);
            arp
        },
        // IPv6 neighbour solicitation
        Frame::new(
            ip("fe80::1"),
            ip("ff02::1:ff00:100"),
            L4::Icmp {
                kind: 135,
                code: 0,
                rest: [0; 4],
                body: ip6("fd77::100").to_vec(),
            },
        )
        .build(),
    ];
    for (i, pkt) in cases.iter().enumerate() {
        let out = fx.run(pkt);
        assert_eq!(out.action, XdpAction::Pass, "case {i}");
        assert_eq!(
            &out.packet, pkt,
            "case {i}: a passed packet must be untouched"
        );
    }
    assert_eq!(fx.reason(Reason::TxForward), 0);
    assert_eq!(fx.reason(Reason::PassNonIp), 1);
}

#[test]
fn port_zero_vip_takes_every_port() {
    let v = vip(
        "all",
        "10.77.0.100",
        0,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        vec![backend("10.77.0.11", 1)],
    );
    let fx = Fixture::new(&[v]);
    for port in [1u16, 80, 443, 65535] {
        let out = fx.run_frame(&Frame::tcp(
            ip("10.77.0.10"),
            40000,
            ip("10.77.0.100"),
            port,
            TCP_SYN,
        ));
        assert_eq!(out.action, XdpAction::Tx, "port {port}");
    }
}

#[test]
fn vlan_tagged_packets_keep_their_tag() {
    for mode in [ForwardMode::DsrL2, ForwardMode::Ipip] {
        let (fx, be, mut frame) = one_backend(mode, false, false);
        frame.vlan = Some(42);
        let input = frame.build();
        let out = fx.run(&input);
        assert_eq!(out.action, XdpAction::Tx, "{mode:?}");
        assert_eq!(&out.packet[0..6], &mac_of(be));
        assert_eq!(
            &out.packet[12..16],
            &[0x81, 0x00, 0x00, 42],
            "{mode:?}: VLAN tag kept"
        );
        if mode == ForwardMode::DsrL2 {
            expect_dsr(&input, &out.packet, mac_of(be));
        } else {
            assert_eq!(&out.packet[16..18], &[0x08, 0x00]);
            assert!(ipv4_header_ok(&out.packet, 18), "outer header checksum");
            assert_eq!(
                &out.packet[18 + 20..],
                &input[18..],
                "inner packet unchanged"
            );
        }
    }
}

#[test]
fn ipv4_options_are_honoured() {
    // The choice must follow the hash of the real ports behind the options.
    let v = vip(
        "web",
        "10.77.0.100",
        80,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        vec![
            backend("10.77.0.11", 1),
            backend("10.77.0.12", 1),
            backend("10.77.0.13", 1),
        ],
    );
    let fx = Fixture::new(&[v]);
    let bes = [ip("10.77.0.11"), ip("10.77.0.12"), ip("10.77.0.13")];
    let mut seen = std::collections::BTreeSet::new();
    for sport in 40000..40060u16 {
        let mut f = Frame::tcp(ip("10.77.0.10"), sport, ip("10.77.0.100"), 80, TCP_SYN);
        f.ip_options = vec![0x01, 0x01, 0x01, 0x00, 0x94, 0x04, 0x00, 0x00]; // NOPs, EOL, router alert
        let input = f.build();
        let out = fx.run(&input);
        assert_eq!(out.action, XdpAction::Tx);
        let flow = lb_common::FlowKey::new(ip("10.77.0.10"), sport, ip("10.77.0.100"), 80, 6);
        let got = fx.backend_of(&out, &bes);
        assert_eq!(
            got,
            fx.table_choice("web", flow_hash(&flow)),
            "sport {sport}"
        );
        seen.insert(got);
        expect_dsr(&input, &out.packet, mac_of(got));
    }
    assert_eq!(seen.len(), 3, "60 flows reach all three backends");
}

#[test]
fn counters_per_vip_backend_and_reason() {
    let (fx, be, frame) = one_backend(ForwardMode::DsrL2, false, false);
    let input = frame.build();
    for _ in 0..3 {
        assert_eq!(fx.run(&input).action, XdpAction::Tx);
    }
    let vid = fx.prog.vip_id("web").expect("vip id");
    let bid = fx.prog.backend_id("web", be).expect("backend id");
    let v = fx.prog.maps().vip_totals(vid).expect("vip stats");
    let b = fx.prog.maps().backend_totals(bid).expect("backend stats");
    assert_eq!(
        (v.packets, v.bytes, v.new_conns),
        (3, 3 * input.len() as u64, 1)
    );
    assert_eq!(v, b);
    assert_eq!(fx.reason(Reason::TxForward), 3);
}

#[test]
fn vip_without_usable_backend_drops() {
    let v = vip(
        "web",
        "10.77.0.100",
        80,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        vec![backend("10.77.0.11", 0)],
    );
    let fx = Fixture::new(&[v]);
    let out = fx.run_frame(&Frame::tcp(
        ip("10.77.0.10"),
        1,
        ip("10.77.0.100"),
        80,
        TCP_SYN,
    ));
    assert_eq!(out.action, XdpAction::Drop);
    assert_eq!(fx.reason(Reason::DropNoBackend), 1);
}

#[test]
fn frames_for_another_mac_are_not_forwarded() {
    let (mut fx, _, frame) = one_backend(ForwardMode::DsrL2, false, false);
    // BPF_PROG_TEST_RUN delivers on the loopback device (ifindex 1).
    let ours = frame.dst_mac;
    let mut ifaces = [lb_common::IfaceMac::default(); lb_common::MAX_IFACES];
    ifaces[0] = lb_common::IfaceMac {
        ifindex: 1,
        mac: ours,
        _pad: [0; 2],
    };
    fx.prog
        .maps_mut()
        .set_settings(&lb_common::Settings {
            ifaces,
            ..Default::default()
        })
        .expect("settings");
    assert_eq!(
        fx.run_frame(&frame).action,
        XdpAction::Tx,
        "a frame for our MAC is forwarded"
    );
    let mut flooded = frame.clone();
    flooded.dst_mac = [0x02, 0, 0, 0, 0, 0x03]; // the other balancer's MAC
    let input = flooded.build();
    let out = fx.run(&input);
    assert_eq!(
        (out.action, &out.packet),
        (XdpAction::Pass, &input),
        "a flooded frame must not be forwarded twice"
    );
    assert_eq!(fx.reason(Reason::PassOtherHost), 1);
}
