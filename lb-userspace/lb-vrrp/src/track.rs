//! Tracking: the daemon tells the router to leave mastership when this node cannot serve (the
//! XDP program is not attached, or a tracked VIP has no healthy backend).

use std::{future::Future, sync::Arc, time::Duration};

use lb_config::VrrpConfig;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::kernel;

/// What tracking asks of the daemon that runs the routers.
pub trait Tracked: Send + Sync + 'static {
    /// Of the VIPs `names`, those that have no backend able to take new flows (a VIP that
    /// does not exist counts as one).
    fn vips_without_backends(&self, names: &[String]) -> impl Future<Output = Vec<String>> + Send;
}

/// How often the conditions are checked.
pub const PERIOD: Duration = Duration::from_millis(500);

/// Why this node must not serve, or `None` when it may.
pub fn fault_reason(detached: &[String], unhealthy_vips: &[String]) -> Option<String> {
    if !detached.is_empty() {
        return Some(format!(
            "XDP program not attached on {}",
            detached.join(", ")
        ));
    }
    if !unhealthy_vips.is_empty() {
        return Some(format!(
            "no healthy backend for VIP {}",
            unhealthy_vips.join(", ")
        ));
    }
    None
}

/// Re-evaluates the conditions every [`PERIOD`] and publishes them on `tx` until the router's
/// receiver is gone.
pub async fn track_loop<T: Tracked>(
    cfg: VrrpConfig,
    interfaces: Vec<String>,
    daemon: Arc<T>,
    tx: watch::Sender<bool>,
) {
    let netlink = match kernel::connect() {
        Ok(h) => Some(h),
        Err(e) => {
            warn!(error = %e, "vrrp tracking: no route-netlink socket: the data plane counts as detached");
            None
        }
    };
    let mut last: Option<String> = None;
    let mut tick = tokio::time::interval(PERIOD);
    while !tx.is_closed() {
        tick.tick().await;
        let mut detached = Vec::new();
        if cfg.track_dataplane {
            for iface in &interfaces {
                let attached = match &netlink {
                    Some(h) => kernel::xdp_attached(h, iface).await.unwrap_or_else(|e| {
                        warn!(error = %e, "vrrp tracking: cannot read {iface}'s XDP state");
                        false
                    }),
                    None => false,
                };
                if !attached {
                    detached.push(iface.clone());
                }
            }
        }
        let unhealthy = daemon.vips_without_backends(&cfg.track_vips).await;
        let reason = fault_reason(&detached, &unhealthy);
        if reason != last {
            match &reason {
                Some(r) => warn!(reason = %r, "vrrp tracking: fault, leaving mastership"),
                None => info!("vrrp tracking: healthy again"),
            }
            last = reason.clone();
        }
        tx.send_if_modified(|f| {
            let changed = *f != reason.is_some();
            *f = reason.is_some();
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_dataplane_wins_over_vips() {
        let r = fault_reason(&["eth0".into()], &["web".into()]);
        assert_eq!(r.as_deref(), Some("XDP program not attached on eth0"));
        assert_eq!(
            fault_reason(&[], &["web".into()]).as_deref(),
            Some("no healthy backend for VIP web")
        );
        assert_eq!(fault_reason(&[], &[]), None);
    }
}
