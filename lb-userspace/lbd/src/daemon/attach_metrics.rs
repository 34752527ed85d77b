//! `lbd_dataplane_attached`: whether the kernel still runs an XDP program on each interface
//! lbd attached to. lbd's own list says what it attached; only the kernel knows whether
//! someone has since removed it (`ip link set dev X xdp off`) or re-created the interface, and
//! then traffic bypasses the balancer (the `LbDataplaneDetached` alert).

use std::fmt::Write;

use tracing::warn;

const NAME: &str = "lbd_dataplane_attached";

/// The metric's lines for `interfaces`, asking the kernel through route netlink (as VRRP's
/// tracking does). An interface whose state cannot be read counts as detached.
pub async fn prometheus(interfaces: &[String]) -> String {
    let mut out = format!(
        "# HELP {NAME} 1 while the kernel runs an XDP program on the interface.\n\
         # TYPE {NAME} gauge\n"
    );
    let handle = match lb_vrrp::kernel::connect() {
        Ok(h) => Some(h),
        Err(e) => {
            warn!(error = %e, "metrics: no route-netlink socket: XDP state unknown");
            None
        }
    };
    for iface in interfaces {
        let attached = match &handle {
            Some(h) => lb_vrrp::kernel::xdp_attached(h, iface)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "metrics: cannot read {iface}'s XDP state");
                    false
                }),
            None => false,
        };
        let _ = writeln!(
            out,
            "{NAME}{{interface=\"{}\"}} {}",
            iface.replace('\\', "\\\\").replace('"', "\\\""),
            u8::from(attached)
        );
    }
    out
}
