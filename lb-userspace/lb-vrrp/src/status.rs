//! The router's own status (API, `lbctl vrrp`, metrics): the wire types are `lb_api::vrrp`;
//! this module fills them in.

use std::net::IpAddr;

pub use lb_api::vrrp::{Counters, Family, Overview, Status};

use super::{machine::State, packet::Reject};
use lb_config::VrrpConfig;

/// Counters with every reject reason present at 0 (so metrics list them all).
fn zeroed() -> Counters {
    Counters {
        rejects: Reject::ALL
            .iter()
            .map(|r| (r.name().to_string(), 0))
            .collect(),
        ..Counters::default()
    }
}

pub(super) fn count_reject(c: &mut Counters, r: Reject) {
    *c.rejects.entry(r.name().to_string()).or_default() += 1;
}

pub(super) fn count_transition(c: &mut Counters, to: State) {
    c.transitions += 1;
    match to {
        State::Master => c.became_master += 1,
        State::Backup => c.became_backup += 1,
        State::Fault => c.became_fault += 1,
        State::Initialize => {}
    }
}

/// The status of a router just configured, before it runs.
pub(super) fn initial(
    cfg: &VrrpConfig,
    family: Family,
    primary: IpAddr,
    primary_configured: bool,
) -> Status {
    Status {
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
        counters: zeroed(),
        ..Status::default()
    }
}
