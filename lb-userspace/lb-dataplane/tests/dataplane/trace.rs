//! `Maps::trace` against the data plane: for every algorithm, 1,000 random flows are traced,
//! then sent; the backend the program picks must be the one the trace named. Repeated SYNs
//! (retransmissions), later packets of open flows, flows of a backend that went down and
//! closing flows whose ports are reused all take part.

use std::net::IpAddr;

use lb_common::{Algorithm, FlowKey, ForwardMode, IPPROTO_TCP};
use lb_dataplane::packet::{Frame, TCP_ACK, TCP_FIN, TCP_SYN};
use lb_dataplane::trace::{Decision, FirstPacket};
use lb_dataplane::{BackendState, VipSpec, XdpAction};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::fixture::*;

const VIP: &str = "10.77.0.100";
const BES: [&str; 5] = [
    "10.77.0.11",
    "10.77.0.12",
    "10.77.0.13",
    "10.77.0.14",
    "10.77.0.15",
];
const WEIGHTS: [u32; 5] = [5, 3, 2, 1, 1];

fn spec(algorithm: Algorithm, down: Option<usize>) -> VipSpec {
    let mut backends: Vec<_> = BES
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| backend(b, w))
        .collect();
    if let Some(i) = down {
        backends[i].state = BackendState::Down;
        backends[i].weight = 0;
    }
    vip("web", VIP, 80, algorithm, ForwardMode::DsrL2, backends)
}

/// The backend id the data plane gives this packet on CPU 0, per the trace.
fn predicted(fx: &Fixture, flow: &FlowKey, first: FirstPacket) -> Option<u32> {
    let t = fx.prog.maps().trace(flow, first).expect("trace");
    match t.decision {
        Decision::Entry { backend_id } | Decision::Algorithm { backend_id } => Some(backend_id),
        Decision::PerCpu { backend_ids } => backend_ids
            .iter()
            .find(|(cpu, _)| *cpu == 0)
            .and_then(|(_, id)| *id),
        Decision::NoBackend | Decision::NotAVip => None,
    }
}

fn id_of(fx: &Fixture, addr: IpAddr) -> u32 {
    fx.prog.backend_id("web", addr).expect("backend id")
}

fn check(fx: &Fixture, flow: &FlowKey, flags: u8, what: &str) {
    let first = if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        FirstPacket::Syn
    } else {
        FirstPacket::Other
    };
    let want = predicted(fx, flow, first);
    let frame = Frame::tcp(
        flow.src_ip(),
        u16::from_be(flow.sport),
        flow.dst_ip(),
        u16::from_be(flow.dport),
        flags,
    );
    let out = fx.run_frame(&frame);
    let got = (out.action == XdpAction::Tx).then(|| id_of(fx, fx.backend_of(&out, &BES.map(ip))));
    assert_eq!(
        got,
        want,
        "{what}: the trace said {want:?}, the data plane chose {got:?} ({:?})",
        fx.prog.maps().trace(flow, first).expect("trace")
    );
}

fn random_flow(rng: &mut StdRng) -> FlowKey {
    let client = IpAddr::from([
        10,
        rng.gen_range(1..=20),
        rng.r#gen(),
        rng.gen_range(1..=254),
    ]);
    FlowKey::new(
        client,
        rng.gen_range(1024..=65535),
        ip(VIP),
        80,
        IPPROTO_TCP,
    )
}

fn thousand_flows(algorithm: Algorithm) {
    pin_to_cpu0();
    let mut fx = Fixture::new(&[spec(algorithm, None)]);
    let mut rng = StdRng::seed_from_u64(20 + algorithm as u64);
    let mut open: Vec<FlowKey> = Vec::new();
    for i in 0..1000 {
        match i % 10 {
            // A retransmitted SYN of an open flow keeps its backend.
            7 if !open.is_empty() => {
                let f = open[rng.gen_range(0..open.len())];
                check(&fx, &f, TCP_SYN, "retransmitted SYN");
            }
            // A later packet of an open flow.
            8 if !open.is_empty() => {
                let f = open[rng.gen_range(0..open.len())];
                check(&fx, &f, TCP_ACK, "established");
            }
            // A client closes, then reuses its ports for a new connection.
            9 if !open.is_empty() => {
                let f = open.swap_remove(rng.gen_range(0..open.len()));
                check(&fx, &f, TCP_FIN | TCP_ACK, "closing");
                check(&fx, &f, TCP_SYN, "ports reused after FIN");
            }
            _ => {
                let f = random_flow(&mut rng);
                check(&fx, &f, TCP_SYN, "new flow");
                open.push(f);
            }
        }
    }
    // A backend goes down: its flows move, and the trace follows.
    fx.prog
        .apply(&[spec(algorithm, Some(0))])
        .expect("reprogram");
    for f in open.iter().take(200) {
        check(&fx, f, TCP_ACK, "after a backend went down");
    }
    for _ in 0..100 {
        let f = random_flow(&mut rng);
        check(&fx, &f, TCP_SYN, "new flow after a backend went down");
    }
}

#[test]
fn trace_agrees_with_maglev() {
    thousand_flows(Algorithm::Maglev);
}

#[test]
fn trace_agrees_with_ip_hash() {
    thousand_flows(Algorithm::IpHash);
}

#[test]
fn trace_agrees_with_weighted_round_robin() {
    thousand_flows(Algorithm::WeightedRoundRobin);
}

#[test]
fn trace_agrees_with_least_connections() {
    thousand_flows(Algorithm::LeastConnections);
}

#[test]
fn trace_names_what_it_read() {
    use lb_dataplane::trace::AlgorithmTrace;
    let fx = Fixture::new(&[spec(Algorithm::Maglev, None)]);
    let flow = FlowKey::new(ip("10.9.0.1"), 4000, ip(VIP), 80, IPPROTO_TCP);
    let t = fx
        .prog
        .maps()
        .trace(&flow, FirstPacket::Syn)
        .expect("trace");
    let meta = fx.prog.vip_meta("web").expect("meta");
    assert_eq!(t.vip, Some(meta));
    assert_eq!((t.slot, t.table_len), (meta.slot & 1, meta.table_len));
    assert!(t.entry.is_none());
    let AlgorithmTrace::Hashed {
        hash,
        position,
        backend_id,
    } = t.pick
    else {
        panic!("maglev hashes: {t:?}");
    };
    assert_eq!(hash, lb_common::hash::flow_hash(&flow));
    assert_eq!(position, hash % meta.table_len);
    assert_eq!(Some(id_of(&fx, fx.table_choice("web", hash))), backend_id);
    // Once sent, the flow has an entry pointing there.
    fx.run_frame(&Frame::tcp(ip("10.9.0.1"), 4000, ip(VIP), 80, TCP_SYN));
    let t = fx
        .prog
        .maps()
        .trace(&flow, FirstPacket::Other)
        .expect("trace");
    let e = t.entry.expect("an entry");
    assert!(e.vip_valid && e.backend_usable && !e.closing);
    assert_eq!(
        t.decision,
        Decision::Entry {
            backend_id: e.backend_id
        }
    );
    // Another port of the VIP address is no VIP: the kernel gets it.
    let other = FlowKey::new(ip("10.9.0.1"), 4000, ip(VIP), 81, IPPROTO_TCP);
    let t = fx
        .prog
        .maps()
        .trace(&other, FirstPacket::Syn)
        .expect("trace");
    assert_eq!(t.decision, Decision::NotAVip);
}
