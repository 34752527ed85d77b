//! Capture inside the data plane: off, nothing reaches the ring; on, every packet's record
//! holds its first bytes as received and the verdict (action, reason, VIP, backend), and the
//! filters, the sampling, the snap length and the output point hold.

use std::net::IpAddr;

use lb_common::{Algorithm, ForwardMode, Reason};
use lb_dataplane::XdpAction;
use lb_dataplane::capture::{CaptureFilter, CaptureMaps, CapturedPacket, Point};
use lb_dataplane::packet::{Frame, TCP_ACK, TCP_SYN};

use crate::fixture::*;

const VIP4: &str = "10.77.0.100";
const VIP6: &str = "fd77::100";
const BES: [&str; 2] = ["10.77.0.11", "10.77.0.12"];

fn fixture() -> (Fixture, CaptureMaps) {
    let mut fx = Fixture::new(&[
        vip(
            "web",
            VIP4,
            80,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            BES.iter().map(|b| backend(b, 100)).collect(),
        ),
        vip(
            "tunnel",
            VIP4,
            443,
            Algorithm::Maglev,
            ForwardMode::Ipip,
            BES.iter().map(|b| backend(b, 100)).collect(),
        ),
        // No backend: every SYN is dropped as drop_no_backend.
        vip(
            "empty",
            VIP4,
            8080,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            vec![],
        ),
        vip(
            "web6",
            VIP6,
            80,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            vec![backend("fd77::11", 100)],
        ),
    ]);
    let mut cap = fx.dp.take_capture().expect("the capture maps");
    fx.dp
        .enable_capture(&mut cap)
        .expect("load the capture program");
    (fx, cap)
}

fn drain(cap: &mut CaptureMaps) -> Vec<CapturedPacket> {
    let mut out = Vec::new();
    while let Some(r) = cap.next_record() {
        out.push(r.expect("a well-formed record"));
    }
    out
}

fn syn(client: &str, sport: u16, port: u16) -> Frame {
    Frame::tcp(ip(client), sport, ip(VIP4), port, TCP_SYN)
}

/// A mix: forwarded (dsr-l2 and ipip), dropped (no backend), passed (not a VIP), IPv6.
fn traffic(fx: &Fixture) -> Vec<(Vec<u8>, XdpAction)> {
    let frames = [
        syn("10.1.0.1", 1000, 80),
        syn("10.1.0.2", 1001, 443),
        syn("10.2.0.1", 1002, 8080),
        Frame::tcp(ip("10.1.0.3"), 1003, ip("10.77.0.50"), 80, TCP_SYN),
        Frame::tcp(ip("fd00::5"), 1004, ip(VIP6), 80, TCP_SYN),
        syn("10.1.0.1", 1000, 80).with_payload(&[b'x'; 600]),
    ];
    frames
        .iter()
        .map(|f| {
            let bytes = f.build();
            let out = fx.run(&bytes);
            (bytes, out.action)
        })
        .collect()
}

fn id_of(fx: &Fixture, vip: &str, addr: &str) -> u32 {
    fx.prog.backend_id(vip, ip(addr)).expect("backend id")
}

#[test]
fn off_records_nothing() {
    let (fx, mut cap) = fixture();
    assert!(!cap.running().expect("flag"));
    for _ in 0..50 {
        traffic(&fx);
    }
    assert!(drain(&mut cap).is_empty(), "capture off wrote records");
    let c = cap.counters().expect("counters");
    assert_eq!((c.matched, c.written, c.lost), (0, 0, 0));
    // And after a capture stopped, nothing more is recorded.
    cap.start(&CaptureFilter::default()).expect("start");
    traffic(&fx);
    assert_eq!(drain(&mut cap).len(), 6);
    cap.stop().expect("stop");
    traffic(&fx);
    assert!(
        drain(&mut cap).is_empty(),
        "a stopped capture wrote records"
    );
}

#[test]
fn records_hold_the_packet_as_received_and_the_verdict() {
    let (fx, mut cap) = fixture();
    cap.start(&CaptureFilter {
        snap_len: 2048,
        ..Default::default()
    })
    .expect("start");
    let sent = traffic(&fx);
    let got = drain(&mut cap);
    assert_eq!(got.len(), sent.len(), "one record per packet: {got:#?}");
    for ((bytes, action), rec) in sent.iter().zip(&got) {
        assert_eq!(&rec.data, bytes, "the bytes as received");
        assert_eq!(rec.pkt_len as usize, bytes.len());
        assert_eq!(rec.action, *action);
        assert_eq!(rec.point, Point::Input);
    }
    let web = fx.prog.vip_id("web").expect("web");
    let tunnel = fx.prog.vip_id("tunnel").expect("tunnel");
    let empty = fx.prog.vip_id("empty").expect("empty");
    let web6 = fx.prog.vip_id("web6").expect("web6");
    let verdicts: Vec<_> = got
        .iter()
        .map(|r| (r.action, r.reason, r.vip_id, r.backend_id.is_some()))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (XdpAction::Tx, Some(Reason::TxForward), Some(web), true),
            (XdpAction::Tx, Some(Reason::TxForward), Some(tunnel), true),
            (
                XdpAction::Drop,
                Some(Reason::DropNoBackend),
                Some(empty),
                false
            ),
            (XdpAction::Pass, Some(Reason::PassNotVip), None, false),
            (XdpAction::Tx, Some(Reason::TxForward), Some(web6), true),
            (XdpAction::Tx, Some(Reason::TxForward), Some(web), true),
        ]
    );
    let c = cap.counters().expect("counters");
    assert_eq!((c.matched, c.written, c.lost), (6, 6, 0));
    // The backend named is the one the frame went to.
    let out = fx.run_frame(&syn("10.1.0.1", 1000, 80));
    let to = fx.backend_of(&out, &BES.map(ip));
    assert_eq!(got[0].backend_id, Some(id_of(&fx, "web", &to.to_string())));
}

#[test]
fn filters_sampling_snap_length_and_output_hold() {
    let (fx, mut cap) = fixture();
    let web = fx.prog.vip_id("web").expect("web");
    let run = |cap: &mut CaptureMaps, filter: CaptureFilter| {
        cap.start(&filter).expect("start");
        traffic(&fx);
        let got = drain(cap);
        // The kernel and the userspace copy of the filter agree on every record.
        assert!(got.iter().all(|r| filter.matches(r)), "{got:#?}");
        got
    };

    let got = run(
        &mut cap,
        CaptureFilter {
            vip_id: Some(web),
            ..Default::default()
        },
    );
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.vip_id == Some(web)));

    let be = id_of(&fx, "web", BES[0]);
    let got = run(
        &mut cap,
        CaptureFilter {
            backend_ids: vec![be],
            ..Default::default()
        },
    );
    assert!(got.iter().all(|r| r.backend_id == Some(be)), "{got:#?}");

    let drops = run(
        &mut cap,
        CaptureFilter {
            reasons: vec![Reason::DropNoBackend, Reason::DropMalformed],
            ..Default::default()
        },
    );
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].reason, Some(Reason::DropNoBackend));

    for (prefix, want) in [
        ("10.1.0.0/24", 4),
        ("10.2.0.1", 1),
        ("10.0.0.0/8", 5),
        ("fd00::/64", 1),
        ("192.0.2.0/24", 0),
    ] {
        let got = run(
            &mut cap,
            CaptureFilter {
                client: Some(prefix.parse().expect("prefix")),
                ..Default::default()
            },
        );
        assert_eq!(got.len(), want, "client {prefix}: {got:#?}");
        let p: lb_dataplane::capture::Prefix = prefix.parse().expect("prefix");
        assert!(got.iter().all(|r| p.contains(r.source().expect("IP"))));
    }

    let short = run(
        &mut cap,
        CaptureFilter {
            snap_len: 20,
            ..Default::default()
        },
    );
    assert!(short.iter().all(|r| r.data.len() == 20), "{short:#?}");
    assert!(short.iter().any(|r| r.pkt_len > 600));

    // Output: the ipip packet as it left, 20 bytes longer and addressed to the backend.
    let both = run(
        &mut cap,
        CaptureFilter {
            vip_id: fx.prog.vip_id("tunnel"),
            output: true,
            ..Default::default()
        },
    );
    assert_eq!(
        both.iter().map(|r| r.point).collect::<Vec<_>>(),
        vec![Point::Input, Point::Output]
    );
    assert_eq!(both[1].pkt_len, both[0].pkt_len + 20);
    assert_eq!(both[1].data[14 + 9], 4, "the output is IPIP");
    let to: [u8; 4] = both[1].data[14 + 16..14 + 20].try_into().expect("4 bytes");
    let be = IpAddr::from(to);
    assert_eq!(both[1].backend_id, fx.prog.backend_id("tunnel", be));

    // Sampling: one matching packet in 4 (per CPU; this thread stays on one).
    pin_to_cpu0();
    cap.start(&CaptureFilter {
        vip_id: Some(web),
        sample_every: 4,
        ..Default::default()
    })
    .expect("start");
    for i in 0..40u16 {
        fx.run_frame(&Frame::tcp(
            ip("10.3.0.1"),
            2000 + i,
            ip(VIP4),
            80,
            TCP_SYN | TCP_ACK,
        ));
    }
    traffic(&fx); // 2 more matching packets, 38 non-matching
    let got = drain(&mut cap);
    assert_eq!(got.len(), 42 / 4, "{} records", got.len());
    assert_eq!(cap.counters().expect("counters").matched, 42);
}

#[test]
fn a_full_ring_counts_what_it_loses() {
    let (fx, mut cap) = fixture();
    cap.start(&CaptureFilter {
        snap_len: 2048,
        ..Default::default()
    })
    .expect("start");
    // 4 MiB hold about 1,600 records of 2 KiB: 3,000 big packets unread overflow it.
    let big = syn("10.1.0.1", 1000, 80).with_payload(&[7u8; 1900]).build();
    for _ in 0..3000 {
        fx.run(&big);
    }
    let c = cap.counters().expect("counters");
    assert_eq!(c.matched, 3000);
    assert!(c.lost > 0, "{c:?}");
    assert_eq!(c.written + c.lost, 3000, "{c:?}");
    let got = drain(&mut cap);
    assert_eq!(got.len() as u64, c.written);
    assert!(got.iter().all(|r| r.data == big));
}
