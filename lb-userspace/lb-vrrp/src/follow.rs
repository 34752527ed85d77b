//! The router side of address following: apply a new list of the interface's addresses (new
//! primary, or none: fault) and combine that fault with tracking's.

use tracing::{info, warn};

use super::{Router, addrs::IfAddr, machine::Event, machine::State};

impl Router {
    /// The interface's addresses changed (or were read for the first time): choose the primary
    /// again. A change is logged and counted; no usable address holds the router in fault
    /// (see [`Self::sync_fault`]) with the reason in its status.
    pub(super) fn follow(&mut self, addrs: &[IfAddr]) {
        let family = self.family.name();
        let current = self.address_fault.is_none().then_some(self.primary);
        match self.rule.choose(addrs, current) {
            Ok(p) => {
                let first = self.address_fault.as_deref() == Some(super::WAITING);
                // Back after a fault with another address counts as a change too.
                let changed = !first && p != self.primary && !self.primary.is_unspecified();
                if first {
                    info!(
                        family,
                        primary = %p,
                        configured = self.rule.configured.is_some(),
                        "vrrp: primary address"
                    );
                } else if changed {
                    info!(
                        family,
                        interface = %self.rule.interface,
                        from = %self.primary,
                        to = %p,
                        "vrrp: primary address changed with the interface's addresses"
                    );
                } else if current.is_none() {
                    info!(family, primary = %p, "vrrp: the primary address is back");
                }
                self.primary = p;
                self.machine.set_primary(p);
                self.address_fault = None;
                let master = self.machine.state() == State::Master;
                self.with_status(|s| {
                    s.primary = p;
                    s.address_fault = None;
                    if changed {
                        s.counters.primary_changes += 1;
                    }
                    if master {
                        s.master = Some(p);
                    }
                });
            }
            Err(missing) => {
                let why = self.rule.describe(&missing);
                if self.address_fault.as_deref() != Some(why.as_str()) {
                    warn!(
                        family,
                        last_primary = %self.primary,
                        reason = %why,
                        "vrrp: no usable primary address: fault (no adverts, no VIPs) until one is back"
                    );
                }
                self.with_status(|s| s.address_fault = Some(why.clone()));
                self.address_fault = Some(why);
            }
        }
    }

    /// Gives the machine the combined fault (tracking, or no usable primary) when it changed.
    pub(super) async fn sync_fault(&mut self) {
        let f = self.track_fault || self.address_fault.is_some();
        if f != self.faulted {
            self.faulted = f;
            self.apply(Event::Fault(f)).await;
        }
    }
}
