//! The sweep of the real `lbd` over a connection table filled through the pinned map: flows
//! idle past their protocol's limit (or closing past `closing_idle`) are deleted, the others
//! are counted per backend in `/v1/stats` and in the least-connections counters.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use lb_common::{CONN_F_CLOSING, ConnEntry, FlowKey, IPPROTO_TCP, IPPROTO_UDP};
use lb_dataplane::Maps;

use crate::{lab::*, maps};

struct Kind {
    backend: &'static str,
    proto: u8,
    closing: bool,
    age_s: u64,
    count: u32,
    expires: bool,
}

/// The lab's `[sweep]` uses the defaults: TCP 300 s, UDP 30 s, closing 10 s.
const KINDS: &[Kind] = &[
    Kind {
        backend: "10.77.0.11",
        proto: IPPROTO_TCP,
        closing: false,
        age_s: 0,
        count: 30,
        expires: false,
    },
    Kind {
        backend: "10.77.0.11",
        proto: IPPROTO_TCP,
        closing: false,
        age_s: 200,
        count: 20,
        expires: false,
    },
    Kind {
        backend: "10.77.0.11",
        proto: IPPROTO_UDP,
        closing: false,
        age_s: 5,
        count: 10,
        expires: false,
    },
    Kind {
        backend: "10.77.0.12",
        proto: IPPROTO_TCP,
        closing: false,
        age_s: 0,
        count: 25,
        expires: false,
    },
    Kind {
        backend: "10.77.0.12",
        proto: IPPROTO_UDP,
        closing: false,
        age_s: 5,
        count: 5,
        expires: false,
    },
    Kind {
        backend: "10.77.0.11",
        proto: IPPROTO_TCP,
        closing: false,
        age_s: 400,
        count: 40,
        expires: true,
    },
    Kind {
        backend: "10.77.0.12",
        proto: IPPROTO_UDP,
        closing: false,
        age_s: 60,
        count: 30,
        expires: true,
    },
    Kind {
        backend: "10.77.0.12",
        proto: IPPROTO_TCP,
        closing: true,
        age_s: 30,
        count: 20,
        expires: true,
    },
    // Closing but recent: never counted as active (it expires 10 s later; not checked).
    Kind {
        backend: "10.77.0.11",
        proto: IPPROTO_TCP,
        closing: true,
        age_s: 0,
        count: 15,
        expires: false,
    },
];

fn flow(kind: usize, i: u32, proto: u8) -> FlowKey {
    let src = IpAddr::from([10, 9, kind as u8, i as u8]);
    FlowKey::new(src, 40000, IpAddr::V4(VIP), 80, proto)
}

fn active_conns(cl: &ControlLab) -> BTreeMap<String, u64> {
    let (code, stats) = cl.api("GET", "/v1/stats", None);
    assert_eq!(code, 200, "GET /v1/stats: {stats}");
    stats["vips"][0]["backends"]
        .as_array()
        .expect("backends in stats")
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap_or_default().to_string(),
                b["active_conns"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[test]
fn the_sweep_deletes_idle_flows_and_counts_the_open_ones() {
    let cl = ControlLab::new(2);
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    // A new flow through the VIP sets the data plane's clock anchor, which the sweep ages
    // entries with (without one nothing expires).
    let client = cl.lab.host("client").expect("client");
    client
        .in_netns(|| get_once(Duration::from_secs(2)))
        .expect("client ns")
        .expect("a request through the VIP");
    let anchor = maps::clock_anchor(&pins).expect("the data plane's clock anchor after a new flow");

    // Only the test's flows from here on. The client's connection may still send its last
    // packets (FIN, ACK) after this and be counted again: `drop_others` removes it each round.
    let mut conns = maps::conns(&pins);
    let ours: HashSet<FlowKey> = KINDS
        .iter()
        .enumerate()
        .flat_map(|(k, kind)| (0..kind.count).map(move |i| flow(k, i, kind.proto)))
        .collect();
    let drop_others = |conns: &mut aya::maps::HashMap<MapData, FlowKey, ConnEntry>| {
        let others: Vec<FlowKey> = conns
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ours.contains(k))
            .collect();
        for k in &others {
            let _ = conns.remove(k);
        }
    };
    drop_others(&mut conns);
    let tick = Maps::jiffy_ns();
    let now_jiffies = anchor.0 + Maps::coarse_now_ns().saturating_sub(anchor.1) / tick;
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (k, kind) in KINDS.iter().enumerate() {
        let id = maps::backend_id(&pins, kind.backend).expect("backend in BACKENDS");
        let entry = ConnEntry {
            backend: id as u16,
            flags: if kind.closing { CONN_F_CLOSING } else { 0 },
            last_seen: now_jiffies - kind.age_s * 1_000_000_000 / tick,
            ..Default::default()
        };
        for i in 0..kind.count {
            conns
                .insert(flow(k, i, kind.proto), entry, 0)
                .expect("insert a flow");
        }
        if !kind.expires && !kind.closing {
            *want.entry(kind.backend.to_string()).or_default() += u64::from(kind.count);
        }
    }

    let gone = |conns: &aya::maps::HashMap<MapData, FlowKey, ConnEntry>| {
        KINDS.iter().enumerate().all(|(k, kind)| {
            !kind.expires || (0..kind.count).all(|i| conns.get(&flow(k, i, kind.proto), 0).is_err())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(active_conns(&cl) == want && gone(&conns)) {
        drop_others(&mut conns);
        assert!(
            Instant::now() < deadline,
            "after 20 s of sweeps every 500 ms: active_conns {:?}, want {want:?}; expired flows all gone: {}\n{}",
            active_conns(&cl),
            gone(&conns),
            cl.lbd_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Open flows, whatever their age under the limit, stay.
    for (k, kind) in KINDS.iter().enumerate() {
        if !kind.expires && !kind.closing {
            for i in 0..kind.count {
                assert!(
                    conns.get(&flow(k, i, kind.proto), 0).is_ok(),
                    "an open flow ({} s idle, proto {}) was deleted",
                    kind.age_s,
                    kind.proto
                );
            }
        }
    }
    // The least-connections counters the data plane reads hold the same counts.
    let lc: Array<MapData, u64> = Array::try_from(Map::Array(
        MapData::from_pin(pins.join(format!("v{}/maps/LC_CONNS", lb_common::LAYOUT_VERSION)))
            .expect("pinned LC_CONNS"),
    ))
    .expect("LC_CONNS");
    for (addr, n) in &want {
        let id = maps::backend_id(&pins, addr).expect("backend id");
        assert_eq!(
            lc.get(&id, 0).expect("LC_CONNS entry"),
            *n,
            "LC counter of {addr}"
        );
    }
}
