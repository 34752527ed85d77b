//! What the router reports: state, master, timers and counters (API, `lbctl vrrp`, metrics).

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::{machine::State, packet::Reject};
use crate::config::VrrpConfig;

/// Counters since the router started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Adverts sent (each unicast peer counts once).
    pub adverts_sent: u64,
    /// Valid adverts received for our virtual router.
    pub adverts_received: u64,
    /// Dropped packets by reason ([`Reject::name`]).
    pub rejects: BTreeMap<String, u64>,
    /// Valid adverts from a source that is not a configured unicast peer.
    pub not_a_peer: u64,
    /// Adverts the kernel refused to send.
    pub send_errors: u64,
    /// Gratuitous ARPs sent.
    pub garp_sent: u64,
    /// State changes, all kinds.
    pub transitions: u64,
    /// Times this node became master.
    pub became_master: u64,
    /// Times it became backup.
    pub became_backup: u64,
    /// Times it entered the fault state.
    pub became_fault: u64,
}

impl Counters {
    fn zeroed() -> Self {
        Self {
            rejects: Reject::ALL
                .iter()
                .map(|r| (r.name().to_string(), 0))
                .collect(),
            ..Self::default()
        }
    }

    pub(super) fn reject(&mut self, r: Reject) {
        *self.rejects.entry(r.name().to_string()).or_default() += 1;
    }

    pub(super) fn transition(&mut self, to: State) {
        self.transitions += 1;
        match to {
            State::Master => self.became_master += 1,
            State::Backup => self.became_backup += 1,
            State::Fault => self.became_fault += 1,
            State::Initialize => {}
        }
    }

    /// All dropped packets.
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }
}

/// The router's view of itself, as `GET /v1/vrrp` returns it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Interface the router runs on.
    pub interface: String,
    /// Virtual router id.
    pub vrid: u8,
    /// Configured priority.
    pub priority: u8,
    /// Our advertisement interval, centiseconds.
    pub interval_cs: u16,
    /// Whether preemption is on.
    pub preempt: bool,
    /// Our primary address (advert source).
    pub primary: IpAddr,
    /// The virtual addresses, `ADDR/PREFIX`.
    pub addresses: Vec<String>,
    /// Current state.
    pub state: State,
    /// Whether tracking reports a fault.
    pub fault: bool,
    /// The current master, when known (ourselves while master).
    pub master: Option<IpAddr>,
    /// The master's advertisement interval, centiseconds.
    pub master_interval_cs: u16,
    /// The master-down interval now in force, milliseconds.
    pub master_down_ms: u64,
    /// Source of the last valid advert.
    pub last_advert_from: Option<IpAddr>,
    /// Priority in the last valid advert.
    pub last_advert_priority: Option<u8>,
    /// Counters.
    pub counters: Counters,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            interface: String::new(),
            vrid: 0,
            priority: 0,
            interval_cs: 0,
            preempt: false,
            primary: IpAddr::from([0, 0, 0, 0]),
            addresses: Vec::new(),
            state: State::Initialize,
            fault: false,
            master: None,
            master_interval_cs: 0,
            master_down_ms: 0,
            last_advert_from: None,
            last_advert_priority: None,
            counters: Counters::zeroed(),
        }
    }
}

impl Status {
    pub(super) fn new(cfg: &VrrpConfig, primary: IpAddr) -> Self {
        Self {
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            priority: cfg.priority,
            interval_cs: cfg.interval.get(),
            preempt: cfg.preempt,
            primary,
            addresses: cfg.addresses.iter().map(|a| a.to_string()).collect(),
            master_interval_cs: cfg.interval.get(),
            ..Self::default()
        }
    }
}

impl Status {
    /// The Prometheus lines for this router (`lbd_vrrp_*`).
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let l = format!("vrid=\"{}\",interface=\"{}\"", self.vrid, self.interface);
        let mut metric = |name: &str, kind: &str, help: &str, extra: &str, v: u64| {
            if !o.contains(&format!("# TYPE {name} ")) {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
            let _ = writeln!(o, "{name}{{{l}{extra}}} {v}");
        };
        metric(
            "lbd_vrrp_state",
            "gauge",
            "VRRP state: 0 initialize, 1 backup, 2 master, 3 fault.",
            "",
            u64::from(self.state.code()),
        );
        metric(
            "lbd_vrrp_master",
            "gauge",
            "1 while this node is the VRRP master.",
            "",
            u64::from(self.state == State::Master),
        );
        metric(
            "lbd_vrrp_priority",
            "gauge",
            "Configured VRRP priority.",
            "",
            u64::from(self.priority),
        );
        let c = &self.counters;
        for (to, v) in [
            ("master", c.became_master),
            ("backup", c.became_backup),
            ("fault", c.became_fault),
        ] {
            metric(
                "lbd_vrrp_transitions_total",
                "counter",
                "VRRP state changes by new state.",
                &format!(",to=\"{to}\""),
                v,
            );
        }
        metric(
            "lbd_vrrp_adverts_sent_total",
            "counter",
            "VRRP adverts sent.",
            "",
            c.adverts_sent,
        );
        metric(
            "lbd_vrrp_adverts_received_total",
            "counter",
            "Valid VRRP adverts received.",
            "",
            c.adverts_received,
        );
        for (reason, v) in &c.rejects {
            metric(
                "lbd_vrrp_rejected_total",
                "counter",
                "VRRP packets dropped, by reason.",
                &format!(",reason=\"{reason}\""),
                *v,
            );
        }
        o
    }
}

impl Status {
    /// The human view `lbctl vrrp` prints.
    pub fn render(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        let c = &self.counters;
        let rejected: Vec<String> = c
            .rejects
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let rows = [
            (
                "state",
                format!(
                    "{} (priority {}, preempt {})",
                    self.state.name(),
                    self.priority,
                    on(self.preempt)
                ),
            ),
            (
                "router",
                format!(
                    "vrid {} on {}, primary {}",
                    self.vrid, self.interface, self.primary
                ),
            ),
            (
                "master",
                self.master
                    .map(|m| {
                        if m == self.primary {
                            format!("{m} (this node)")
                        } else {
                            m.to_string()
                        }
                    })
                    .unwrap_or_else(|| "unknown".into()),
            ),
            ("addresses", self.addresses.join(", ")),
            (
                "timers",
                format!(
                    "advert {} ms (master's {} ms), master-down {} ms",
                    u64::from(self.interval_cs) * 10,
                    u64::from(self.master_interval_cs) * 10,
                    self.master_down_ms
                ),
            ),
            ("fault", if self.fault { "yes" } else { "no" }.into()),
            (
                "adverts",
                format!(
                    "sent {}, received {}, gratuitous ARP {}",
                    c.adverts_sent, c.adverts_received, c.garp_sent
                ),
            ),
            (
                "transitions",
                format!(
                    "{} (to master {}, to backup {}, to fault {})",
                    c.transitions, c.became_master, c.became_backup, c.became_fault
                ),
            ),
            (
                "rejected",
                if rejected.is_empty() {
                    "0".into()
                } else {
                    format!("{} ({})", c.rejected(), rejected.join(", "))
                },
            ),
        ];
        rows.iter().map(|(k, v)| format!("{k:<12} {v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_text() {
        let mut s = Status {
            state: State::Master,
            priority: 100,
            ..Status::default()
        };
        s.counters.reject(Reject::Ttl);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "master");
        assert_eq!(json["counters"]["rejects"]["ttl"], 1);
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.counters.rejected(), 1);
        let text = back.render();
        assert!(text.contains("master (priority 100"), "{text}");
        assert!(text.contains("rejected     1 (ttl 1)"), "{text}");
    }
}
