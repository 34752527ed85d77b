//! The connection-table sweep: counts active flows per backend (the least-connections
//! counters and `active_conns`) and deletes flows idle longer than their protocol's timeout,
//! or closing (FIN/RST seen) for longer than `closing_idle`.

use std::{collections::HashMap, time::Duration};

use lb_common::{CONN_F_CLOSING, IPPROTO_UDP};
use tracing::warn;

use super::State;
use crate::dataplane::Maps;

pub async fn sweep_loop(shared: State) {
    let cfg = shared.config.sweep.clone();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut inner = shared.inner.lock().await;
        let now = Maps::coarse_now_ns();
        let mut active: HashMap<u32, u64> = HashMap::new();
        let mut expired = Vec::new();
        // Entry times are jiffies; with no anchor yet (no new flow since the maps were made)
        // nothing is expired, only counted.
        let anchor = inner.prog.maps().clock_anchor();
        let tick = Maps::jiffy_ns();
        for (flow, entry) in inner.prog.maps().conns() {
            let idle = match anchor {
                Some(a) => {
                    Duration::from_nanos(now.saturating_sub(Maps::last_seen_ns(a, tick, &entry)))
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
                expired.push(flow);
            } else if entry.flags & CONN_F_CLOSING == 0 {
                *active.entry(u32::from(entry.backend)).or_default() += 1;
            }
        }
        inner.prog.maps_mut().remove_conns(&expired);
        let ids: Vec<u32> = inner.prog.backend_ids().map(|(_, _, id)| id).collect();
        let maps = inner.prog.maps_mut();
        for id in ids {
            if let Err(e) = maps.set_lc_connections(id, active.get(&id).copied().unwrap_or(0)) {
                warn!(error = %e, "cannot write a least-connections counter");
            }
        }
        inner.active = active;
    }
}
