//! The router's interface deleted or re-created while `lbd` runs (an operator or networkd
//! re-making a veth / VLAN): the raw socket stays bound to the old interface index, which
//! will never carry a packet again, and the VIPs went with the old interface. The router
//! goes to fault as soon as the watcher ([`super::ifwatch`]) reports the index gone or
//! changed, reopens its socket (bound to the device, multicast membership, IPv6 options) once
//! an interface of the name exists again, and then follows the new interface's addresses as
//! usual: fault until a primary address is there, then backup (and preemption).

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Router, Socket, ifwatch::Snapshot, io};

/// How long to wait before trying again when the new interface's socket cannot be opened.
const RETRY: Duration = Duration::from_secs(1);

impl Router {
    /// A new view of the interface: reopen the socket if the interface was replaced, then
    /// follow its addresses, and give the machine the resulting fault.
    pub(super) async fn on_interface(&mut self, s: &Snapshot) {
        let iface = self.cfg.interface.clone();
        let bound = self.socket.ifindex();
        if !self.link_lost && s.ifindex != Some(bound) {
            // Leave mastership first (the VIPs are gone with the old interface anyway); no
            // advert goes out, there is no interface to send it from.
            self.link_lost = true;
            let why = match s.ifindex {
                None => format!("interface {iface} does not exist (deleted); waiting for it"),
                Some(i) => format!(
                    "interface {iface} was re-created (index {bound} -> {i}); reopening the socket"
                ),
            };
            warn!(
                family = self.family.name(),
                interface = %iface,
                reason = %why,
                "vrrp: the interface went away: fault (no adverts, no VIPs) until it is back"
            );
            self.set_address_fault(why);
            self.sync_fault().await;
        }
        if self.link_lost {
            let Some(index) = s.ifindex else {
                return;
            };
            match self.reopen() {
                Ok(()) => {
                    self.link_lost = false;
                    self.reopen_retry = None;
                    info!(
                        family = self.family.name(),
                        interface = %iface,
                        ifindex = self.socket.ifindex(),
                        "vrrp: the interface is back: socket reopened on it"
                    );
                    self.with_status(|st| st.counters.socket_reopens += 1);
                }
                Err(e) => {
                    let why = format!(
                        "interface {iface} is back (index {index}) but its VRRP socket cannot \
                         be opened: {e:#}"
                    );
                    if self.address_fault.as_deref() != Some(why.as_str()) {
                        warn!(family = self.family.name(), reason = %why, "vrrp: retrying");
                    }
                    self.set_address_fault(why);
                    self.reopen_retry = Some(Instant::now() + RETRY);
                    return;
                }
            }
        }
        self.follow(&s.addrs);
        self.sync_fault().await;
    }

    /// A fresh socket on whatever interface has the name now, and its MAC (a re-created veth
    /// usually has another one) for the announcements.
    fn reopen(&mut self) -> Result<()> {
        let iface = &self.cfg.interface;
        let socket = Socket::open(iface, self.family, self.peers.is_empty())?;
        let mac = io::mac_of(iface).with_context(|| format!("reading the MAC of {iface}"))?;
        self.socket = socket;
        self.mac = mac;
        Ok(())
    }

    /// Holds the router in fault with `why` shown as `address_fault` (no interface: no usable
    /// primary address either).
    fn set_address_fault(&mut self, why: String) {
        self.with_status(|st| st.address_fault = Some(why.clone()));
        self.address_fault = Some(why);
    }
}
