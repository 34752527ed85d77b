//! Malformed packets never crash or mislead the data plane: truncated at every header
//! boundary, IP lengths the frame does not hold (and Ethernet padding, which is fine), bad
//! IHL, bad TCP data offset, fragments, and the IPv6 extension-header policy.

use lb_common::{Algorithm, ForwardMode, Reason};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{
    EXT_AH, EXT_DEST_OPTS, EXT_FRAGMENT, EXT_HOP_BY_HOP, ExtHeader, Frame, L4, TCP_ACK, TCP_SYN,
    l3_offset,
};

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
    let mut ext = Frame::tcp(ip("fd77::10"), 1000, ip("fd77::100"), 80, TCP_SYN);
    ext.ext_headers = vec![ExtHeader::padded(EXT_HOP_BY_HOP)];
    let frames = [
        Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN),
        Frame::tcp(ip("fd77::10"), 1000, ip("fd77::100"), 80, TCP_SYN),
        vlan,
        opts,
        ext,
    ];
    for f in frames {
        let full = f.build();
        let l3 = l3_offset(&full).expect("ethertype");
        let addresses_end = l3 + if f.src.is_ipv4() { 20 } else { 40 };
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (so does every NIC).
        for len in 14..full.len() {
            let cut = &full[..len];
            let out = fx.run(cut);
            // Before the addresses are readable nothing can be said: passed untouched. After,
            // the frame is shorter than its IP length: malformed, dropped (it is for a VIP).
            if len < addresses_end {
                assert_eq!(out.action, XdpAction::Pass, "length {len}/{}", full.len());
                assert_eq!(
                    out.packet, cut,
                    "length {len}: passed packets are untouched"
                );
            } else {
                assert_eq!(out.action, XdpAction::Drop, "length {len}/{}", full.len());
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

/// Sets the IP length field: IPv4 total length or IPv6 payload length.
fn set_ip_length(p: &mut [u8], len: u16) {
    let l3 = l3_offset(p).expect("ethertype");
    let at = if p[l3] >> 4 == 4 { l3 + 2 } else { l3 + 4 };
    p[at..at + 2].copy_from_slice(&len.to_be_bytes());
    if p[l3] >> 4 == 4 {
        // Keep the header checksum valid: only the length disagrees with the frame.
        p[l3 + 10..l3 + 12].fill(0);
        let c = lb_dataplane::packet::checksum(&p[l3..l3 + 20], 0);
        p[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
}

fn ip_length(p: &[u8]) -> u16 {
    let l3 = l3_offset(p).expect("ethertype");
    let at = if p[l3] >> 4 == 4 { l3 + 2 } else { l3 + 4 };
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// Both families, untagged and tagged, to `dst`.
fn length_cases(v4: &str, v6: &str) -> Vec<Frame> {
    let mut out = Vec::new();
    for (src, dst) in [("10.77.0.10", v4), ("fd77::10", v6)] {
        for vlan in [None, Some(9)] {
            let mut f = Frame::tcp(ip(src), 1000, ip(dst), 80, TCP_SYN).with_payload(&[5; 30]);
            f.vlan = vlan;
            out.push(f);
        }
    }
    out
}

#[test]
fn an_ip_length_beyond_the_frame_is_malformed_in_both_families() {
    let fx = fx();
    let mut dropped = 0;
    for f in length_cases("10.77.0.100", "fd77::100") {
        let good = f.build();
        let len = ip_length(&good);
        for more in [1u16, 7, 100, u16::MAX - len] {
            let mut p = good.clone();
            set_ip_length(&mut p, len + more);
            let out = fx.run(&p);
            assert_eq!(
                out.action,
                XdpAction::Drop,
                "{:?}: IP length + {more}",
                f.dst
            );
            dropped += 1;
        }
        // Not ours to judge when it is for another address: passed untouched.
        let mut other = f.clone();
        other.dst = if f.dst.is_ipv4() {
            ip("10.77.0.99")
        } else {
            ip("fd77::99")
        };
        let mut p = other.build();
        let len = ip_length(&p);
        set_ip_length(&mut p, len + 1);
        let out = fx.run(&p);
        assert_eq!(out.action, XdpAction::Pass);
        assert_eq!(out.packet, p);
    }
    assert_eq!(fx.reason(Reason::DropMalformed), dropped);
    // An IPv4 total length shorter than the header itself.
    let mut p = Frame::tcp(ip("10.77.0.10"), 1000, ip("10.77.0.100"), 80, TCP_SYN).build();
    set_ip_length(&mut p, 19);
    assert_eq!(fx.run(&p).action, XdpAction::Drop);
}

#[test]
fn ethernet_padding_is_forwarded_as_it_came() {
    let fx = fx();
    for f in length_cases("10.77.0.100", "fd77::100") {
        let good = f.build();
        for pad in [1usize, 6, 40] {
            let mut p = good.clone();
            p.extend(std::iter::repeat_n(0, pad));
            let out = fx.run(&p);
            assert_eq!(
                out.action,
                XdpAction::Tx,
                "{:?} with {pad} bytes of padding",
                f.dst
            );
            if f.dst.is_ipv4() {
                // dsr-l2: the frame goes on as it came, padding included; only the MACs change.
                assert_eq!(out.packet[12..], p[12..]);
            } else {
                // ipip: the outer header covers the whole inner frame, padding included.
                let l3 = l3_offset(&out.packet).expect("ethertype");
                let payload = u16::from_be_bytes([out.packet[l3 + 4], out.packet[l3 + 5]]);
                assert_eq!(payload as usize, out.packet.len() - l3 - 40);
                assert_eq!(out.packet[l3 + 40..], p[l3..]);
            }
        }
    }
    assert_eq!(fx.reason(Reason::DropMalformed), 0);
}

#[test]
fn a_transport_header_in_the_padding_is_malformed() {
    let fx = fx();
    // The IP length ends before the TCP header (or inside it): what follows is padding, and a
    // TCP header there is no TCP header (the kernel trims it away before TCP looks).
    for f in length_cases("10.77.0.100", "fd77::100") {
        let good = f.build();
        let len = ip_length(&good);
        let hdr = if f.src.is_ipv4() { 20 } else { 0 };
        for ip_len in [hdr, hdr + 10, hdr + 19] {
            let mut p = good.clone();
            set_ip_length(&mut p, ip_len);
            assert!(ip_len < len);
            assert_eq!(
                fx.run(&p).action,
                XdpAction::Drop,
                "{:?}: IP length {ip_len}",
                f.dst
            );
        }
        // The header whole inside the IP length, the payload cut: forwarded (the payload is
        // the backend's business).
        let mut p = good.clone();
        set_ip_length(&mut p, hdr + 20);
        assert_eq!(fx.run(&p).action, XdpAction::Tx, "{:?}: header only", f.dst);
    }
    // ICMP: an echo request whose ICMP header lies in the padding is not answered.
    let mut p = Frame::new(
        ip("10.77.0.10"),
        ip("10.77.0.100"),
        L4::EchoRequest { id: 1, seq: 1 },
    )
    .build();
    set_ip_length(&mut p, 24);
    assert_eq!(fx.run(&p).action, XdpAction::Drop);
}

fn v6_with(ext: Vec<ExtHeader>, dst: &str) -> Frame {
    let mut f = Frame::tcp(ip("fd77::10"), 1000, ip(dst), 80, TCP_SYN);
    f.ext_headers = ext;
    f
}

#[test]
fn ipv6_extension_headers_follow_the_documented_policy() {
    let fx = fx();
    let hbh = || ExtHeader::padded(EXT_HOP_BY_HOP);
    let dst_opts = || ExtHeader::padded(EXT_DEST_OPTS);
    let ah = || ExtHeader {
        kind: EXT_AH,
        data: vec![0; 10],
    };
    let frag = || ExtHeader {
        kind: EXT_FRAGMENT,
        data: vec![0, 0, 0, 0, 0, 1],
    };
    // Forwarded: the chain is skipped, the flow is balanced on the TCP header behind it and
    // the packet goes on whole (the backend's kernel processes the headers).
    let forwarded = [
        vec![hbh()],
        vec![dst_opts()],
        vec![ExtHeader::routing(0)],
        vec![ah()],
        vec![hbh(), dst_opts(), ExtHeader::routing(0), dst_opts()],
        vec![ExtHeader {
            kind: EXT_DEST_OPTS,
            data: vec![0; 2046],
        }],
    ];
    for ext in forwarded {
        let f = v6_with(ext.clone(), "fd77::100");
        let plain = v6_with(vec![], "fd77::100");
        let out = fx.run_frame(&f);
        assert_eq!(out.action, XdpAction::Tx, "{ext:?}");
        // Same flow, same backend as without the headers; the inner packet is intact.
        let same = fx.run_frame(&plain);
        assert_eq!(out.packet[0..6], same.packet[0..6], "{ext:?}");
        assert_eq!(out.packet[14 + 40..], f.build()[14..], "{ext:?}");
    }
    // Refused, for a VIP address, with their reasons.
    let refused = [
        (vec![ExtHeader::routing(1)], Reason::DropExtHeader),
        (vec![dst_opts(), hbh()], Reason::DropExtHeader),
        (vec![dst_opts(); 5], Reason::DropExtHeader),
        (vec![frag()], Reason::DropFragment),
        (vec![hbh(), frag()], Reason::DropFragment),
    ];
    for (ext, reason) in refused {
        let before = fx.reason(reason);
        let out = fx.run_frame(&v6_with(ext.clone(), "fd77::100"));
        assert_eq!(out.action, XdpAction::Drop, "{ext:?}");
        assert_eq!(
            fx.reason(reason),
            before + 1,
            "{ext:?} counted as {reason:?}"
        );
        // For another address: passed untouched.
        let p = v6_with(ext.clone(), "fd77::99").build();
        let out = fx.run(&p);
        assert_eq!((out.action, out.packet), (XdpAction::Pass, p), "{ext:?}");
    }
    // A header running past the payload length: malformed.
    let mut p = v6_with(vec![dst_opts()], "fd77::100").build();
    p[14 + 41] = 200;
    let before = fx.reason(Reason::DropMalformed);
    assert_eq!(fx.run(&p).action, XdpAction::Drop);
    assert_eq!(fx.reason(Reason::DropMalformed), before + 1);
    // ICMPv6 behind a destination-options header is still ICMPv6: an echo is answered.
    let mut echo = Frame::new(
        ip("fd77::10"),
        ip("fd77::100"),
        L4::EchoRequest { id: 1, seq: 1 },
    );
    echo.ext_headers = vec![dst_opts()];
    let out = fx.run_frame(&echo);
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(out.packet[14 + 48], 129, "an echo reply");
    // An established flow's later packets with a header are forwarded like the rest.
    let mut ack = v6_with(vec![hbh()], "fd77::100");
    ack.l4 = L4::Tcp {
        sport: 1000,
        dport: 80,
        flags: TCP_ACK,
    };
    assert_eq!(fx.run_frame(&ack).action, XdpAction::Tx);
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
