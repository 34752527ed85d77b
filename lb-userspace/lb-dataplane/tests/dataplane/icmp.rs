//! ICMP: echo requests to a VIP are answered; errors about a VIP flow go to its backend.

use lb_common::{Algorithm, ForwardMode, Reason};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, L4, TCP_ACK, TCP_SYN, checksum, ipv4_header_ok, pseudo_sum};

use crate::fixture::*;

const BES4: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];
const BES6: [&str; 3] = ["fd77::11", "fd77::12", "fd77::13"];

fn fx(mode: ForwardMode) -> Fixture {
    Fixture::new(&[
        vip(
            "web",
            "10.77.0.100",
            80,
            Algorithm::Maglev,
            mode,
            BES4.iter().map(|b| backend(b, 1)).collect(),
        ),
        vip(
            "web6",
            "fd77::100",
            80,
            Algorithm::Maglev,
            mode,
            BES6.iter().map(|b| backend(b, 1)).collect(),
        ),
    ])
}

#[test]
fn echo_request_to_a_vip_is_answered() {
    let fx = fx(ForwardMode::DsrL2);
    for (client, vipa) in [("10.77.0.10", "10.77.0.100"), ("fd77::10", "fd77::100")] {
        let req = Frame::new(ip(client), ip(vipa), L4::EchoRequest { id: 7, seq: 1 })
            .with_payload(b"ping-payload");
        let input = req.build();
        let out = fx.run(&input);
        assert_eq!(out.action, XdpAction::Tx, "{vipa}");
        let p = &out.packet;
        assert_eq!(
            &p[0..6],
            &input[6..12],
            "reply goes back to the sender's MAC"
        );
        assert_eq!(&p[6..12], &input[0..6]);
        let v4 = client.contains('.');
        let (l3, l4) = (14, if v4 { 34 } else { 54 });
        if v4 {
            assert_eq!(&p[l3 + 12..l3 + 16], &input[l3 + 16..l3 + 20]);
            assert_eq!(&p[l3 + 16..l3 + 20], &input[l3 + 12..l3 + 16]);
            assert!(ipv4_header_ok(p, l3));
            assert_eq!(p[l4], 0, "echo reply type");
            assert_eq!(checksum(&p[l4..], 0), 0, "ICMP checksum");
        } else {
            assert_eq!(&p[l3 + 8..l3 + 24], &input[l3 + 24..l3 + 40]);
            assert_eq!(p[l4], 129, "ICMPv6 echo reply type");
            let sum = pseudo_sum(ip(vipa), ip(client), 58, p.len() - l4);
            assert_eq!(checksum(&p[l4..], sum), 0, "ICMPv6 checksum");
        }
        assert_eq!(
            &p[l4 + 4..],
            &input[l4 + 4..],
            "id, sequence and payload echoed"
        );
    }
    assert_eq!(fx.reason(Reason::TxEchoReply), 2);
    // Echo to a non-VIP address is the kernel's business.
    let other = Frame::new(
        ip("10.77.0.10"),
        ip("10.77.0.2"),
        L4::EchoRequest { id: 1, seq: 1 },
    )
    .build();
    assert_eq!(fx.run(&other).action, XdpAction::Pass);
}

/// An ICMP error from a router about the backend's reply (VIP:80 -> client:port).
fn too_big(client: &str, cport: u16, vipa: &str) -> Frame {
    let reply = Frame::tcp(ip(vipa), 80, ip(client), cport, TCP_ACK)
        .with_payload(&[0u8; 32])
        .build();
    let v4 = client.contains('.');
    let inner = &reply[14..];
    let quoted = if v4 {
        inner[..28].to_vec()
    } else {
        inner.to_vec()
    };
    let (router, kind, code, rest) = if v4 {
        ("10.77.0.1", 3u8, 4u8, [0, 0, 0x05, 0x78]) // fragmentation needed, MTU 1400
    } else {
        ("fd77::1", 2u8, 0u8, [0, 0, 0x05, 0x78]) // packet too big, MTU 1400
    };
    Frame::new(
        ip(router),
        ip(vipa),
        L4::Icmp {
            kind,
            code,
            rest,
            body: quoted,
        },
    )
}

#[test]
fn too_big_for_a_flow_goes_to_the_flows_backend() {
    for mode in [ForwardMode::DsrL2, ForwardMode::Ipip] {
        let fx = fx(mode);
        for (client, vipa, bes) in [
            ("10.77.0.10", "10.77.0.100", BES4),
            ("fd77::10", "fd77::100", BES6),
        ] {
            let addrs: Vec<_> = bes.iter().map(|b| ip(b)).collect();
            for cport in 50000..50020u16 {
                let syn = fx.run_frame(&Frame::tcp(ip(client), cport, ip(vipa), 80, TCP_SYN));
                let owner = fx.backend_of(&syn, &addrs);
                let icmp = too_big(client, cport, vipa).build();
                let out = fx.run(&icmp);
                assert_eq!(
                    fx.backend_of(&out, &addrs),
                    owner,
                    "{mode:?} {client}:{cport}"
                );
                if mode == ForwardMode::DsrL2 {
                    assert_eq!(&out.packet[12..], &icmp[12..], "forwarded as it came");
                } else {
                    let overhead = if client.contains('.') { 20 } else { 40 };
                    assert_eq!(
                        &out.packet[14 + overhead..],
                        &icmp[14..],
                        "encapsulated as it came"
                    );
                }
            }
        }
        assert_eq!(fx.reason(Reason::TxIcmpError), 40);
    }
}

#[test]
fn icmp_errors_for_unknown_vips_pass_and_truncated_ones_drop() {
    let fx = fx(ForwardMode::DsrL2);
    // Quoting a packet from another port of the VIP address: not a VIP flow.
    let reply = Frame::tcp(ip("10.77.0.100"), 8080, ip("10.77.0.10"), 1234, TCP_ACK).build();
    let f = Frame::new(
        ip("10.77.0.1"),
        ip("10.77.0.100"),
        L4::Icmp {
            kind: 3,
            code: 4,
            rest: [0, 0, 5, 0x78],
            body: reply[14..42].to_vec(),
        },
    );
    assert_eq!(fx.run_frame(&f).action, XdpAction::Pass);
    // Quoted header cut short.
    let short = Frame::new(
        ip("10.77.0.1"),
        ip("10.77.0.100"),
        L4::Icmp {
            kind: 3,
            code: 4,
            rest: [0, 0, 5, 0x78],
            body: reply[14..30].to_vec(),
        },
    );
    assert_eq!(fx.run_frame(&short).action, XdpAction::Drop);
    // Timestamp request: left to the kernel.
    let ts = Frame::new(
        ip("10.77.0.10"),
        ip("10.77.0.100"),
        L4::Icmp {
            kind: 13,
            code: 0,
            rest: [0; 4],
            body: vec![0; 12],
        },
    );
    assert_eq!(fx.run_frame(&ts).action, XdpAction::Pass);
}

#[test]
fn ipip_outer_header_is_valid_for_icmp_too() {
    let fx = fx(ForwardMode::Ipip);
    fx.run_frame(&Frame::tcp(
        ip("10.77.0.10"),
        50000,
        ip("10.77.0.100"),
        80,
        TCP_SYN,
    ));
    let out = fx.run(&too_big("10.77.0.10", 50000, "10.77.0.100").build());
    assert_eq!(out.action, XdpAction::Tx);
    assert!(ipv4_header_ok(&out.packet, 14));
    assert_eq!(out.packet[14 + 9], 4, "outer protocol IPIP");
}
