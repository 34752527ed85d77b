//! The backend's decapsulation program, fed with the balancer's own output.

use lb_common::{Algorithm, ForwardMode, Reason};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, TCP_SYN};

use crate::fixture::*;

#[test]
fn decap_restores_the_clients_packet() {
    for (client, vipa, be) in [
        ("10.77.0.10", "10.77.0.100", "10.77.0.11"),
        ("fd77::10", "fd77::100", "fd77::11"),
    ] {
        for vlan in [None, Some(9)] {
            let mut fx = Fixture::new(&[vip(
                "web",
                vipa,
                80,
                Algorithm::Maglev,
                ForwardMode::Ipip,
                vec![backend(be, 1)],
            )]);
            fx.prog
                .maps_mut()
                .add_decap_address(ip(be))
                .expect("decap address");
            let mut f = Frame::tcp(ip(client), 40000, ip(vipa), 80, TCP_SYN)
                .with_payload(b"GET / HTTP/1.1\r\n\r\n");
            f.vlan = vlan;
            let input = f.build();
            let enc = fx.run(&input);
            assert_eq!(enc.action, XdpAction::Tx);
            let dec = fx.decap(&enc.packet);
            assert_eq!(dec.action, XdpAction::Pass);
            let l2 = if vlan.is_some() { 18 } else { 14 };
            assert_eq!(
                &dec.packet[0..6],
                &mac_of(ip(be)),
                "addressed to the backend"
            );
            assert_eq!(
                &dec.packet[12..l2],
                &input[12..l2],
                "ethertype (and tag) of the inner packet"
            );
            assert_eq!(
                &dec.packet[l2..],
                &input[l2..],
                "the client's IP packet, byte for byte"
            );
            assert_eq!(fx.reason(Reason::PassDecap), 1);
        }
    }
}

#[test]
fn decap_leaves_other_packets_alone() {
    let mut fx = Fixture::new(&[vip(
        "web",
        "10.77.0.100",
        80,
        Algorithm::Maglev,
        ForwardMode::Ipip,
        vec![backend("10.77.0.11", 1)],
    )]);
    fx.prog
        .maps_mut()
        .add_decap_address(ip("10.77.0.12"))
        .expect("decap address");
    let enc = fx.run_frame(&Frame::tcp(
        ip("10.77.0.10"),
        1,
        ip("10.77.0.100"),
        80,
        TCP_SYN,
    ));
    // Encapsulated for another host: not ours.
    let out = fx.decap(&enc.packet);
    assert_eq!((out.action, &out.packet), (XdpAction::Pass, &enc.packet));
    // Ordinary traffic.
    let plain = Frame::tcp(ip("10.77.0.10"), 1, ip("10.77.0.12"), 80, TCP_SYN).build();
    let out = fx.decap(&plain);
    assert_eq!((out.action, &out.packet), (XdpAction::Pass, &plain));
    assert_eq!(fx.reason(Reason::PassDecap), 0);
}
