//! Malformed packets never crash or mislead the data plane: truncated at every header
//! boundary, bad IHL, bad TCP data offset, fragments.

use lb_common::{Algorithm, ForwardMode, Reason};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, TCP_SYN};

use crate::fixture::*;

fn fx() -> Fixture {
    Fixture::new(&[
        vip(
            "web",
            "10.77.0.100",
            80,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            vec![backend("10.77.0.11", 1)],
        ),
        vip(
            "web6",
            "fd77::100",
            80,
            Algorithm::Maglev,
            ForwardMode::Ipip,
            vec![backend("fd77::11", 1)],
        ),
    ])
}

#[test]
fn truncated_at_every_length() {
    let fx = fx();
    let mut vlan = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN);
    vlan.vlan = Some(7);
    let mut opts = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN);
    opts.ip_options = vec![1; 12];
    let frames = [
        Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN),
        Frame::tcp(ip("fd77::10"), 1000, ip("fd77::100"), 80, TCP_SYN),
        vlan,
        opts,
    ];
    for f in frames {
        let full = f.build();
        let l4_start = full.len() - 20;
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (so does every NIC).
        for len in 14..full.len() {
            let cut = &full[..len];
            let out = fx.run(cut);
            // Before the destination address is readable nothing can be said: pass. Once it
            // is known to be a VIP address, a short transport header is dropped.
            let want = if len < l4_start {
                [XdpAction::Pass, XdpAction::Drop]
            } else {
                [XdpAction::Drop, XdpAction::Drop]
            };
            assert!(
                want.contains(&out.action),
                "length {len}/{}: {:?}",
                full.len(),
                out.action
            );
            if len >= l4_start {
                assert_eq!(
                    out.action,
                    XdpAction::Drop,
                    "length {len}: truncated TCP header to a VIP"
                );
            }
            if out.action == XdpAction::Pass {
                assert_eq!(
                    out.packet, cut,
                    "length {len}: passed packets are untouched"
                );
            }
        }
        assert_eq!(
            fx.run(&full).action,
            XdpAction::Tx,
            "the whole packet is forwarded"
        );
    }
    assert!(fx.reason(Reason::PassTruncated) > 0);
    assert!(fx.reason(Reason::DropMalformed) > 0);
}

#[test]
fn bad_ihl_is_dropped_for_a_vip_and_passed_otherwise() {
    let fx = fx();
    for ihl in [0u8, 1, 4] {
        for (dst, want) in [
            ("10.77.0.100", XdpAction::Drop),
            ("10.77.0.99", XdpAction::Pass),
        ] {
            let mut p = Frame::tcp(ip("10.77.0.10"), 1000, ip(dst), 80, TCP_SYN).build();
            p[14] = 0x40 | ihl;
            assert_eq!(fx.run(&p).action, want, "ihl {ihl} to {dst}");
        }
    }
    // IHL claiming options past the end of the packet.
    let mut p = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN).build();
    p[14] = 0x4f;
    assert_eq!(fx.run(&p).action, XdpAction::Drop);
}

#[test]
fn bad_tcp_data_offset_is_dropped() {
    let fx = fx();
    for doff in [0u8, 4, 6, 15] {
        let mut p = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN).build();
        p[14 + 20 + 12] = doff << 4;
        assert_eq!(fx.run(&p).action, XdpAction::Drop, "data offset {doff}");
    }
    // A data offset inside the packet (options present) is fine.
    let mut p = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN)
        .with_payload(&[1; 8])
        .build();
    p[14 + 20 + 12] = 7 << 4;
    assert_eq!(fx.run(&p).action, XdpAction::Tx);
}

#[test]
fn fragments_to_a_vip_are_dropped_and_counted() {
    let fx = fx();
    for frag in [(true, 0u16), (true, 100), (false, 100)] {
        let mut f = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN);
        f.fragment = Some(frag);
        assert_eq!(
            fx.run_frame(&f).action,
            XdpAction::Drop,
            "fragment {frag:?}"
        );
        let mut other = f.clone();
        other.dst = ip("10.77.0.99");
        let pkt = other.build();
        let out = fx.run(&pkt);
        assert_eq!(
            out.action,
            XdpAction::Pass,
            "a fragment for another address passes"
        );
        assert_eq!(out.packet, pkt);
    }
    // IPv6 fragment header (next header 44).
    let p = Frame::new(
        ip("fd77::10"),
        ip("fd77::100"),
        lb_dataplane::packet::L4::Raw {
            proto: 44,
            bytes: vec![6, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        },
    )
    .build();
    assert_eq!(fx.run(&p).action, XdpAction::Drop);
    assert_eq!(fx.reason(Reason::DropFragment), 4);
    // "Don't fragment" alone is not a fragment.
    let f = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN);
    assert!(f.dont_fragment);
    assert_eq!(fx.run_frame(&f).action, XdpAction::Tx);
}
