//! Tracking: the daemon tells the router to leave mastership when this node cannot serve (the
//! XDP program is not attached, or a tracked VIP has no healthy backend).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::daemon::State;

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

/// Whether the kernel reports an XDP program on `iface` (`ip link show` prints `prog/xdp`).
async fn xdp_attached(iface: &str) -> bool {
    match tokio::process::Command::new("ip")
        .args(["link", "show", "dev", iface])
        .output()
        .await
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).contains("prog/xdp"),
        Err(e) => {
            warn!(error = %e, "vrrp tracking: cannot run `ip link show`");
            false
        }
    }
}

/// Re-evaluates the conditions every [`PERIOD`] and publishes them on `tx` until the router's
/// receiver is gone.
pub async fn track_loop(shared: State, tx: watch::Sender<bool>) {
    let Some(cfg) = shared.config.vrrp.clone() else {
        return;
    };
    let mut last: Option<String> = None;
    let mut tick = tokio::time::interval(PERIOD);
    while !tx.is_closed() {
        tick.tick().await;
        let mut detached = Vec::new();
        if cfg.track_dataplane {
            for iface in &shared.config.dataplane.interfaces {
                if !xdp_attached(iface).await {
                    detached.push(iface.clone());
                }
            }
        }
        let unhealthy: Vec<String> = {
            let inner = shared.inner.lock().await;
            let now = Instant::now();
            cfg.track_vips
                .iter()
                .filter(|name| {
                    inner.vips.get(*name).is_none_or(|v| {
                        !v.backends
                            .values()
                            .any(|b| b.effective_weight(&v.cfg.health, now) > 0)
                    })
                })
                .cloned()
                .collect()
        };
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
