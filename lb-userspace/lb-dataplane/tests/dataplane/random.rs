//! 100,000 random packets: random bytes of random lengths, and mutations of valid VIP
//! packets (flipped bytes, cut or padded frames, IP length fields rewritten, IPv6 extension
//! headers). For every packet a reference model in userspace ([`crate::model`]) decides what
//! the program must do: pass, drop, forward to which backend, or answer, and which reason it
//! counts. The program must agree on every packet; it must also leave passed packets
//! untouched and transmit only well-formed frames.

use std::net::IpAddr;

use lb_common::{Algorithm, ForwardMode, IPPROTO_ICMPV6, IPPROTO_UDP, Reason};
use lb_dataplane::packet::{
    EXT_AH, EXT_DEST_OPTS, EXT_FRAGMENT, EXT_HOP_BY_HOP, ExtHeader, Frame, L4, TCP_ACK, TCP_FIN,
    TCP_RST, TCP_SYN, checksum, ipv4_header_ok, l3_offset, pseudo_sum,
};
use lb_dataplane::{LoadOptions, VipSpec, XdpAction};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::fixture::*;
use crate::model::{Model, Verdict};

/// Small enough that many mutated IPv4 `ipip` packets exceed it and are answered with ICMP
/// "fragmentation needed" (IPv6 ones are then too short to quote and are dropped).
const BACKEND_MTU: u32 = 120;

fn vips() -> Vec<VipSpec> {
    let mut udp = vip(
        "dns",
        "10.77.0.101",
        53,
        Algorithm::IpHash,
        ForwardMode::Ipip,
        vec![backend("10.77.0.13", 1)],
    );
    udp.proto = IPPROTO_UDP;
    vec![
        vip(
            "web",
            "10.77.0.100",
            80,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            vec![backend("10.77.0.11", 1), backend("10.77.0.12", 2)],
        ),
        vip(
            "any",
            "10.77.0.100",
            0,
            Algorithm::WeightedRoundRobin,
            ForwardMode::Ipip,
            vec![backend("10.77.0.11", 1), backend("10.77.0.14", 2)],
        ),
        udp,
        vip(
            "web6",
            "fd77::100",
            80,
            Algorithm::LeastConnections,
            ForwardMode::Ipip,
            vec![backend("fd77::11", 1), backend("fd77::12", 1)],
        ),
        vip(
            "dsr6",
            "fd77::101",
            0,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            vec![backend("fd77::13", 1), backend("fd77::14", 1)],
        ),
    ]
}

fn fixture(vips: &[VipSpec]) -> Fixture {
    // Large enough that the LRU never evicts during the run (the model keeps every entry).
    let mut fx = Fixture::with_options(
        vips,
        LoadOptions {
            conn_table_size: 262_144,
            ..LoadOptions::default()
        },
    );
    fx.set_backend_mtu(BACKEND_MTU);
    fx
}

/// Flags of a TCP seed: mostly new flows, also packets of flows that may be established.
fn tcp_flags(rng: &mut StdRng) -> u8 {
    [
        TCP_SYN,
        TCP_SYN,
        TCP_ACK,
        TCP_SYN | TCP_ACK,
        TCP_FIN | TCP_ACK,
        TCP_RST,
    ][rng.gen_range(0..6)]
}

/// A source port: often from a small set, so flows repeat and hit the connection table.
fn sport(rng: &mut StdRng) -> u16 {
    if rng.gen_bool(0.5) {
        rng.gen_range(1000..1040)
    } else {
        rng.gen_range(1..65535u16)
    }
}

fn ext_header(rng: &mut StdRng) -> ExtHeader {
    match rng.gen_range(0..7) {
        0 => ExtHeader::padded(EXT_HOP_BY_HOP),
        1 | 2 => ExtHeader::padded(EXT_DEST_OPTS),
        3 => ExtHeader::routing(0),
        4 => ExtHeader::routing(rng.gen_range(1..3)),
        5 => ExtHeader {
            kind: EXT_AH,
            data: vec![0; 10],
        },
        _ => ExtHeader {
            kind: EXT_FRAGMENT,
            data: vec![0, 0, 0, 0, 0, 1],
        },
    }
}

fn seeds(rng: &mut StdRng) -> Frame {
    let sport = sport(rng);
    let mut f = match rng.gen_range(0..8) {
        0 => Frame::tcp(ip("10.9.9.9"), sport, ip("10.77.0.100"), 80, tcp_flags(rng)),
        1 => Frame::tcp(
            ip("10.9.9.9"),
            sport,
            ip("10.77.0.100"),
            rng.r#gen(),
            tcp_flags(rng),
        ),
        // Around BACKEND_MTU: some fit, some are answered with "fragmentation needed".
        2 => Frame::udp(ip("10.9.9.9"), sport, ip("10.77.0.101"), 53)
            .with_payload(&vec![7; rng.gen_range(20..120)]),
        3 => Frame::tcp(ip("fd00::9"), sport, ip("fd77::100"), 80, tcp_flags(rng)),
        4 => Frame::udp(ip("fd00::9"), sport, ip("fd77::101"), 9),
        5 => Frame::new(
            ip("10.9.9.9"),
            ip("10.77.0.100"),
            L4::EchoRequest { id: 1, seq: 2 },
        ),
        6 => {
            // An error about a reply of a flow that may be in the table.
            let mut quoted = Frame::tcp(ip("10.77.0.100"), 80, ip("10.9.9.9"), sport, TCP_ACK)
                .build()[14..]
                .to_vec();
            quoted.truncate(28);
            Frame::new(
                ip("10.77.0.1"),
                ip("10.77.0.100"),
                L4::Icmp {
                    kind: 3,
                    code: 4,
                    rest: [0, 0, 5, 0],
                    body: quoted,
                },
            )
        }
        _ => Frame::tcp(ip("fd00::9"), sport, ip("fd77::101"), 443, tcp_flags(rng)),
    };
    if rng.gen_bool(0.2) {
        f.vlan = Some(rng.gen_range(1..4095));
    }
    if rng.gen_bool(0.2) && f.src.is_ipv4() {
        f.ip_options = vec![1; rng.gen_range(1..40)];
    }
    if rng.gen_bool(0.3) && f.src.is_ipv6() {
        f.ext_headers = (0..rng.gen_range(1..6)).map(|_| ext_header(rng)).collect();
    }
    f
}

/// Rewrites the IP length field of `p` (IPv4 total length or IPv6 payload length) by a
/// small amount either way, or to a random value.
fn mutate_ip_length(rng: &mut StdRng, p: &mut [u8]) {
    let Some(l3) = l3_offset(p) else { return };
    let at = match p.get(l3).map(|b| b >> 4) {
        Some(4) => l3 + 2,
        Some(6) => l3 + 4,
        _ => return,
    };
    let Some(field) = p.get(at..at + 2) else {
        return;
    };
    let old = u16::from_be_bytes([field[0], field[1]]);
    let new = if rng.gen_bool(0.8) {
        old.wrapping_add_signed(rng.gen_range(-24..24))
    } else {
        rng.r#gen()
    };
    p[at..at + 2].copy_from_slice(&new.to_be_bytes());
}

fn well_formed_tx(fx: &Fixture, input: &[u8], out: &[u8]) -> Result<(), String> {
    if out.len() < 14 {
        return Err(format!("TX of {} bytes", out.len()));
    }
    let dst: [u8; 6] = out[0..6].try_into().map_err(|_| "mac")?;
    let backend_macs: Vec<[u8; 6]> = fx.prog.backend_ids().map(|(_, a, _)| mac_of(a)).collect();
    if input.len() >= 12 && dst == input[6..12] {
        // An echo reply or a "too big", back to the sender.
        return icmp_reply_ok(input, out);
    }
    if !backend_macs.contains(&dst) {
        return Err(format!("TX to unknown MAC {dst:02x?}"));
    }
    let l3 = l3_offset(out).ok_or("no ethertype")?;
    let ethertype = u16::from_be_bytes([out[l3 - 2], out[l3 - 1]]);
    match (ethertype, out.get(l3 + 9), out.get(l3 + 6)) {
        (0x0800, Some(4), _) => {
            if !ipv4_header_ok(out, l3) {
                return Err("outer IPv4 checksum".into());
            }
            let total = u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]) as usize;
            if total != out.len() - l3 {
                return Err(format!("outer total length {total} != {}", out.len() - l3));
            }
        }
        (0x86dd, _, Some(41)) => {
            let payload = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) as usize;
            if payload != out.len() - l3 - 40 {
                return Err("outer payload length".into());
            }
        }
        _ => {
            // dsr-l2: only the MACs may differ.
            if out[12..] != input[12..] {
                return Err("dsr-l2 changed more than the MACs".into());
            }
        }
    }
    Ok(())
}

/// A frame sent back to the sender must be a whole ICMP message: IP lengths inside the frame,
/// a valid IPv4 header checksum, and a valid ICMP / ICMPv6 checksum. An echo reply is the
/// request patched in place, so its ICMP checksum is valid exactly when the request's was
/// (the balancer does not sum whole echo payloads, and never masks a corrupted one).
fn icmp_reply_ok(input: &[u8], out: &[u8]) -> Result<(), String> {
    let l3 = l3_offset(out).ok_or("reply: no ethertype")?;
    let l4 = if out[l3] >> 4 == 4 {
        l3 + (out[l3] & 0x0f) as usize * 4
    } else {
        l3 + 40
    };
    let echo = matches!(out.get(l4), Some(0) | Some(129));
    let valid_icmp = |frame: &[u8]| icmp_checksum_ok(frame);
    if echo && !valid_icmp(input)? {
        return match valid_icmp(out)? {
            true => Err("echo reply to a corrupted request has a valid checksum".into()),
            false => Ok(()),
        };
    }
    if !valid_icmp(out)? {
        return Err("reply: ICMP checksum".into());
    }
    Ok(())
}

/// Checks lengths and the IPv4 header checksum (errors), and returns whether the ICMP /
/// ICMPv6 checksum over the IP packet's payload verifies.
fn icmp_checksum_ok(out: &[u8]) -> Result<bool, String> {
    let l3 = l3_offset(out).ok_or("reply: no ethertype")?;
    let ethertype = u16::from_be_bytes([out[l3 - 2], out[l3 - 1]]);
    match ethertype {
        0x0800 => {
            if !ipv4_header_ok(out, l3) {
                return Err("reply: IPv4 header checksum".into());
            }
            let ihl = (out[l3] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]) as usize;
            if total > out.len() - l3 || total < ihl + 8 || out[l3 + 9] != 1 {
                return Err(format!("reply: total length {total} or protocol"));
            }
            Ok(checksum(&out[l3 + ihl..l3 + total], 0) == 0)
        }
        0x86dd => {
            let payload = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) as usize;
            if payload > out.len() - l3 - 40 || payload < 8 || out[l3 + 6] != IPPROTO_ICMPV6 {
                return Err("reply: payload length or next header".into());
            }
            let addr = |at: usize| -> IpAddr {
                let o: [u8; 16] = out[at..at + 16].try_into().expect("16 bytes");
                IpAddr::from(o)
            };
            let sum = pseudo_sum(addr(l3 + 8), addr(l3 + 24), IPPROTO_ICMPV6, payload);
            Ok(checksum(&out[l3 + 40..l3 + 40 + payload], sum) == 0)
        }
        other => Err(format!("reply with ethertype {other:#06x}")),
    }
}

#[test]
fn hundred_thousand_random_packets() {
    // One CPU: the round-robin cursor is per CPU, and the model follows one sequence.
    pin_to_cpu0();
    let vips = vips();
    let fx = fixture(&vips);
    let mut model = Model::new(&vips, BACKEND_MTU);
    let mut rng = StdRng::seed_from_u64(0x005e_ed1b);
    let (mut tx, mut pass, mut drop) = (0u32, 0u32, 0u32);
    let mut reasons = fx.prog.maps().reasons().expect("read REASONS");
    let mut by_reason = std::collections::BTreeMap::<&str, u32>::new();
    let mut backends_seen = std::collections::BTreeSet::new();
    for i in 0..100_000u32 {
        let pkt: Vec<u8> = match i % 3 {
            0 => {
                let len = rng.gen_range(0..160);
                (0..len).map(|_| rng.r#gen()).collect()
            }
            _ => {
                let mut p = seeds(&mut rng).build();
                for _ in 0..rng.gen_range(1..4) {
                    match rng.gen_range(0..6) {
                        0 if !p.is_empty() => {
                            let at = rng.gen_range(0..p.len());
                            p[at] = rng.r#gen();
                        }
                        1 => p.truncate(rng.gen_range(0..=p.len())),
                        // Random bytes, or zeros as Ethernet pads a short frame.
                        2 => p.extend((0..rng.gen_range(1..20)).map(|_| rng.r#gen::<u8>())),
                        3 => p.extend(std::iter::repeat_n(0, rng.gen_range(1..20))),
                        4 => mutate_ip_length(&mut rng, &mut p),
                        _ => {}
                    }
                }
                p
            }
        };
        if pkt.len() < 14 {
            // The kernel refuses test-run input shorter than an Ethernet header.
            continue;
        }
        let want = model.decide(&fx, &pkt);
        let out = fx.run(&pkt);
        let after = fx.prog.maps().reasons().expect("read REASONS");
        let counted: Vec<Reason> = reasons
            .iter()
            .zip(&after)
            .filter(|((_, a), (_, b))| b != a)
            .map(|((r, _), _)| *r)
            .collect();
        reasons = after;
        let context = || format!("packet {i}: model says {want:?}\n in: {pkt:02x?}");
        assert_eq!(
            counted,
            [want.reason()],
            "{}\nthe program counted {counted:?}, action {:?}",
            context(),
            out.action
        );
        *by_reason.entry(want.reason().name()).or_default() += 1;
        match (&want, out.action) {
            (Verdict::Pass(_), XdpAction::Pass) => {
                assert_eq!(
                    out.packet,
                    pkt,
                    "{}: PASS must leave it untouched",
                    context()
                );
                pass += 1;
            }
            (Verdict::Drop(_), XdpAction::Drop) => drop += 1,
            (Verdict::Forward { .. } | Verdict::Reply(_), XdpAction::Tx) => {
                if let Err(e) = well_formed_tx(&fx, &pkt, &out.packet) {
                    panic!("{}\nmalformed TX: {e}\nout: {:02x?}", context(), out.packet);
                }
                let dst = &out.packet[0..6];
                if let Verdict::Forward { backend, .. } = want {
                    let mac = mac_of(backend);
                    assert_eq!(dst, mac, "{}: forwarded to the wrong backend", context());
                    backends_seen.insert(backend);
                } else {
                    assert_eq!(dst, &pkt[6..12], "{}: a reply goes back", context());
                }
                tx += 1;
            }
            (want, got) => panic!(
                "{}\nthe model says {want:?}, the program {got:?}",
                context()
            ),
        }
    }
    eprintln!("random packets: {tx} TX, {pass} PASS, {drop} DROP; by reason: {by_reason:?}");
    for r in [
        Reason::TxTooBig,
        Reason::TxEchoReply,
        Reason::TxIcmpError,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropExtHeader,
        Reason::PassTruncated,
        Reason::PassNonIp,
    ] {
        assert!(
            by_reason.get(r.name()).copied().unwrap_or(0) > 50,
            "{} exercised: {by_reason:?}",
            r.name()
        );
    }
    assert!(
        by_reason.get(Reason::TxTooBig.name()).copied().unwrap_or(0) > 1_000,
        "the too-big answer exercised: {by_reason:?}"
    );
    assert!(
        tx > 10_000 && pass > 10_000 && drop > 1_000,
        "every outcome exercised: {tx} TX, {pass} PASS, {drop} DROP"
    );
    // Every backend of every VIP got traffic (both of the stateful algorithms' choices).
    let all: Vec<_> = vips
        .iter()
        .flat_map(|v| v.backends.iter().map(|b| b.addr))
        .collect();
    for b in all {
        assert!(backends_seen.contains(&b), "backend {b} never chosen");
    }
}
