//! The connection table: flows keep their backend across changes of the backend set and
//! weights; draining keeps old flows and takes no new ones; failed or removed backends' flows
//! are re-hashed.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{Algorithm, ForwardMode};
use lb_dataplane::packet::{Frame, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use lb_dataplane::{BackendState, VipSpec};

use crate::fixture::*;

const BES: [&str; 4] = ["10.77.0.11", "10.77.0.12", "10.77.0.13", "10.77.0.14"];

fn all() -> Vec<IpAddr> {
    BES.iter().map(|b| ip(b)).collect()
}

fn spec(n: usize) -> VipSpec {
    vip(
        "web",
        "10.77.0.100",
        80,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        BES[..n].iter().map(|b| backend(b, 1)).collect(),
    )
}

fn packet(i: u16, flags: u8) -> Frame {
    Frame::tcp(ip("10.8.0.1"), 20000 + i, ip("10.77.0.100"), 80, flags)
}

const FLOWS: u16 = 400;

/// Opens FLOWS flows and returns where each went.
fn open(fx: &Fixture) -> BTreeMap<u16, IpAddr> {
    (0..FLOWS)
        .map(|i| (i, fx.backend_of(&fx.run_frame(&packet(i, TCP_SYN)), &all())))
        .collect()
}

fn follow_up(fx: &Fixture) -> BTreeMap<u16, IpAddr> {
    (0..FLOWS)
        .map(|i| (i, fx.backend_of(&fx.run_frame(&packet(i, TCP_ACK)), &all())))
        .collect()
}

#[test]
fn flows_keep_their_backend_when_the_set_changes() {
    let mut fx = Fixture::new(&[spec(3)]);
    let before = open(&fx);
    let slot = fx.prog.vip_meta("web").expect("meta").slot;
    fx.prog.apply(&[spec(4)]).expect("add a backend");
    assert_ne!(
        fx.prog.vip_meta("web").expect("meta").slot,
        slot,
        "the new table went to the other slot"
    );
    assert_eq!(
        follow_up(&fx),
        before,
        "established flows moved after a backend was added"
    );
    // New flows do reach the new backend.
    let new_flows: Vec<IpAddr> = (0..FLOWS)
        .map(|i| {
            fx.backend_of(
                &fx.run_frame(&Frame::tcp(
                    ip("10.9.0.1"),
                    30000 + i,
                    ip("10.77.0.100"),
                    80,
                    TCP_SYN,
                )),
                &all(),
            )
        })
        .collect();
    assert!(new_flows.contains(&ip(BES[3])));
    // Weights change: still sticky.
    let mut heavy = spec(4);
    heavy.backends[3].weight = 10;
    fx.prog.apply(&[heavy]).expect("reweight");
    assert_eq!(
        follow_up(&fx),
        before,
        "established flows moved after a weight change"
    );
}

#[test]
fn draining_keeps_old_flows_and_takes_no_new_ones() {
    let mut fx = Fixture::new(&[spec(3)]);
    let before = open(&fx);
    assert!(before.values().any(|b| *b == ip(BES[0])));
    let mut drained = spec(3);
    drained.backends[0].weight = 0;
    fx.prog.apply(&[drained]).expect("drain");
    assert_eq!(follow_up(&fx), before, "a draining backend lost its flows");
    for i in 0..FLOWS {
        let out = fx.run_frame(&Frame::tcp(
            ip("10.9.0.2"),
            30000 + i,
            ip("10.77.0.100"),
            80,
            TCP_SYN,
        ));
        assert_ne!(
            fx.backend_of(&out, &all()),
            ip(BES[0]),
            "a new flow went to the draining backend"
        );
    }
}

#[test]
fn a_syn_reusing_a_closed_flows_ports_is_a_new_flow() {
    // Flows on the backend about to drain: some closed (FIN or RST seen), some still open.
    let mut fx = Fixture::new(&[spec(3)]);
    let before = open(&fx);
    let on_first: Vec<u16> = before
        .iter()
        .filter(|(_, b)| **b == ip(BES[0]))
        .map(|(i, _)| *i)
        .collect();
    assert!(
        on_first.len() >= 20,
        "{} flows on {}",
        on_first.len(),
        BES[0]
    );
    let (closed, open_ones) = on_first.split_at(on_first.len() / 2);
    for (n, i) in closed.iter().enumerate() {
        let flags = if n % 2 == 0 {
            TCP_FIN | TCP_ACK
        } else {
            TCP_RST
        };
        fx.backend_of(&fx.run_frame(&packet(*i, flags)), &all());
    }
    let mut drained = spec(3);
    drained.backends[0].weight = 0;
    fx.prog.apply(&[drained]).expect("drain");
    // The client opens new connections from the closed flows' ports: new flows, so never to
    // the draining backend.
    for i in closed {
        let to = fx.backend_of(&fx.run_frame(&packet(*i, TCP_SYN)), &all());
        assert_ne!(
            to,
            ip(BES[0]),
            "port {} reopened onto the draining backend",
            20000 + i
        );
        let next = fx.backend_of(&fx.run_frame(&packet(*i, TCP_ACK)), &all());
        assert_eq!(next, to, "the reopened flow is pinned to its new backend");
    }
    // A SYN on an open flow is a retransmission: it keeps the draining backend.
    for i in open_ones {
        let to = fx.backend_of(&fx.run_frame(&packet(*i, TCP_SYN)), &all());
        assert_eq!(
            to,
            ip(BES[0]),
            "retransmitted SYN of port {} moved",
            20000 + i
        );
    }
}

#[test]
fn failed_and_removed_backends_flows_are_rehashed() {
    let mut fx = Fixture::new(&[spec(3)]);
    let before = open(&fx);
    let mut failed = spec(3);
    failed.backends[1].state = BackendState::Down;
    fx.prog.apply(&[failed.clone()]).expect("fail one");
    let after = follow_up(&fx);
    for (i, was) in &before {
        if *was == ip(BES[1]) {
            assert_ne!(
                after[i],
                ip(BES[1]),
                "flow {i} still goes to the failed backend"
            );
        } else {
            assert_eq!(after[i], *was, "flow {i} of a healthy backend moved");
        }
    }
    // Removing a backend from the list behaves the same way.
    failed.backends.remove(2);
    fx.prog.apply(&[failed]).expect("remove one");
    let again = follow_up(&fx);
    assert!(
        again.values().all(|b| *b == ip(BES[0])),
        "only backend 0 is left"
    );
}

#[test]
fn a_reused_backend_slot_does_not_inherit_old_flows() {
    let mut fx = Fixture::new(&[spec(2)]);
    let before = open(&fx);
    let old_id = fx.prog.backend_id("web", ip(BES[1])).expect("id");
    // Slots are canonical (lb_dataplane::slots): find a backend whose slot is backend 1's,
    // remove backend 1, then add that one: it takes the freed slot with its own generation.
    let taker = (0..=u16::MAX)
        .map(|i| format!("10.78.{}.{}", i >> 8, i & 255))
        .find(|a| lb_dataplane::slots::home("web", ip(a)) == old_id)
        .expect("an address whose home slot is backend 1's");
    let mut s = spec(2);
    s.backends.remove(1);
    fx.prog.apply(&[s.clone()]).expect("remove");
    s.backends.push(backend(&taker, 1));
    fx.prog.apply(&[s]).expect("add");
    assert_eq!(
        fx.prog.backend_id("web", ip(&taker)),
        Some(old_id),
        "the slot is reused"
    );
    // A flow of the removed backend is hashed afresh, and may land on any live backend, the
    // taker too (a new decision, not an inherited entry).
    let mut live = all();
    live.push(ip(&taker));
    let after: BTreeMap<u16, IpAddr> = (0..FLOWS)
        .map(|i| (i, fx.backend_of(&fx.run_frame(&packet(i, TCP_ACK)), &live)))
        .collect();
    for (i, was) in &before {
        if *was == ip(BES[0]) {
            assert_eq!(after[i], *was, "flow {i} moved");
        }
    }
    // Flows of the removed backend were re-hashed, not silently handed to the slot's new owner:
    // their connection entries now carry the new generation.
    let gen_now = fx.prog.maps().backend(old_id).expect("backend").generation;
    for entry in fx.prog.maps().conns().iter().map(|(_, e)| e) {
        if u32::from(entry.backend) == old_id {
            assert_eq!(entry.generation, gen_now);
        }
    }
}
