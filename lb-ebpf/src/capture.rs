//! The capture hook (`lbctl capture`, `lb_common::capture`). Every packet reads one flag
//! ([`on`]); only while a capture runs does a packet pay for the rest: a tail call
//! ([`divert`]) to `xdp_balancer_captured`, where [`begin`] copies its first bytes as received
//! into this CPU's scratch record and [`finish`] adds the verdict, applies the filters and the
//! sampling, and writes the record (and, when asked, a second one with the packet as sent) to
//! the ring.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_ringbuf_output, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use lb_common::{
    AF_INET, AF_INET6, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6,
    capture::{
        CAPTURE_F_OUTPUT, CAPTURE_HEADER_LEN, CAPTURE_MAX_SNAP, CAPTURE_NONE, CAPTURE_PARSE_BYTES,
        CAPTURE_POINT_INPUT, CAPTURE_POINT_OUTPUT, CAPTURE_STAT_LOST, CAPTURE_STAT_MATCHED,
        CAPTURE_STAT_WRITTEN, CaptureConfig, CaptureRecord,
    },
};

use crate::{
    maps::{CAPTURE_CONF, CAPTURE_PROGS, CAPTURE_RING, CAPTURE_SCRATCH, CAPTURE_STATS},
    stats::Verdict,
};

/// The capture flag: a global variable (the object's `.bss`, which the loader makes a
/// one-entry array). Reading it is one load from an address the verifier knows: no map
/// lookup, no helper call. Userspace sets it after the filters and clears it to stop.
#[unsafe(no_mangle)]
static mut CAPTURE_ON: u32 = 0;

/// Whether a capture runs now (a volatile load: userspace changes it under the program).
#[inline(always)]
pub fn on() -> bool {
    unsafe { core::ptr::read_volatile(&raw const CAPTURE_ON) != 0 }
}

/// Hands the packet to `xdp_balancer_captured`. Returns only if that program is not loaded
/// (the packet then goes on uncaptured).
#[inline(always)]
pub fn divert(ctx: &XdpContext) {
    unsafe { CAPTURE_PROGS.tail_call(ctx, 0) };
}

/// Copies the first bytes of the packet into `rec.data`; returns how many (0: none).
#[inline(always)]
fn copy_packet(ctx: *mut xdp_md, rec: &mut CaptureRecord, want: u32) -> u32 {
    let (data, end) = unsafe { ((*ctx).data, (*ctx).data_end) };
    let len = end.wrapping_sub(data);
    let n = if len < want { len } else { want };
    if n == 0 || n > CAPTURE_MAX_SNAP {
        return 0;
    }
    // The same value, in a form whose range (1..=CAPTURE_MAX_SNAP) the verifier can see
    // (LLVM folds the check above into earlier ones it cannot follow).
    let n = ((n - 1) & (CAPTURE_MAX_SNAP - 1)) + 1;
    let dst = rec.data.as_mut_ptr() as *mut core::ffi::c_void;
    if unsafe { bpf_xdp_load_bytes(ctx as *mut _, 0, dst, n) } != 0 {
        return 0;
    }
    n
}

/// The bytes worth copying: the snap length, and enough headers for the client filter.
#[inline(always)]
fn wanted(conf: &CaptureConfig) -> u32 {
    let snap = if conf.snap_len == 0 || conf.snap_len > CAPTURE_MAX_SNAP {
        CAPTURE_MAX_SNAP
    } else {
        conf.snap_len
    };
    if snap < CAPTURE_PARSE_BYTES {
        CAPTURE_PARSE_BYTES
    } else {
        snap
    }
}

/// Keeps the packet as it arrived, and arms this CPU's record.
#[inline(always)]
pub fn begin(ctx: *mut xdp_md) {
    let (Some(conf), Some(rec)) = (CAPTURE_CONF.get(0), CAPTURE_SCRATCH.get_ptr_mut(0)) else {
        return;
    };
    let rec = unsafe { &mut *rec };
    let (data, end, ifindex, queue) = unsafe {
        (
            (*ctx).data,
            (*ctx).data_end,
            (*ctx).ingress_ifindex,
            (*ctx).rx_queue_index,
        )
    };
    rec.hdr.ts_ns = unsafe { bpf_ktime_get_ns() };
    rec.hdr.pkt_len = end.wrapping_sub(data);
    rec.hdr.ifindex = ifindex;
    rec.hdr.rx_queue = queue;
    rec.hdr.cap_len = copy_packet(ctx, rec, wanted(conf));
    rec.armed = 1;
}

/// The source address of the copied packet, if it is IP and long enough: (family, words).
#[inline(always)]
fn source(rec: &CaptureRecord) -> Option<(u32, [u32; 4])> {
    let d = &rec.data;
    let have = rec.hdr.cap_len as usize;
    let mut l3 = 14;
    let mut proto = u16::from_be_bytes([d[12], d[13]]);
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = u16::from_be_bytes([d[16], d[17]]);
        l3 = 18;
    }
    let word = |at: usize| u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    if proto == ETH_P_IP && have >= l3 + 20 {
        Some((AF_INET as u32, [word(l3 + 12), 0, 0, 0]))
    } else if proto == ETH_P_IPV6 && have >= l3 + 24 {
        let s = l3 + 8;
        Some((
            AF_INET6 as u32,
            [word(s), word(s + 4), word(s + 8), word(s + 12)],
        ))
    } else {
        None
    }
}

#[inline(always)]
fn matches(conf: &CaptureConfig, rec: &CaptureRecord, reason: u32, vip: u32, backend: u32) -> bool {
    if conf.vip_id != CAPTURE_NONE && conf.vip_id != vip {
        return false;
    }
    if conf.backend_id != CAPTURE_NONE && conf.backend_id != backend {
        return false;
    }
    if conf.reasons != 0 && conf.reasons & (1u64 << (reason & 63)) == 0 {
        return false;
    }
    if conf.client_family != 0 {
        let Some((family, src)) = source(rec) else {
            return false;
        };
        if family != conf.client_family {
            return false;
        }
        // Indexes, not zipped iterators: a plain bounded loop for the verifier.
        #[allow(clippy::needless_range_loop)]
        for i in 0..4 {
            if src[i] & conf.client_mask[i] != conf.client[i] {
                return false;
            }
        }
    }
    true
}

#[inline(always)]
fn count(index: u32) -> u64 {
    match CAPTURE_STATS.get_ptr_mut(index) {
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

/// Writes the scratch record (header and `cap_len` bytes) to the ring.
#[inline(always)]
fn emit(rec: &mut CaptureRecord) {
    let n = rec.hdr.cap_len & (CAPTURE_MAX_SNAP * 2 - 1);
    if n > CAPTURE_MAX_SNAP {
        return;
    }
    let size = CAPTURE_HEADER_LEN as u64 + n as u64;
    let ptr = rec as *mut CaptureRecord as *mut core::ffi::c_void;
    let ring = &CAPTURE_RING as *const _ as *mut core::ffi::c_void;
    if unsafe { bpf_ringbuf_output(ring, ptr, size, 0) } == 0 {
        count(CAPTURE_STAT_WRITTEN);
    } else {
        count(CAPTURE_STAT_LOST);
    }
}

/// The verdict of a packet [`begin`] kept: returns its action. The verdict goes through the
/// scratch record rather than as arguments, so that every path of the pipeline reaches the
/// out-of-line [`record`] in the same state and the verifier checks it once, not once per
/// verdict.
#[inline(always)]
pub fn finish(ctx: *mut xdp_md, v: &Verdict) -> u32 {
    let Some(rec) = CAPTURE_SCRATCH.get_ptr_mut(0) else {
        return v.action;
    };
    let rec = unsafe { &mut *rec };
    // Not kept at its start: the capture began while the packet was on its way.
    if rec.armed == 0 {
        return v.action;
    }
    rec.armed = 0;
    rec.hdr.vip_id = v.vip;
    rec.hdr.backend_id = v.backend;
    rec.hdr.action = v.action;
    rec.hdr.reason = v.reason as u32;
    record(ctx)
}

/// Filters, samples and writes the scratch record; returns the verdict's action.
#[inline(never)]
fn record(ctx: *mut xdp_md) -> u32 {
    let Some(rec) = CAPTURE_SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let rec = unsafe { &mut *rec };
    let action = rec.hdr.action;
    // The action is read back from the map: give the verifier its range.
    let action = if action > xdp_action::XDP_REDIRECT {
        xdp_action::XDP_ABORTED
    } else {
        action
    };
    let Some(conf) = CAPTURE_CONF.get(0) else {
        return action;
    };
    if !matches(
        conf,
        rec,
        rec.hdr.reason,
        rec.hdr.vip_id,
        rec.hdr.backend_id,
    ) {
        return action;
    }
    let seen = count(CAPTURE_STAT_MATCHED);
    if conf.sample_every > 1 && !seen.is_multiple_of(conf.sample_every as u64) {
        return action;
    }
    let snap = wanted(conf);
    let snap = if conf.snap_len != 0 && conf.snap_len < snap {
        conf.snap_len
    } else {
        snap
    };
    rec.hdr.point = CAPTURE_POINT_INPUT as u32;
    rec.hdr.cpu = unsafe { bpf_get_smp_processor_id() };
    if rec.hdr.cap_len > snap {
        rec.hdr.cap_len = snap;
    }
    emit(rec);
    if conf.flags & CAPTURE_F_OUTPUT != 0 && action == xdp_action::XDP_TX {
        let (data, end) = unsafe { ((*ctx).data, (*ctx).data_end) };
        rec.hdr.pkt_len = end.wrapping_sub(data);
        rec.hdr.point = CAPTURE_POINT_OUTPUT as u32;
        rec.hdr.cap_len = copy_packet(ctx, rec, snap);
        emit(rec);
    }
    action
}
