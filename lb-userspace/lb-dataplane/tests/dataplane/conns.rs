//! The sweep's reads of the connection table, in batches of `BPF_MAP_LOOKUP_BATCH`: more
//! flows than one batch holds, all seen exactly once; and its deletes, which skip flows
//! already gone.

use std::collections::HashSet;

use lb_common::{Algorithm, FlowKey, ForwardMode};
use lb_dataplane::packet::{Frame, TCP_SYN};

use crate::fixture::*;

const VIP: &str = "10.77.0.100";
/// More than two batches (4,096 elements each).
const FLOWS: u32 = 10_000;

fn client(i: u32) -> String {
    format!("10.4.{}.{}", i / 250, i % 250 + 1)
}

fn sport(i: u32) -> u16 {
    30000 + (i % 1000) as u16
}

fn flow(i: u32) -> FlowKey {
    FlowKey::new(ip(&client(i)), sport(i), ip(VIP), 80, 6)
}

#[test]
fn the_sweep_reads_the_whole_table_in_batches_and_deletes_what_is_there() {
    let backends = ["10.77.0.11", "10.77.0.12"]
        .iter()
        .map(|b| backend(b, 1))
        .collect();
    let mut fx = Fixture::new(&[vip(
        "web",
        VIP,
        80,
        Algorithm::Maglev,
        ForwardMode::DsrL2,
        backends,
    )]);
    // Every new flow gets an entry, however fast they come.
    fx.set_flood_limit(0);
    for i in 0..FLOWS {
        fx.run_frame(&Frame::tcp(ip(&client(i)), sport(i), ip(VIP), 80, TCP_SYN));
    }
    // The sweep's own handle on the table, and the batched calls themselves, not the
    // element-wise fallback behind `entries()`.
    let mut table = fx.prog.maps().conn_table().expect("the sweep's handle");
    let all = table.entries_batched().expect("BPF_MAP_LOOKUP_BATCH");
    let keys: HashSet<FlowKey> = all.iter().map(|(k, _)| *k).collect();
    assert_eq!(all.len(), FLOWS as usize, "each flow exactly once");
    assert_eq!(keys.len(), FLOWS as usize, "no flow twice");
    let missing: Vec<u32> = (0..FLOWS).filter(|i| !keys.contains(&flow(*i))).collect();
    assert!(
        missing.is_empty(),
        "{} flows missing, e.g. {:?}; read e.g. {:?}",
        missing.len(),
        missing.first().map(|i| flow(*i)),
        all.first()
    );

    // Delete the even flows plus 100 that never existed.
    let mut doomed: Vec<FlowKey> = (0..FLOWS).step_by(2).map(flow).collect();
    doomed.extend((0..100).map(|i| flow(FLOWS + i)));
    let removed = table.remove(&doomed);
    assert_eq!(removed, FLOWS as usize / 2, "only flows that existed count");
    let left: HashSet<FlowKey> = fx.prog.maps().conns().into_iter().map(|(k, _)| k).collect();
    assert_eq!(left.len(), FLOWS as usize / 2);
    assert!((0..FLOWS).all(|i| left.contains(&flow(i)) == (i % 2 == 1)));
}
