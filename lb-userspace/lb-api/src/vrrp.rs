//! What `GET /v1/vrrp` answers: each virtual router's state, master, timers and counters.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::IpAddress;

/// The router's state (RFC 5798 6.4, plus `Fault` while tracking says it must not serve).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = VrrpState)]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    /// Watching the master; takes over when its adverts stop.
    Backup,
    /// Owns the virtual addresses and advertises.
    Master,
    /// Tracking failed: holds no address and never takes over until the fault clears.
    Fault,
}

impl State {
    /// Lower-case name for the API, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }

    /// Number used in the `lbd_vrrp_state` metric.
    pub fn code(self) -> u8 {
        match self {
            State::Initialize => 0,
            State::Backup => 1,
            State::Master => 2,
            State::Fault => 3,
        }
    }
}

/// Counters since the router started.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = VrrpCounters)]
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
    /// All dropped packets.
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }
}

/// A virtual router's address family: one `[vrrp]` section runs one router per family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = VrrpFamily)]
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
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[schema(as = VrrpOverview)]
pub struct Overview {
    /// One entry per address family, IPv4 first.
    pub instances: Vec<Status>,
}

impl Overview {
    /// The instance of `family`, if configured.
    pub fn get(&self, family: Family) -> Option<&Status> {
        self.instances.iter().find(|s| s.family == family)
    }
}

/// The router's view of itself (one entry of [`Overview::instances`]).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = VrrpStatus)]
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
    #[schema(value_type = IpAddress)]
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
    #[schema(value_type = Option<IpAddress>)]
    pub master: Option<IpAddr>,
    /// The master's advertisement interval, centiseconds.
    pub master_interval_cs: u16,
    /// The master-down interval now in force, milliseconds.
    pub master_down_ms: u64,
    /// Source of the last valid advert.
    #[schema(value_type = Option<IpAddress>)]
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
            counters: Counters::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let mut s = Status {
            state: State::Master,
            priority: 100,
            ..Status::default()
        };
        s.counters.rejects.insert("ttl".into(), 1);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "master");
        assert_eq!(json["counters"]["rejects"]["ttl"], 1);
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.counters.rejected(), 1);
    }

    #[test]
    fn answers_of_an_older_lbd_still_parse() {
        let s = Status {
            address_fault: Some("no IPv4 address".into()),
            ..Status::default()
        };
        let mut json = serde_json::to_value(&s).unwrap();
        let o = json.as_object_mut().unwrap();
        o.remove("address_fault");
        o.remove("primary_configured");
        let c = o["counters"].as_object_mut().unwrap();
        c.remove("primary_changes");
        c.remove("socket_reopens");
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back.address_fault, None);
    }

    #[test]
    fn overview_lists_both_families() {
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
        assert_eq!(o.get(Family::Ipv6).map(|s| s.state), Some(State::Backup));
    }
}
