//! Each algorithm's choice for new flows, checked against the tables and counters it reads.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{
    Algorithm, FlowKey, ForwardMode,
    hash::{flow_hash, source_hash},
};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, TCP_SYN};
use lb_dataplane::wrr;

use crate::fixture::*;

const BES: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];

fn addrs() -> Vec<IpAddr> {
    BES.iter().map(|b| ip(b)).collect()
}

fn fixture(algorithm: Algorithm, weights: [u32; 3]) -> Fixture {
    let backends = BES
        .iter()
        .zip(weights)
        .map(|(b, w)| backend(b, w))
        .collect();
    Fixture::new(&[vip(
        "web",
        "10.77.0.100",
        80,
        algorithm,
        ForwardMode::DsrL2,
        backends,
    )])
}

fn syn(client: &str, sport: u16) -> Frame {
    Frame::tcp(ip(client), sport, ip("10.77.0.100"), 80, TCP_SYN)
}

#[test]
fn maglev_follows_the_table_and_spreads_by_weight() {
    let fx = fixture(Algorithm::Maglev, [2, 1, 1]);
    let mut counts: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for i in 0..2000u32 {
        let client = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        let out = fx.run_frame(&syn(&client, 1024 + (i % 5000) as u16));
        let got = fx.backend_of(&out, &addrs());
        let flow = FlowKey::new(
            ip(&client),
            1024 + (i % 5000) as u16,
            ip("10.77.0.100"),
            80,
            6,
        );
        assert_eq!(got, fx.table_choice("web", flow_hash(&flow)));
        *counts.entry(got).or_default() += 1;
    }
    let heavy = counts[&ip(BES[0])] as f64;
    let light = (counts[&ip(BES[1])] + counts[&ip(BES[2])]) as f64 / 2.0;
    let ratio = heavy / light;
    assert!(
        (1.6..2.4).contains(&ratio),
        "weight 2 vs 1 got ratio {ratio:.2} ({counts:?})"
    );
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend() {
    let fx = fixture(Algorithm::IpHash, [1, 1, 1]);
    let mut seen = std::collections::BTreeSet::new();
    for c in 1..=60u8 {
        let client = format!("10.2.0.{c}");
        let flow = FlowKey::new(ip(&client), 1, ip("10.77.0.100"), 80, 6);
        let want = fx.table_choice("web", source_hash(&flow));
        for sport in [1000u16, 2000, 3000, 4000] {
            let out = fx.run_frame(&syn(&client, sport));
            assert_eq!(
                fx.backend_of(&out, &addrs()),
                want,
                "client {client} port {sport}"
            );
        }
        seen.insert(want);
    }
    assert_eq!(seen.len(), 3, "60 clients spread over all backends");
}

#[test]
fn weighted_round_robin_cycles_the_smooth_sequence() {
    pin_to_cpu0();
    let fx = fixture(Algorithm::WeightedRoundRobin, [3, 2, 1]);
    let ids: Vec<(u32, u32)> = BES
        .iter()
        .zip([3, 2, 1])
        .map(|(b, w)| (fx.prog.backend_id("web", ip(b)).expect("id"), w))
        .collect();
    let period = wrr::sequence(&ids, lb_common::MAX_TABLE as usize).expect("sequence");
    assert_eq!(period.len(), 6);
    let by_id: BTreeMap<u32, IpAddr> = ids
        .iter()
        .zip(BES)
        .map(|((id, _), b)| (*id, ip(b)))
        .collect();
    for i in 0..60u16 {
        let out = fx.run_frame(&syn("10.3.0.1", 2000 + i));
        let want = by_id[&period[i as usize % period.len()]];
        assert_eq!(fx.backend_of(&out, &addrs()), want, "new flow #{i}");
    }
}

#[test]
fn least_connections_picks_fewest_per_weight() {
    let mut fx = fixture(Algorithm::LeastConnections, [2, 1, 1]);
    let ids: Vec<u32> = BES
        .iter()
        .map(|b| fx.prog.backend_id("web", ip(b)).expect("id"))
        .collect();
    // 5/2 = 2.5, 3/1, 1/1: backend 2 has the fewest per unit of weight.
    for (bid, n) in ids.iter().zip([5u64, 3, 1]) {
        fx.prog
            .maps_mut()
            .set_lc_connections(*bid, n)
            .expect("set count");
    }
    let out = fx.run_frame(&syn("10.4.0.1", 1000));
    assert_eq!(fx.backend_of(&out, &addrs()), ip(BES[2]));
    assert_eq!(
        fx.prog.maps().lc_connections(ids[2]).expect("count"),
        2,
        "the data plane counts the new flow"
    );
    // Now 2.5, 3, 2 -> backend 2 again; then 2.5, 3, 3 -> backend 0 (5/2 < 3/1).
    let out = fx.run_frame(&syn("10.4.0.1", 1001));
    assert_eq!(fx.backend_of(&out, &addrs()), ip(BES[2]));
    let out = fx.run_frame(&syn("10.4.0.1", 1002));
    assert_eq!(fx.backend_of(&out, &addrs()), ip(BES[0]));
    // A packet of an existing flow does not count again.
    let out = fx.run_frame(&syn("10.4.0.1", 1002));
    assert_eq!(out.action, XdpAction::Tx);
    assert_eq!(fx.prog.maps().lc_connections(ids[0]).expect("count"), 6);
}

#[test]
fn least_connections_spreads_equal_backends() {
    let fx = fixture(Algorithm::LeastConnections, [1, 1, 1]);
    let mut counts: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for i in 0..300u16 {
        let out = fx.run_frame(&syn("10.5.0.1", 3000 + i));
        *counts.entry(fx.backend_of(&out, &addrs())).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100],
        "{counts:?}"
    );
}

#[test]
fn two_nodes_with_the_same_config_choose_alike() {
    // Same backends listed in a different order on the second node.
    let a = fixture(Algorithm::Maglev, [1, 1, 1]);
    let mut rev: Vec<_> = BES.iter().map(|b| backend(b, 1)).collect();
    rev.reverse();
    let b = Fixture::new(&[vip(
        "web",
        "10.77.0.100",
        80,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        rev,
    )]);
    for i in 0..500u16 {
        let f = syn("10.6.0.9", 10000 + i);
        let (x, y) = (a.run_frame(&f), b.run_frame(&f));
        assert_eq!(
            a.backend_of(&x, &addrs()),
            b.backend_of(&y, &addrs()),
            "flow {i}"
        );
    }
}

#[test]
fn a_retransmitted_syn_keeps_its_backend() {
    // Round-robin would hand a second SYN to the next backend: the connection table must win.
    let fx = fixture(Algorithm::WeightedRoundRobin, [1, 1, 1]);
    for sport in 7000..7030u16 {
        let first = fx.backend_of(&fx.run_frame(&syn("10.7.0.1", sport)), &addrs());
        let again = fx.backend_of(&fx.run_frame(&syn("10.7.0.1", sport)), &addrs());
        assert_eq!(first, again, "SYN retransmission of port {sport} moved");
    }
    let id = fx.prog.vip_id("web").expect("vip");
    assert_eq!(fx.prog.maps().vip_totals(id).expect("stats").new_conns, 30);
}

/// Two balancers learn the same backends one at a time in different orders (as registrations
/// arrive), one of them after a removal and re-addition: their maps end up byte-identical
/// (canonical slots and generations, lb_dataplane::slots), so every flow hashes alike.
#[test]
fn backends_learned_in_any_order_give_identical_maps() {
    let many: Vec<String> = (0..40).map(|i| format!("10.77.1.{}", i + 1)).collect();
    let grow = |order: &[usize], churn: bool| {
        let mut fx = Fixture::new(&[vip(
            "web",
            "10.77.0.100",
            80,
            Algorithm::Maglev,
            ForwardMode::DsrL2,
            vec![],
        )]);
        let mut list = Vec::new();
        for &i in order {
            list.push(backend(&many[i], 1));
            if churn && list.len() == 20 {
                // A backend leaves and comes back later.
                let gone = list.remove(3);
                fx.prog.apply(&[spec_of(&list)]).expect("remove");
                list.push(gone);
            }
            fx.prog.apply(&[spec_of(&list)]).expect("apply");
        }
        fx
    };
    let forward: Vec<usize> = (0..40).collect();
    let mut shuffled: Vec<usize> = (0..40).map(|i| (i * 17 + 5) % 40).collect();
    shuffled.rotate_left(7);
    let (a, b) = (grow(&forward, false), grow(&shuffled, true));
    for addr in &many {
        let (ia, ib) = (
            a.prog.backend_id("web", ip(addr)),
            b.prog.backend_id("web", ip(addr)),
        );
        assert_eq!(ia, ib, "{addr}: slots differ");
        let id = ia.expect("slot");
        assert_eq!(
            a.prog.maps().backend(id).expect("entry"),
            b.prog.maps().backend(id).expect("entry"),
            "{addr}: entries differ"
        );
    }
    for id in 0..lb_common::MAX_BACKENDS {
        assert_eq!(
            a.prog.maps().backend(id).expect("entry"),
            b.prog.maps().backend(id).expect("entry"),
            "slot {id} differs"
        );
    }
    let (ma, mb) = (
        a.prog.vip_meta("web").expect("vip"),
        b.prog.vip_meta("web").expect("vip"),
    );
    assert_eq!((ma.id, ma.table_len), (mb.id, mb.table_len));
    for pos in (0..ma.table_len).step_by(11) {
        assert_eq!(
            a.prog
                .maps()
                .table_entry(ma.id, ma.slot, pos)
                .expect("entry"),
            b.prog
                .maps()
                .table_entry(mb.id, mb.slot, pos)
                .expect("entry"),
            "table position {pos}"
        );
    }
}

fn spec_of(backends: &[lb_dataplane::BackendSpec]) -> lb_dataplane::VipSpec {
    vip(
        "web",
        "10.77.0.100",
        80,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        backends.to_vec(),
    )
}
