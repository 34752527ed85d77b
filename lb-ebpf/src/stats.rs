//! Per-CPU counters: no atomics, no sharing between CPUs on the fast path.

use aya_ebpf::{bindings::xdp_action, maps::PerCpuArray};
use lb_common::{Reason, TrafficStats};

use crate::maps::{BACKEND_STATS, REASONS, VIP_STATS};

#[inline(always)]
pub fn reason(r: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(r as u32) {
        unsafe { *c += 1 };
    }
}

/// Counts `r` and passes the packet to the kernel.
#[inline(always)]
pub fn pass(r: Reason) -> u32 {
    reason(r);
    xdp_action::XDP_PASS
}

/// Counts `r` and drops the packet.
#[inline(always)]
pub fn drop(r: Reason) -> u32 {
    reason(r);
    xdp_action::XDP_DROP
}

#[inline(always)]
fn traffic(map: &PerCpuArray<TrafficStats>, index: u32, bytes: usize, new_conn: bool) {
    if let Some(s) = map.get_ptr_mut(index) {
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += bytes as u64;
        if new_conn {
            s.new_conns += 1;
        }
    }
}

#[inline(always)]
pub fn forwarded(vip_id: u32, backend: u32, bytes: usize, new_conn: bool) {
    traffic(&VIP_STATS, vip_id, bytes, new_conn);
    traffic(&BACKEND_STATS, backend, bytes, new_conn);
}
