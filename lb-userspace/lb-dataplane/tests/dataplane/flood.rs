//! The LRU flood guard: above `max_new_flows_per_cpu` new flows per second on a CPU, new flows
//! of `maglev` and `ip-hash` VIPs are forwarded by the hash without a connection-table entry
//! (counted as `tx_forward_unpinned`); `weighted-round-robin` and `least-connections` always
//! insert; with the guard off every new flow is inserted.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_common::{
    Algorithm, FlowKey, ForwardMode, Reason,
    hash::{flow_hash, source_hash},
};
use lb_dataplane::packet::{Frame, TCP_ACK, TCP_SYN};

use crate::fixture::*;

const BES: [&str; 3] = ["10.77.0.11", "10.77.0.12", "10.77.0.13"];
const VIP: &str = "10.77.0.100";
const LIMIT: u32 = 5;
const FLOWS: u32 = 60;

fn addrs() -> Vec<IpAddr> {
    BES.iter().map(|b| ip(b)).collect()
}

fn fixture(algorithm: Algorithm, limit: u32) -> Fixture {
    // Per-CPU windows: one CPU, so one window sees every flow.
    pin_to_cpu0();
    let backends = BES.iter().map(|b| backend(b, 1)).collect();
    let mut fx = Fixture::new(&[vip("web", VIP, 80, algorithm, ForwardMode::DsrL2, backends)]);
    fx.set_flood_limit(limit);
    fx
}

fn client(i: u32) -> String {
    format!("10.3.{}.{}", i / 200, i % 200 + 1)
}

fn flow(i: u32) -> FlowKey {
    FlowKey::new(ip(&client(i)), 20000 + i as u16, ip(VIP), 80, 6)
}

fn packet(i: u32, flags: u8) -> Frame {
    Frame::tcp(ip(&client(i)), 20000 + i as u16, ip(VIP), 80, flags)
}

/// Sends `FLOWS` new flows (SYNs); returns how many got a connection-table entry, and whether
/// the whole burst ran inside one guard window (one second).
fn burst(fx: &Fixture, hash: impl Fn(&FlowKey) -> u32) -> (u32, bool) {
    let started = Instant::now();
    let mut pinned = 0;
    for i in 0..FLOWS {
        let out = fx.run_frame(&packet(i, TCP_SYN));
        // Pinned or not, the flow goes where the table sends its hash.
        assert_eq!(
            fx.backend_of(&out, &addrs()),
            fx.table_choice("web", hash(&flow(i))),
            "flow {i}"
        );
        if fx.prog.maps().conn(&flow(i)).is_some() {
            pinned += 1;
        }
    }
    // The window is one second of kernel time: a burst that took longer (a very slow machine)
    // may have opened a second window, which only loosens the counts below.
    (pinned, started.elapsed() < Duration::from_millis(900))
}

fn check_stateless(algorithm: Algorithm, hash: impl Fn(&FlowKey) -> u32) {
    let fx = fixture(algorithm, LIMIT);
    let (pinned, one_window) = burst(&fx, &hash);
    let unpinned = fx.reason(Reason::TxForwardUnpinned);
    assert_eq!(
        pinned as u64 + unpinned,
        FLOWS as u64,
        "every new flow is either pinned or counted unpinned"
    );
    assert_eq!(
        fx.reason(Reason::TxForward),
        pinned as u64,
        "pinned flows count as tx_forward"
    );
    if one_window {
        assert_eq!(
            pinned, LIMIT,
            "the first {LIMIT} flows of the window are pinned"
        );
    } else {
        assert!(
            pinned >= LIMIT && unpinned > 0,
            "pinned {pinned}, unpinned {unpinned}"
        );
    }
    // Every flow opened so far is pinned or not; the first ones are.
    for i in 0..LIMIT {
        assert!(fx.prog.maps().conn(&flow(i)).is_some(), "flow {i} pinned");
    }
    // The VIP counters still see every new connection.
    let id = fx.prog.vip_id("web").expect("vip");
    assert_eq!(
        fx.prog.maps().vip_totals(id).expect("totals").new_conns,
        FLOWS as u64
    );
    // An unpinned flow's next packet (an ACK) goes to the same backend by the hash again.
    let last = FLOWS - 1;
    assert!(fx.prog.maps().conn(&flow(last)).is_none() || !one_window);
    let out = fx.run_frame(&packet(last, TCP_ACK));
    assert_eq!(
        fx.backend_of(&out, &addrs()),
        fx.table_choice("web", hash(&flow(last)))
    );
    // A pinned flow keeps being forwarded from its entry (no new-flow count).
    let before = fx.prog.maps().vip_totals(id).expect("totals").new_conns;
    fx.run_frame(&packet(0, TCP_ACK));
    assert_eq!(
        fx.prog.maps().vip_totals(id).expect("totals").new_conns,
        before
    );
}

#[test]
fn maglev_flows_beyond_the_limit_are_forwarded_but_not_pinned() {
    check_stateless(Algorithm::Maglev, flow_hash);
}

#[test]
fn ip_hash_flows_beyond_the_limit_are_forwarded_but_not_pinned() {
    check_stateless(Algorithm::IpHash, source_hash);
}

fn check_always_pinned(algorithm: Algorithm, limit: u32) {
    let fx = fixture(algorithm, limit);
    for i in 0..FLOWS {
        let out = fx.run_frame(&packet(i, TCP_SYN));
        fx.backend_of(&out, &addrs());
        assert!(
            fx.prog.maps().conn(&flow(i)).is_some(),
            "{algorithm:?}, limit {limit}: flow {i} has no entry"
        );
    }
    assert_eq!(fx.reason(Reason::TxForwardUnpinned), 0);
    assert_eq!(fx.reason(Reason::TxForward), FLOWS as u64);
}

#[test]
fn weighted_round_robin_and_least_connections_always_insert() {
    // Their choice depends on state (a cursor, live counts): a flow's next packet could not
    // find its backend again without the entry.
    check_always_pinned(Algorithm::WeightedRoundRobin, LIMIT);
    check_always_pinned(Algorithm::LeastConnections, LIMIT);
}

#[test]
fn with_the_guard_off_every_flow_is_inserted() {
    check_always_pinned(Algorithm::Maglev, 0);
    check_always_pinned(Algorithm::IpHash, 0);
}

#[test]
fn entry_times_in_jiffies_convert_to_monotonic_time() {
    // Entries record jiffies (no clock helper on a table hit); the sweep places them on the
    // monotonic clock with the anchor every new flow writes. A wrong conversion would expire
    // live flows or keep dead ones.
    let fx = fixture(Algorithm::Maglev, 0);
    assert_eq!(fx.prog.maps().clock_anchor(), None, "no new flow yet");
    let before = lb_dataplane::Maps::coarse_now_ns();
    fx.run_frame(&packet(1, TCP_SYN));
    fx.run_frame(&packet(1, TCP_ACK));
    let after = lb_dataplane::Maps::coarse_now_ns();
    let anchor = fx
        .prog
        .maps()
        .clock_anchor()
        .expect("a new flow writes the anchor");
    let entry = fx.prog.maps().conn(&flow(1)).expect("entry");
    let tick = lb_dataplane::Maps::jiffy_ns();
    let seen = lb_dataplane::Maps::last_seen_ns(anchor, tick, &entry);
    assert!(
        seen + 2 * tick >= before && seen <= after + 2 * tick,
        "last seen {seen} ns outside [{before}, {after}] (tick {tick} ns, anchor {anchor:?}, entry {entry:?})"
    );
    // An entry a minute older converts to a minute earlier.
    let old = lb_common::ConnEntry {
        last_seen: entry.last_seen - 60_000_000_000 / tick,
        ..entry
    };
    let old_seen = lb_dataplane::Maps::last_seen_ns(anchor, tick, &old);
    assert_eq!(seen - old_seen, (60_000_000_000 / tick) * tick);
}
