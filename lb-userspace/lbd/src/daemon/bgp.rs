//! What the BGP announcer reads from the daemon: each VIP's address and whether it can take
//! new flows, and whether the XDP program is attached on every interface.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use lb_bgp::{Gate, GateView, VipState};

use super::State;

/// The daemon as the announcer's [`Gate`], with the route-netlink socket that reads the
/// interfaces' XDP state.
pub struct BgpGate {
    state: State,
    netlink: Option<rtnetlink::Handle>,
    /// VIPs that have had a verdict on every backend once. Until then a VIP is settling: a
    /// balancer that just started must not take flows from the others while its table still
    /// lacks backends theirs hold. A backend added later does not withdraw a settled VIP.
    settled: Mutex<HashSet<String>>,
}

impl BgpGate {
    /// Call inside the runtime (the socket's task runs on it).
    pub fn new(state: State) -> Self {
        let netlink = match lb_vrrp::kernel::connect() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "bgp: no route-netlink socket: the data plane counts as detached");
                None
            }
        };
        Self {
            state,
            netlink,
            settled: Mutex::new(HashSet::new()),
        }
    }
}

impl Gate for BgpGate {
    async fn view(&self) -> GateView {
        let mut detached = Vec::new();
        for iface in &self.state.config.dataplane.interfaces {
            let attached = match &self.netlink {
                Some(h) => lb_vrrp::kernel::xdp_attached(h, iface)
                    .await
                    .unwrap_or(false),
                None => false,
            };
            if !attached {
                detached.push(iface.clone());
            }
        }
        let inner = self.state.inner.lock().await;
        let now = Instant::now();
        let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        GateView {
            vips: inner
                .vips
                .values()
                .map(|v| {
                    if !v.awaiting_verdict() {
                        settled.insert(v.cfg.name.clone());
                    }
                    VipState {
                        name: v.cfg.name.clone(),
                        address: v.cfg.address,
                        ready: v.can_take_new_flows(now),
                        settling: !settled.contains(&v.cfg.name),
                    }
                })
                .collect(),
            detached,
        }
    }
}
