//! The connection-table sweep: counts active flows per backend (the least-connections
//! counters and `active_conns`) and deletes flows idle longer than their protocol's timeout,
//! or closing (FIN/RST seen) for longer than `closing_idle`.
//!
//! The walk (up to `conn_table_size` entries) and the deletes run on a blocking thread through
//! the sweep's own handle on the table ([`ConnTable`]), without lbd's lock: every API call,
//! health transition and neighbour event waits for that lock, and a full table takes tens of
//! milliseconds to read. The lock is taken only to publish the counts.

use std::{collections::HashMap, time::Duration};

use lb_common::{CONN_F_CLOSING, ConnEntry, FlowKey, IPPROTO_UDP};
use tracing::warn;

use super::State;
use lb_config::SweepConfig;
use lb_dataplane::{ConnTable, Maps};

/// What one pass over the table found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Flows to delete: idle past their limit.
    pub expired: Vec<FlowKey>,
    /// Live, non-closing flows per backend id.
    pub active: HashMap<u32, u64>,
}

/// Sorts `entries` into expired flows and active counts. Entry times are jiffies, placed on
/// the monotonic clock with `anchor` (see [`Maps::last_seen_ns`]); with no anchor yet (no new
/// flow since the maps were made) nothing is expired, only counted.
pub fn classify(
    entries: &[(FlowKey, ConnEntry)],
    anchor: Option<(u64, u64)>,
    now_ns: u64,
    tick_ns: u64,
    cfg: &SweepConfig,
) -> Pass {
    let mut pass = Pass::default();
    for (flow, entry) in entries {
        let idle = match anchor {
            Some(a) => {
                Duration::from_nanos(now_ns.saturating_sub(Maps::last_seen_ns(a, tick_ns, entry)))
            }
            None => Duration::ZERO,
        };
        let limit = if entry.flags & CONN_F_CLOSING != 0 {
            cfg.closing_idle
        } else if flow.proto == IPPROTO_UDP {
            cfg.udp_idle
        } else {
            cfg.tcp_idle
        };
        if idle > limit {
            pass.expired.push(*flow);
        } else if entry.flags & CONN_F_CLOSING == 0 {
            *pass.active.entry(u32::from(entry.backend)).or_default() += 1;
        }
    }
    pass
}

/// One pass: reads the table, deletes the expired flows, returns what it found.
pub fn sweep_once(table: &mut ConnTable, cfg: &SweepConfig) -> Pass {
    let now = Maps::coarse_now_ns();
    let anchor = table.clock_anchor();
    let pass = classify(&table.entries(), anchor, now, Maps::jiffy_ns(), cfg);
    table.remove(&pass.expired);
    pass
}

async fn open_table(shared: &State) -> Option<ConnTable> {
    let inner = shared.inner.lock().await;
    match inner.prog.maps().conn_table() {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(error = %e, "cannot open the connection table for the sweep; retrying next interval");
            None
        }
    }
}

pub async fn sweep_loop(shared: State) {
    let cfg = shared.config.sweep.clone();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut table: Option<ConnTable> = None;
    loop {
        tick.tick().await;
        let mut t = match table.take() {
            Some(t) => t,
            None => match open_table(&shared).await {
                Some(t) => t,
                None => continue,
            },
        };
        let c = cfg.clone();
        // Many syscalls and a pass over every entry: off the async workers that serve the API.
        let pass = match tokio::task::spawn_blocking(move || {
            let pass = sweep_once(&mut t, &c);
            (t, pass)
        })
        .await
        {
            Ok((t, pass)) => {
                table = Some(t);
                pass
            }
            Err(e) => {
                warn!(error = %e, "a sweep pass failed");
                continue;
            }
        };
        publish(&shared, pass.active).await;
    }
}

/// Writes the counts of the backends that exist now (one removed during the walk is ignored;
/// its id may have been freed).
async fn publish(shared: &State, mut active: HashMap<u32, u64>) {
    let mut inner = shared.inner.lock().await;
    let ids: Vec<u32> = inner.prog.backend_ids().map(|(_, _, id)| id).collect();
    let maps = inner.prog.maps_mut();
    for &id in &ids {
        if let Err(e) = maps.set_lc_connections(id, active.get(&id).copied().unwrap_or(0)) {
            warn!(error = %e, "cannot write a least-connections counter");
        }
    }
    active.retain(|id, _| ids.contains(id));
    inner.active = active;
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use lb_common::IPPROTO_TCP;

    use super::*;

    const TICK: u64 = 4_000_000;
    /// Anchor: jiffy 1,000,000 was at monotonic 10,000 s.
    const ANCHOR: (u64, u64) = (1_000_000, 10_000_000_000_000);

    fn flow(i: u16, proto: u8) -> FlowKey {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        FlowKey::new(ip("10.1.0.1"), 1000 + i, ip("10.77.0.100"), 80, proto)
    }

    /// An entry last seen `ago` before the anchor's moment.
    fn entry(backend: u16, closing: bool, ago: Duration) -> ConnEntry {
        ConnEntry {
            backend,
            flags: if closing { CONN_F_CLOSING } else { 0 },
            last_seen: ANCHOR.0 - ago.as_nanos() as u64 / TICK,
            ..Default::default()
        }
    }

    fn table() -> Vec<(FlowKey, ConnEntry)> {
        let s = Duration::from_secs;
        vec![
            (flow(1, IPPROTO_TCP), entry(1, false, s(0))),
            (flow(2, IPPROTO_TCP), entry(1, false, s(299))),
            (flow(3, IPPROTO_TCP), entry(2, false, s(301))),
            (flow(4, IPPROTO_UDP), entry(2, false, s(29))),
            (flow(5, IPPROTO_UDP), entry(2, false, s(31))),
            (flow(6, IPPROTO_TCP), entry(1, true, s(9))),
            (flow(7, IPPROTO_TCP), entry(1, true, s(11))),
            (flow(8, IPPROTO_UDP), entry(3, true, s(11))),
        ]
    }

    #[test]
    fn idle_limits_depend_on_protocol_and_closing() {
        let pass = classify(
            &table(),
            Some(ANCHOR),
            ANCHOR.1,
            TICK,
            &SweepConfig::default(),
        );
        assert_eq!(
            pass.expired,
            vec![
                flow(3, IPPROTO_TCP),
                flow(5, IPPROTO_UDP),
                flow(7, IPPROTO_TCP),
                flow(8, IPPROTO_UDP)
            ]
        );
        // Closing flows are never counted as active, even before they expire.
        assert_eq!(pass.active, HashMap::from([(1, 2), (2, 1)]));
    }

    #[test]
    fn without_an_anchor_nothing_expires_and_every_open_flow_counts() {
        let pass = classify(&table(), None, ANCHOR.1, TICK, &SweepConfig::default());
        assert!(pass.expired.is_empty());
        assert_eq!(pass.active, HashMap::from([(1, 2), (2, 3)]));
    }

    #[test]
    fn time_runs_on_from_the_anchor() {
        // 2 s after the anchor, the 299 s-old TCP flow has passed 300 s, the 29 s-old UDP
        // flow 30 s.
        let pass = classify(
            &table(),
            Some(ANCHOR),
            ANCHOR.1 + 2_000_000_000,
            TICK,
            &SweepConfig::default(),
        );
        assert!(pass.expired.contains(&flow(2, IPPROTO_TCP)));
        assert!(pass.expired.contains(&flow(4, IPPROTO_UDP)));
        assert_eq!(pass.active, HashMap::from([(1, 1)]));
    }
}
