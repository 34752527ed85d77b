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
    /// Gratuitous ARPs sent (IPv4 router).
    pub garp_sent: u64,
    /// Unsolicited neighbour advertisements sent (IPv6 router).
    #[serde(default)]
    pub na_sent: u64,
    /// State changes, all kinds.
    pub transitions: u64,
    /// Times this node became master.
    pub became_master: u64,
    /// Times it became backup.
    pub became_backup: u64,
    /// Times it entered the fault state.
    pub became_fault: u64,
    /// Times the primary address changed because the interface's addresses did.
    #[serde(default)]
    pub primary_changes: u64,
    /// Times the socket was reopened on a re-created interface of the same name.
    #[serde(default)]
    pub socket_reopens: u64,
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

/// A virtual router's address family: one `[vrrp]` section runs one router per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4: adverts to 224.0.0.18, gratuitous ARP.
    #[default]
    Ipv4,
    /// IPv6: adverts to ff02::12, unsolicited neighbour advertisements.
    Ipv6,
}

impl Family {
    /// The family of `a`.
    pub fn of(a: IpAddr) -> Self {
        if a.is_ipv4() { Self::Ipv4 } else { Self::Ipv6 }
    }

    /// Lower-case name for the API and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// Every virtual router of the `[vrrp]` section, as `GET /v1/vrrp` returns them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Overview {
    /// One entry per address family, IPv4 first.
    pub instances: Vec<Status>,
}

impl Overview {
    /// The instance of `family`, if configured.
    pub fn get(&self, family: Family) -> Option<&Status> {
        self.instances.iter().find(|s| s.family == family)
    }

    /// The human view `lbctl vrrp` prints: one block per instance.
    pub fn render(&self) -> String {
        self.instances
            .iter()
            .map(Status::render)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The Prometheus lines for every instance (`lbd_vrrp_*`, labelled by family).
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut samples: Vec<Sample> = Vec::new();
        for s in &self.instances {
            s.samples(&mut samples);
        }
        let mut o = String::new();
        let mut done: Vec<&str> = Vec::new();
        for (i, first) in samples.iter().enumerate() {
            if done.contains(&first.name) {
                continue;
            }
            done.push(first.name);
            let _ = writeln!(
                o,
                "# HELP {n} {h}\n# TYPE {n} {k}",
                n = first.name,
                h = first.help,
                k = first.kind
            );
            for s in samples[i..].iter().filter(|s| s.name == first.name) {
                let _ = writeln!(o, "{}{{{}}} {}", s.name, s.labels, s.value);
            }
        }
        o
    }
}

/// One Prometheus sample before grouping by metric name.
struct Sample {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    labels: String,
    value: u64,
}

/// The router's view of itself (one entry of [`Overview::instances`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Address family of this router.
    #[serde(default)]
    pub family: Family,
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
    /// Our primary address (advert source). Follows the interface's addresses unless
    /// configured; the last one used (or unspecified) while [`Self::address_fault`] is set.
    pub primary: IpAddr,
    /// Whether the primary comes from the configuration (`source` / `source_v6`).
    #[serde(default)]
    pub primary_configured: bool,
    /// The virtual addresses, `ADDR/PREFIX`.
    pub addresses: Vec<String>,
    /// Current state.
    pub state: State,
    /// Whether tracking reports a fault.
    pub fault: bool,
    /// Why the router has no usable primary address (it is then in the fault state and sends
    /// nothing); `None` when it has one.
    #[serde(default)]
    pub address_fault: Option<String>,
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
            family: Family::Ipv4,
            interface: String::new(),
            vrid: 0,
            priority: 0,
            interval_cs: 0,
            preempt: false,
            primary: IpAddr::from([0, 0, 0, 0]),
            primary_configured: false,
            addresses: Vec::new(),
            state: State::Initialize,
            fault: false,
            address_fault: None,
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
    pub(super) fn new(
        cfg: &VrrpConfig,
        family: Family,
        primary: IpAddr,
        primary_configured: bool,
    ) -> Self {
        Self {
            family,
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            priority: cfg.priority,
            interval_cs: cfg.interval.get(),
            preempt: cfg.preempt,
            primary,
            primary_configured,
            addresses: cfg
                .addresses
                .iter()
                .filter(|a| Family::of(a.addr) == family)
                .map(|a| a.to_string())
                .collect(),
            master_interval_cs: cfg.interval.get(),
            ..Self::default()
        }
    }
}

impl Status {
    /// This router's samples (`lbd_vrrp_*`).
    fn samples(&self, out: &mut Vec<Sample>) {
        let l = format!(
            "vrid=\"{}\",interface=\"{}\",family=\"{}\"",
            self.vrid,
            self.interface,
            self.family.name()
        );
        let mut metric =
            |name: &'static str, kind: &'static str, help: &'static str, extra: &str, v: u64| {
                out.push(Sample {
                    name,
                    kind,
                    help,
                    labels: format!("{l}{extra}"),
                    value: v,
                })
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
            "lbd_vrrp_address_fault",
            "gauge",
            "1 while the router has no usable primary address on its interface.",
            "",
            u64::from(self.address_fault.is_some()),
        );
        metric(
            "lbd_vrrp_primary_changes_total",
            "counter",
            "Primary address changes that followed the interface's addresses.",
            "",
            c.primary_changes,
        );
        metric(
            "lbd_vrrp_socket_reopens_total",
            "counter",
            "VRRP sockets reopened on a re-created interface of the same name.",
            "",
            c.socket_reopens,
        );
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
        metric(
            "lbd_vrrp_announcements_total",
            "counter",
            "Gratuitous ARPs (IPv4) and unsolicited neighbour advertisements (IPv6) sent.",
            "",
            c.garp_sent + c.na_sent,
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
                    "{}, vrid {} on {}{}, primary {}{}",
                    match self.family {
                        Family::Ipv4 => "IPv4",
                        Family::Ipv6 => "IPv6",
                    },
                    self.vrid,
                    self.interface,
                    match c.socket_reopens {
                        0 => String::new(),
                        1 => " (re-created once)".to_string(),
                        n => format!(" (re-created {n} times)"),
                    },
                    self.primary,
                    match (self.primary_configured, c.primary_changes) {
                        (true, _) => " (configured)".to_string(),
                        (false, 0) => String::new(),
                        (false, 1) => " (1 change)".to_string(),
                        (false, n) => format!(" ({n} changes)"),
                    }
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
            (
                "fault",
                match (self.fault, &self.address_fault) {
                    (false, None) => "no".into(),
                    (true, None) => "yes (tracking)".into(),
                    (false, Some(why)) => format!("yes: {why}"),
                    (true, Some(why)) => format!("yes: {why}; tracking too"),
                },
            ),
            (
                "adverts",
                format!(
                    "sent {}, received {}, {} {}",
                    c.adverts_sent,
                    c.adverts_received,
                    match self.family {
                        Family::Ipv4 => "gratuitous ARP",
                        Family::Ipv6 => "neighbour adverts",
                    },
                    c.garp_sent + c.na_sent
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

    #[test]
    fn address_fault_and_primary_changes_are_shown() {
        let mut s = Status {
            state: State::Fault,
            address_fault: Some("no IPv4 address on eth0 besides the VIPs".into()),
            ..Status::default()
        };
        s.counters.primary_changes = 2;
        s.counters.socket_reopens = 1;
        let text = s.render();
        assert!(text.contains("(re-created once)"), "{text}");
        assert!(
            text.contains("fault        yes: no IPv4 address on eth0"),
            "{text}"
        );
        assert!(text.contains("(2 changes)"), "{text}");
        let m = Overview {
            instances: vec![s.clone()],
        }
        .prometheus();
        assert!(m.contains("lbd_vrrp_address_fault{"), "{m}");
        assert!(m.contains("lbd_vrrp_primary_changes_total{"), "{m}");
        assert!(m.contains("lbd_vrrp_socket_reopens_total{"), "{m}");
        // Answers of an older lbd (no such fields) still parse.
        let mut json = serde_json::to_value(&s).unwrap();
        let o = json.as_object_mut().unwrap();
        o.remove("address_fault");
        o.remove("primary_configured");
        o["counters"]
            .as_object_mut()
            .unwrap()
            .remove("primary_changes");
        o["counters"]
            .as_object_mut()
            .unwrap()
            .remove("socket_reopens");
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.address_fault, None);
        s.primary_configured = true;
        s.address_fault = None;
        s.fault = true;
        let text = s.render();
        assert!(text.contains("(configured)"), "{text}");
        assert!(text.contains("fault        yes (tracking)"), "{text}");
    }

    #[test]
    fn overview_lists_both_families_once_per_metric() {
        let v6 = Status {
            family: Family::Ipv6,
            state: State::Backup,
            ..Status::default()
        };
        let o = Overview {
            instances: vec![Status::default(), v6],
        };
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["instances"][1]["family"], "ipv6");
        let m = o.prometheus();
        assert_eq!(m.matches("# TYPE lbd_vrrp_state gauge").count(), 1, "{m}");
        assert!(m.contains("family=\"ipv6\"} 1"), "{m}");
        assert!(m.contains("family=\"ipv4\"} 0"), "{m}");
        let text = o.render();
        assert!(text.contains("IPv6, vrid 0"), "{text}");
        assert!(text.contains("IPv4, vrid 0"), "{text}");
    }
}
