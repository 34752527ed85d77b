//! Per-CPU counters: no atomics, no sharing between CPUs on the fast path. Every verdict is
//! counted where it is made, and carries what a capture records about it.

use aya_ebpf::{bindings::xdp_action, maps::PerCpuArray};
use lb_common::{Reason, TrafficStats, capture::CAPTURE_NONE};

use crate::maps::{BACKEND_STATS, REASONS, VIP_STATS};

/// What the program did with a packet, and for which VIP and backend (`CAPTURE_NONE` when
/// there is none). Only a running capture reads more than `action`.
pub struct Verdict {
    pub action: u32,
    pub reason: Reason,
    pub vip: u32,
    pub backend: u32,
}

impl Verdict {
    /// The VIP and backend the verdict was about.
    #[inline(always)]
    pub fn of(self, vip: u32, backend: u32) -> Self {
        Self {
            vip,
            backend,
            ..self
        }
    }
}

#[inline(always)]
fn counted(action: u32, r: Reason) -> Verdict {
    reason(r);
    Verdict {
        action,
        reason: r,
        vip: CAPTURE_NONE,
        backend: CAPTURE_NONE,
    }
}

#[inline(always)]
pub fn reason(r: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(r as u32) {
        unsafe { *c += 1 };
    }
}

/// Counts `r` and passes the packet to the kernel.
#[inline(always)]
pub fn pass(r: Reason) -> Verdict {
    counted(xdp_action::XDP_PASS, r)
}

/// Counts `r` and drops the packet.
#[inline(always)]
pub fn drop(r: Reason) -> Verdict {
    counted(xdp_action::XDP_DROP, r)
}

/// Counts `r` and sends the (rewritten) packet out of the interface it came in on.
#[inline(always)]
pub fn tx(r: Reason) -> Verdict {
    counted(xdp_action::XDP_TX, r)
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
