//! Per-second rates from two `/v1/stats` snapshots (`lbctl stats --watch`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use lb_api::types::{BackendStats, Stats, VipStats};

/// Rates over one interval. A rate is `None` when it cannot be known: the VIP or backend is new
/// since the last snapshot, or its counter went backwards (lbd reloaded the data plane).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rates {
    pub at_unix_ms: u64,
    pub interval_s: f64,
    pub vips: Vec<VipRates>,
    /// Per-second rate of every data-plane reason counter (`tx_forward`, drops, ...).
    pub reasons_per_s: BTreeMap<String, Option<f64>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipRates {
    pub name: String,
    pub packets_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    pub new_conns_per_s: Option<f64>,
    /// Sum over the VIP's backends (a gauge, not a rate).
    pub active_conns: u64,
    pub backends: Vec<BackendRates>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendRates {
    pub address: IpAddr,
    pub packets_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
    pub new_conns_per_s: Option<f64>,
    pub active_conns: u64,
}

/// Rates between `prev` and `cur`. The interval comes from lbd's own timestamps, so a slow
/// poll does not distort the rates; `local_elapsed` stands in when those are unusable.
pub fn rates(prev: &Stats, cur: &Stats, local_elapsed: Duration) -> Rates {
    let server_ms = cur.at_unix_ms.saturating_sub(prev.at_unix_ms);
    let interval_s = if server_ms > 0 {
        server_ms as f64 / 1000.0
    } else {
        local_elapsed.as_secs_f64()
    };
    let rate = |before: Option<u64>, now: u64| -> Option<f64> {
        let before = before?;
        (now >= before && interval_s > 0.0).then(|| (now - before) as f64 / interval_s)
    };

    let prev_vips: HashMap<&str, &VipStats> =
        prev.vips.iter().map(|v| (v.name.as_str(), v)).collect();
    let vips = cur
        .vips
        .iter()
        .map(|v| {
            let p = prev_vips.get(v.name.as_str());
            let prev_backends: HashMap<IpAddr, &BackendStats> = p
                .map(|p| p.backends.iter().map(|b| (b.address, b)).collect())
                .unwrap_or_default();
            let backends: Vec<BackendRates> = v
                .backends
                .iter()
                .map(|b| {
                    let pb = prev_backends.get(&b.address);
                    BackendRates {
                        address: b.address,
                        packets_per_s: rate(pb.map(|x| x.packets), b.packets),
                        bytes_per_s: rate(pb.map(|x| x.bytes), b.bytes),
                        new_conns_per_s: rate(pb.map(|x| x.new_conns), b.new_conns),
                        active_conns: b.active_conns,
                    }
                })
                .collect();
            VipRates {
                name: v.name.clone(),
                packets_per_s: rate(p.map(|x| x.packets), v.packets),
                bytes_per_s: rate(p.map(|x| x.bytes), v.bytes),
                new_conns_per_s: rate(p.map(|x| x.new_conns), v.new_conns),
                active_conns: backends.iter().map(|b| b.active_conns).sum(),
                backends,
            }
        })
        .collect();
    let reasons_per_s = cur
        .reasons
        .iter()
        .map(|(k, &now)| (k.clone(), rate(prev.reasons.get(k).copied(), now)))
        .collect();
    Rates {
        at_unix_ms: cur.at_unix_ms,
        interval_s,
        vips,
        reasons_per_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at: u64, packets: u64, backends: &[(&str, u64, u64)]) -> Stats {
        Stats {
            at_unix_ms: at,
            vips: vec![VipStats {
                name: "web".into(),
                packets,
                bytes: packets * 100,
                new_conns: packets / 10,
                backends: backends
                    .iter()
                    .map(|&(a, p, active)| BackendStats {
                        address: a.parse().unwrap(),
                        packets: p,
                        bytes: p * 100,
                        new_conns: p / 10,
                        active_conns: active,
                    })
                    .collect(),
            }],
            reasons: [("tx_forward".to_string(), packets)].into(),
        }
    }

    #[test]
    fn rates_use_server_time() {
        let a = snap(10_000, 1_000, &[("10.0.0.1", 600, 3), ("10.0.0.2", 400, 0)]);
        let b = snap(
            12_000,
            3_000,
            &[("10.0.0.1", 1_600, 5), ("10.0.0.3", 10, 1)],
        );
        let r = rates(&a, &b, Duration::from_secs(99));
        assert_eq!(r.interval_s, 2.0);
        let v = &r.vips[0];
        assert_eq!(v.packets_per_s, Some(1_000.0));
        assert_eq!(v.bytes_per_s, Some(100_000.0));
        assert_eq!(v.new_conns_per_s, Some(100.0));
        assert_eq!(v.active_conns, 6);
        assert_eq!(v.backends[0].packets_per_s, Some(500.0));
        // A backend that was not in the previous snapshot has no rate yet.
        assert_eq!(v.backends[1].packets_per_s, None);
        assert_eq!(r.reasons_per_s["tx_forward"], Some(1_000.0));
    }

    #[test]
    fn counter_reset_and_clock_fallback() {
        let a = snap(5_000, 1_000, &[]);
        let b = snap(5_000, 10, &[]);
        let r = rates(&a, &b, Duration::from_millis(500));
        assert_eq!(r.interval_s, 0.5);
        assert_eq!(r.vips[0].packets_per_s, None);
    }
}
