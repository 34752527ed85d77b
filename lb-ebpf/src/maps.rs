//! Every map of the object. Sizes and value types come from lb-common so the control plane
//! writes exactly what the data plane reads.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use lb_common::{
    ADDR_FILTER_WORDS, Backend, CONN_TABLE_SIZE, ConnEntry, FloodWindow, FlowKey, HarnessPacket,
    LcList, MAX_BACKENDS, MAX_VIPS, REASON_COUNT, Settings, TABLE_ENTRIES, TABLE_SLOTS,
    TrafficStats, VipKey, VipMeta,
    capture::{CAPTURE_RING_BYTES, CAPTURE_STAT_COUNT, CaptureConfig, CaptureRecord},
};

/// (address, port, protocol) -> VIP; `proto == 0` entries mark VIP addresses.
#[map(name = "VIPS")]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(MAX_VIPS * 2, 0);

/// One bit per `addr_filter_bit` value, set for every VIP address (the control plane sets a
/// bit before the address's entries exist and clears it after they are gone).
#[map(name = "VIP_ADDR_FILTER")]
pub static VIP_ADDR_FILTER: Array<u64> = Array::with_max_entries(ADDR_FILTER_WORDS, 0);

/// VIP id -> `VIP_MODE_VALID | mode` (0: the id is free). Established flows are forwarded
/// from the connection table and this array alone, without the VIP hash lookup.
#[map(name = "VIP_MODES")]
pub static VIP_MODES: Array<u32> = Array::with_max_entries(MAX_VIPS, 0);

/// Backend id -> backend.
#[map(name = "BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Lookup tables, flat: `((vip_id * 2 + slot) * MAX_TABLE) + position` -> backend id.
#[map(name = "TABLES")]
pub static TABLES: Array<u32> = Array::with_max_entries(TABLE_ENTRIES, 0);

/// Least-connections candidates, `vip_id * 2 + slot`.
#[map(name = "LC_LISTS")]
pub static LC_LISTS: Array<LcList> = Array::with_max_entries(MAX_VIPS * TABLE_SLOTS, 0);

/// Active connections per backend: incremented here on every new flow, recounted by the
/// control plane's sweep of the connection table.
#[map(name = "LC_CONNS")]
pub static LC_CONNS: Array<u64> = Array::with_max_entries(MAX_BACKENDS, 0);

/// The connection table: an established flow keeps its backend. The common LRU (one set of
/// lists, per-CPU free lists refilled in batches) measured 15-20% faster per new flow here than
/// BPF_F_NO_COMMON_LRU, whose pop rotates the per-CPU lists on every insert.
#[map(name = "CONNS")]
pub static CONNS: LruHashMap<FlowKey, ConnEntry> = LruHashMap::with_max_entries(CONN_TABLE_SIZE, 0);

/// Per-CPU position in each VIP's weighted round-robin period.
#[map(name = "RR_CURSOR")]
pub static RR_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

/// The LRU flood guard's per-CPU window (new flows counted since the window began). Not
/// pinned: a restarted daemon simply starts a new window.
#[map(name = "FLOOD_WINDOW")]
pub static FLOOD_WINDOW: PerCpuArray<FloodWindow> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

#[map(name = "VIP_STATS")]
pub static VIP_STATS: PerCpuArray<TrafficStats> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

#[map(name = "BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<TrafficStats> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "REASONS")]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// Addresses the decap program accepts as the outer destination (value unused).
#[map(name = "DECAP_ADDRS")]
pub static DECAP_ADDRS: HashMap<VipKey, u32> = HashMap::with_max_entries(64, 0);

/// Benchmark harness: the packet restored before every repeat, and the program under test.
#[map(name = "HARNESS_PACKET")]
pub static HARNESS_PACKET: Array<HarnessPacket> = Array::with_max_entries(1, 0);

#[map(name = "HARNESS_PROGS")]
pub static HARNESS_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Capture (`capture.rs`): the flag and filters, the ring the records go to, this CPU's
/// record being built, and the capture's counters. Not pinned (see `lb_common::capture`).
#[map(name = "CAPTURE_CONF")]
pub static CAPTURE_CONF: Array<CaptureConfig> = Array::with_max_entries(1, 0);

#[map(name = "CAPTURE_RING")]
pub static CAPTURE_RING: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);

#[map(name = "CAPTURE_SCRATCH")]
pub static CAPTURE_SCRATCH: PerCpuArray<CaptureRecord> = PerCpuArray::with_max_entries(1, 0);

/// `xdp_balancer_captured`, the tail call `xdp_balancer` makes while a capture runs (set when
/// the first capture starts).
#[map(name = "CAPTURE_PROGS")]
pub static CAPTURE_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[map(name = "CAPTURE_STATS")]
pub static CAPTURE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CAPTURE_STAT_COUNT, 0);
