//! What VRRP tracking reads from the daemon: which tracked VIPs could take no new flow.

use std::time::Instant;

use lb_vrrp::track::Tracked;

use super::Shared;

impl Tracked for Shared {
    async fn vips_without_backends(&self, names: &[String]) -> Vec<String> {
        let inner = self.inner.lock().await;
        let now = Instant::now();
        names
            .iter()
            .filter(|name| {
                inner
                    .vips
                    .get(*name)
                    .is_none_or(|v| !v.can_take_new_flows(now))
            })
            .cloned()
            .collect()
    }
}
