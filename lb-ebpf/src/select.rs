//! Backend choice: the connection table first, then the VIP's algorithm for new flows.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

use lb_common::{
    Algorithm, BACKEND_F_ACTIVE, Backend, CONN_F_CLOSING, ConnEntry, DEFAULT_JIFFIES_PER_S,
    FlowKey, MAX_LC_BACKENDS, MAX_TABLE, TABLE_SLOTS, VIP_MODE_VALID, VipMeta,
    hash::{flow_hash, source_hash},
};

use crate::{
    maps::{
        BACKENDS, CONNS, FLOOD_WINDOW, LC_CONNS, LC_LISTS, RR_CURSOR, SETTINGS, TABLES, VIP_MODES,
    },
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

pub struct Choice {
    pub id: u32,
    pub backend: Backend,
    pub new_flow: bool,
    /// A new flow forwarded without a connection-table entry (the flood guard was on).
    pub unpinned: bool,
}

/// The backend a flow's entry may still use: present, active, and the same backend that the
/// entry was made for (not a later occupant of the slot).
#[inline(always)]
fn usable(id: u32, generation: u32) -> Option<Backend> {
    let b = BACKENDS.get(id)?;
    if b.flags & BACKEND_F_ACTIVE == 0 || b.generation != generation {
        return None;
    }
    Some(*b)
}

/// An established flow: its entry's VIP id and forwarding mode.
pub struct Established {
    pub choice: Choice,
    pub vip_id: u32,
    pub mode: u8,
}

/// The flow's connection-table entry, when its VIP id is still in use and its backend still
/// usable: the packet is forwarded without the VIP hash lookup. A removed VIP frees its id
/// (`VIP_MODES` 0) and deactivates its backend slots, so stale entries fall through to the
/// VIP lookup like a missing one.
#[inline(always)]
pub fn established(flow: &FlowKey, tcp_flags: u8, now: u64) -> Option<Established> {
    if syn_only(tcp_flags) {
        return None;
    }
    let entry = CONNS.get_ptr_mut(flow)?;
    let vip_id = unsafe { (*entry).vip_id } as u32;
    let mode = *VIP_MODES.get(vip_id)?;
    if mode & VIP_MODE_VALID == 0 {
        return None;
    }
    let choice = touch(entry, closing(tcp_flags), now)?;
    Some(Established {
        choice,
        vip_id,
        mode: mode as u8,
    })
}

#[inline(always)]
fn closing(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_FIN | TCP_RST) != 0
}

/// A bare SYN opens a flow.
#[inline(always)]
fn syn_only(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The backend of a SYN that found its flow in the table: a retransmission keeps it. An
/// entry whose connection saw a FIN or RST is no retransmission: the client reuses the ports
/// for a new connection (it may, once its side is closed), which must not follow the old one,
/// e.g. to a backend that has been drained since. `None` then, and when the backend is gone.
#[inline(always)]
fn retransmitted(flow: &FlowKey, now: u64) -> Option<Choice> {
    let entry = CONNS.get_ptr_mut(flow)?;
    if unsafe { (*entry).flags } & CONN_F_CLOSING != 0 {
        return None;
    }
    touch(entry, false, now)
}

/// Refreshes an entry found in the table and gives its backend, if still usable.
#[inline(always)]
fn touch(entry: *mut ConnEntry, closing: bool, now: u64) -> Option<Choice> {
    let entry = unsafe { &mut *entry };
    // A failed or removed backend gives None: the caller re-hashes the flow.
    let backend = usable(entry.backend as u32, entry.generation)?;
    // Writing only when the time moved keeps the entry's cache line clean for the other CPUs
    // most of the time.
    if entry.last_seen != now {
        entry.last_seen = now;
    }
    if closing {
        entry.flags |= CONN_F_CLOSING;
    }
    Some(Choice {
        id: entry.backend as u32,
        backend,
        new_flow: false,
        unpinned: false,
    })
}

const BPF_ANY: u64 = 0;
const BPF_NOEXIST: u64 = 1;

/// The backend of a flow that [`established`] did not find: a new flow (or one whose entry is
/// stale) gets one from the VIP's algorithm and a connection-table entry.
#[inline(always)]
pub fn new_flow(flow: &FlowKey, vip: &VipMeta, tcp_flags: u8, now: u64) -> Option<Choice> {
    let closing = closing(tcp_flags);
    // A bare SYN skips the lookup (one hash walk less on the new-flow path, as Katran does)
    // and inserts only if absent, so a retransmitted SYN keeps its backend.
    let syn_only = syn_only(tcp_flags);
    let id = pick(flow, vip)?;
    let backend = *BACKENDS.get(id)?;
    if backend.flags & BACKEND_F_ACTIVE == 0 {
        return None;
    }
    // Under a flood of new flows, a stateless-consistent choice is not pinned: the hash gives
    // the same backend on the flow's next packet, and established entries are not evicted.
    if flooded(now) && vip.algo <= Algorithm::IpHash as u8 {
        return Some(Choice {
            id,
            backend,
            new_flow: true,
            unpinned: true,
        });
    }
    let entry = ConnEntry {
        backend: id as u16,
        generation: backend.generation,
        vip_id: vip.id as u8,
        flags: if closing { CONN_F_CLOSING } else { 0 },
        last_seen: now,
    };
    // A full LRU evicts the oldest entry, so the only expected error is EEXIST for a SYN.
    if CONNS
        .insert(flow, &entry, if syn_only { BPF_NOEXIST } else { BPF_ANY })
        .is_err()
        && syn_only
    {
        if let Some(c) = retransmitted(flow, now) {
            return Some(c);
        }
        // The entry's backend is gone, or its connection was closed and this SYN opens a new
        // one on the same ports: the flow gets the new choice.
        let _ = CONNS.insert(flow, &entry, BPF_ANY);
    }
    if vip.algo == Algorithm::LeastConnections as u8
        && let Some(c) = LC_CONNS.get_ptr_mut(id)
    {
        // A plain add would lose counts between CPUs; the target has no CAS, only XADD.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(c, 1) };
    }
    Some(Choice {
        id,
        backend,
        new_flow: true,
        unpinned: false,
    })
}

/// Counts a new flow in this CPU's one-second window (in jiffies: no clock helper call) and
/// tells whether the window is over the configured rate (`Settings::max_new_flows_per_cpu`,
/// 0: guard off, nothing counted). Each new window also records the clock anchor (jiffies and coarse ns read
/// together) that userspace converts the entries' jiffies with: one clock read per CPU and
/// second, whatever the flow rate.
#[inline(always)]
fn flooded(jiffies: u64) -> bool {
    let Some(w) = FLOOD_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    let w = unsafe { &mut *w };
    let (limit, hz) = match SETTINGS.get(0) {
        Some(s) => (s.max_new_flows_per_cpu as u64, s.jiffies_per_s as u64),
        None => (0, 0),
    };
    let hz = if hz == 0 {
        DEFAULT_JIFFIES_PER_S as u64
    } else {
        hz
    };
    if jiffies.wrapping_sub(w.start_jiffies) >= hz {
        w.start_jiffies = jiffies;
        w.count = 0;
        w.anchor_jiffies = jiffies;
        w.anchor_ns = unsafe { bpf_ktime_get_coarse_ns() };
    }
    // With the guard off nothing is counted (turning it on starts from zero).
    if limit == 0 {
        return false;
    }
    w.count += 1;
    w.count > limit
}

/// First entry of the VIP's active table slot in `TABLES`.
#[inline(always)]
fn table_base(vip: &VipMeta) -> u32 {
    (vip.id * TABLE_SLOTS + (vip.slot & 1)) * MAX_TABLE
}

/// The backend a new flow gets from the VIP's algorithm (no connection-table access).
#[inline(always)]
pub fn pick(flow: &FlowKey, vip: &VipMeta) -> Option<u32> {
    let len = vip.table_len;
    if len == 0 || len > MAX_TABLE {
        return None;
    }
    let pos = match Algorithm::from_u8(vip.algo)? {
        Algorithm::Maglev => flow_hash(flow) % len,
        Algorithm::IpHash => source_hash(flow) % len,
        Algorithm::WeightedRoundRobin => {
            let cursor = RR_CURSOR.get_ptr_mut(vip.id)?;
            let pos = unsafe { *cursor } % len;
            unsafe { *cursor = pos + 1 };
            pos
        }
        Algorithm::LeastConnections => return least_connections(flow, vip, len),
    };
    TABLES.get(table_base(vip) + pos).copied()
}

/// The candidate with the fewest active connections per unit of weight. Ties go to the
/// candidate nearest to a hash-chosen start, so equal backends share new flows evenly.
#[inline(always)]
fn least_connections(flow: &FlowKey, vip: &VipMeta, len: u32) -> Option<u32> {
    let list = LC_LISTS.get(vip.id * TABLE_SLOTS + (vip.slot & 1))?;
    let n = if len > MAX_LC_BACKENDS as u32 {
        MAX_LC_BACKENDS as u32
    } else {
        len
    };
    if n == 0 {
        return None;
    }
    let start = flow_hash(flow) % n;
    let mut best: Option<u32> = None;
    let (mut best_conns, mut best_weight) = (0u64, 0u64);
    for i in 0..MAX_LC_BACKENDS as u32 {
        if i >= n {
            break;
        }
        let mut j = start + i;
        if j >= n {
            j -= n;
        }
        let (Some(&id), Some(&weight)) =
            (list.backends.get(j as usize), list.weights.get(j as usize))
        else {
            break;
        };
        if weight == 0 {
            continue;
        }
        let conns = LC_CONNS.get(id).copied().unwrap_or(0);
        // conns / weight < best_conns / best_weight, without division.
        if best.is_none() || conns * best_weight < best_conns * weight as u64 {
            best = Some(id);
            best_conns = conns;
            best_weight = weight as u64;
        }
    }
    best
}
