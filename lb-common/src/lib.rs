//! Types shared by the XDP data plane (`lb-ebpf`) and the control plane (`lb-userspace`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, because the same bytes are
//! written by userspace into BPF maps and read by the kernel program. Addresses and ports are kept
//! in network byte order exactly as they appear on the wire, so the data plane never swaps bytes
//! on the fast path.
#![no_std]

pub mod capture;
pub mod csum;
pub mod hash;
#[cfg(feature = "user")]
pub mod user;

/// Bump when any map layout below changes: pin paths include it so that a new daemon never
/// adopts maps written with an older layout.
pub const LAYOUT_VERSION: u32 = 9;

/// Words of the VIP address filter (`VIP_ADDR_FILTER`): 65,536 bits, one per value of
/// [`addr_filter_bit`]. A clear bit proves the destination is no VIP address, so traffic that
/// is not ours leaves after one array load instead of two hash lookups.
pub const ADDR_FILTER_WORDS: u32 = 1024;

/// The filter bit of an address (IPv4 in `addr[0]`, the other words zero): the address words
/// folded and spread by a multiplicative hash, top 16 bits.
#[inline(always)]
pub const fn addr_filter_bit(addr: &[u32; 4]) -> u32 {
    let x = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    x.wrapping_mul(0x9e37_79b1) >> 16
}

/// `VIP_MODES` value bit: the VIP id is in use (the low byte is its `ForwardMode`).
pub const VIP_MODE_VALID: u32 = 0x100;

/// Number of VIP slots (per-VIP arrays are indexed by `VipMeta::id`).
pub const MAX_VIPS: u32 = 64;
/// Number of backend slots (backend arrays are indexed by backend id).
pub const MAX_BACKENDS: u32 = 4096;
/// Largest lookup table per VIP and slot. Maglev tables must be a prime no larger than this.
pub const MAX_TABLE: u32 = 65537;
/// Default Maglev table size (prime).
pub const DEFAULT_TABLE: u32 = 65537;
/// Each VIP has two table slots: the control plane writes the idle one completely, then flips
/// `VipMeta::slot` in one hash-map update, so packets never see a half-written table.
pub const TABLE_SLOTS: u32 = 2;
/// Entries of the flat table array: `MAX_VIPS * TABLE_SLOTS * MAX_TABLE`.
pub const TABLE_ENTRIES: u32 = MAX_VIPS * TABLE_SLOTS * MAX_TABLE;
/// Backends a least-connections VIP compares per new flow (bounded loop in the verifier).
pub const MAX_LC_BACKENDS: usize = 32;
/// Default size of the connection table (LRU).
pub const CONN_TABLE_SIZE: u32 = 262_144;
/// Default LRU flood guard (`Settings::max_new_flows_per_cpu`): new flows per second per CPU
/// above which `maglev` and `ip-hash` flows are forwarded by their hash without a
/// connection-table entry (Katran's `MAX_CONN_RATE`).
pub const DEFAULT_MAX_NEW_FLOWS_PER_CPU: u32 = 125_000;
/// Flood-guard window in jiffies when `Settings::jiffies_per_s` is unset (the guard is off
/// then, and the window only paces the clock anchor).
pub const DEFAULT_JIFFIES_PER_S: u32 = 1000;
/// Largest packet prefix the benchmark harness restores between repeats.
pub const HARNESS_MAX_PACKET: usize = 256;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

/// Backend selection algorithm of a VIP (`VipMeta::algo`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Maglev consistent hashing on the 5-tuple.
    Maglev = 0,
    /// The same Maglev table, hashed on the source address only (session affinity).
    IpHash = 1,
    /// Smooth weighted round-robin: the table holds one period of the sequence.
    WeightedRoundRobin = 2,
    /// Fewest active connections relative to weight.
    LeastConnections = 3,
}

impl Algorithm {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Maglev),
            1 => Some(Self::IpHash),
            2 => Some(Self::WeightedRoundRobin),
            3 => Some(Self::LeastConnections),
            _ => None,
        }
    }
}

/// Forwarding mode of a VIP (`VipMeta::mode`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardMode {
    /// Rewrite the destination MAC to the backend's and transmit (direct server return).
    DsrL2 = 0,
    /// IPv4-in-IPv4 / IPv6-in-IPv6 encapsulation to the backend.
    Ipip = 1,
}

/// Key of the `VIPS` hash map. `proto == 0` marks an *address entry*: present for every
/// address that has at least one VIP, used for ICMP and fragment handling.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    /// IPv4 in `addr[0]`, IPv6 in all four words; network byte order.
    pub addr: [u32; 4],
    /// Network byte order; 0 means every port of the address.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of the `VIPS` hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// Index into the per-VIP arrays (tables, stats, least-connection lists).
    pub id: u32,
    /// Active table slot, 0 or 1.
    pub slot: u32,
    /// Used length of the active slot: the Maglev size, the WRR period, or the LC list length.
    pub table_len: u32,
    pub algo: u8,
    pub mode: u8,
    /// `VIP_F_*` bits.
    pub flags: u8,
    pub _pad: u8,
    /// Used length of the other slot (the table this one replaced): second chance hashes a
    /// flow into it to find the backend the flow had before the flip.
    pub prev_len: u32,
    pub _pad2: u32,
    /// Second chance applies to packets that miss the connection table before this time
    /// (`CLOCK_MONOTONIC_COARSE` ns, `bpf_ktime_get_coarse_ns`): the flip time plus the
    /// VIP's window. 0: no flip to bridge.
    pub second_chance_until: u64,
}

/// `VipMeta::flags`: second chance is on for this VIP (docs/dataplane.md, "Second chance").
pub const VIP_F_SECOND_CHANCE: u8 = 1;

/// UDP destination port of the GUE packets that carry a second choice (Katran's GUE port;
/// GUE's version field tells our variant-0 header from Katran's variant 1).
pub const SECOND_CHANCE_PORT: u16 = 6080;
/// GUE header type of our private data (first byte of the private data).
pub const SECOND_CHANCE_TYPE: u8 = 0x53;
/// Hops a second-chance packet may still take when the balancer sends it: one redirect, from
/// the current backend to the previous one.
pub const SECOND_CHANCE_HOPS: u8 = 1;
/// GUE flag (low bit of the 16-bit flags field): private data follows.
pub const GUE_FLAG_PRIVATE: u16 = 0x0001;

/// `Backend::flags`: the backend may receive packets. Cleared when a backend is removed or
/// fails, so flows pinned to it in the connection table are re-hashed.
pub const BACKEND_F_ACTIVE: u8 = 1;

/// Value of the `BACKENDS` array (index = backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    /// MAC of the backend (dsr-l2) or of the next hop towards it (ipip).
    pub mac: [u8; 6],
    pub family: u8,
    pub flags: u8,
    /// Bumped each time the slot is given to a different backend: connection-table entries
    /// carry the generation they were made with, so a reused slot never inherits old flows.
    pub generation: u32,
}

/// Key of the connection table and of the flow hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// `ConnEntry::flags`: a FIN or RST was seen on this flow.
pub const CONN_F_CLOSING: u8 = 1;

/// Value of the connection table: 16 bytes, as Katran's (every insert copies it, and a smaller
/// element is less memory per flow). Backend ids fit 16 bits (`MAX_BACKENDS`), VIP ids 8
/// (`MAX_VIPS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEntry {
    pub backend: u16,
    pub vip_id: u8,
    pub flags: u8,
    pub generation: u32,
    /// `bpf_jiffies64()` of the last packet: the verifier inlines it into one load, where a
    /// clock helper call cost ~15-20 ns per table hit. Userspace converts it to monotonic
    /// time with the data plane's clock anchor (`FloodWindow::anchor_*`).
    pub last_seen: u64,
}

const _: () = assert!(MAX_BACKENDS <= 1 << 16 && MAX_VIPS <= 1 << 8);

/// Least-connections candidate list of one VIP slot (`LC_LISTS`, index `id * 2 + slot`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LcList {
    pub backends: [u32; MAX_LC_BACKENDS],
    pub weights: [u32; MAX_LC_BACKENDS],
}

impl Default for LcList {
    fn default() -> Self {
        Self {
            backends: [0; MAX_LC_BACKENDS],
            weights: [0; MAX_LC_BACKENDS],
        }
    }
}

/// Global settings of the balancer (`SETTINGS` array, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Outer source address of IPv4-in-IPv4 packets (network order).
    pub ipip_src_v4: u32,
    /// Outer source address of IPv6-in-IPv6 packets (network order).
    pub ipip_src_v6: [u32; 4],
    /// Largest IP packet the path towards the backends carries (0: no check). A TCP or UDP
    /// packet that would exceed it once encapsulated is answered with ICMP "fragmentation
    /// needed" / "packet too big" (`tx_too_big`); anything else is dropped (`drop_too_big`).
    pub backend_mtu: u32,
    /// The interfaces the balancer is attached to and their MACs. A frame arriving on one of
    /// them for another MAC (flooded by a switch, or meant for the other balancer) is not
    /// ours: it is passed to the kernel (which drops it as "other host"), never forwarded
    /// twice. Unused slots have ifindex 0; an interface not listed is not checked.
    pub ifaces: [IfaceMac; MAX_IFACES],
    /// LRU flood guard: when one CPU sees more new flows than this in the current one-second
    /// window, new flows of `maglev` and `ip-hash` VIPs are forwarded by the hash without a
    /// connection-table entry (the hash gives the same backend on the next packet), so a SYN
    /// flood cannot evict established flows. `weighted-round-robin` and `least-connections`
    /// always insert: their choice cannot be recomputed. 0 turns the guard off.
    pub max_new_flows_per_cpu: u32,
    /// The kernel's HZ (jiffies per second), the flood window's length: filled in by
    /// `Maps::set_settings` from the coarse clock's resolution.
    pub jiffies_per_s: u32,
}

/// Per-CPU state of new flows (`FLOOD_WINDOW`, index 0): the flood guard's one-second window,
/// and a clock anchor (jiffies and coarse monotonic ns read in the same run, once per window)
/// from which userspace converts connection-table times (jiffies) to monotonic time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodWindow {
    /// Jiffies at which the current window began.
    pub start_jiffies: u64,
    /// New flows seen in the current window.
    pub count: u64,
    /// `bpf_jiffies64()` when this CPU's current window began.
    pub anchor_jiffies: u64,
    /// `bpf_ktime_get_coarse_ns()` at the same moment.
    pub anchor_ns: u64,
}

pub const MAX_IFACES: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceMac {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Per-CPU traffic counters of one VIP or backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
}

/// Why the data plane did what it did; one per-CPU counter each (`REASONS` array).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): passed untouched.
    PassNonIp = 0,
    /// IP traffic for an address or port that is no VIP (VRRP, ND, local traffic).
    PassNotVip = 1,
    /// Headers too short to tell whether the packet is for a VIP: left to the kernel.
    PassTruncated = 2,
    /// ICMP for a VIP address that the balancer does not handle (left to the kernel).
    PassIcmp = 3,
    /// Forwarded to a backend.
    TxForward = 4,
    /// An echo request to a VIP answered by the balancer.
    TxEchoReply = 5,
    /// An ICMP error about a VIP flow forwarded to the backend that owns the flow.
    TxIcmpError = 6,
    /// A too-big packet answered with ICMP "fragmentation needed" / "packet too big".
    TxTooBig = 7,
    /// A VIP packet with a malformed header: bad IHL, an IP length the frame does not hold,
    /// a truncated transport header or a bad TCP data offset.
    DropMalformed = 8,
    /// An IP fragment for a VIP address (see the fragment policy in docs/dataplane.md).
    DropFragment = 9,
    /// A VIP with no usable backend.
    DropNoBackend = 10,
    /// Encapsulated packet larger than the backend MTU and not answerable with ICMP.
    DropTooBig = 11,
    /// A helper call failed (adjust_head, map update): should never happen.
    DropInternal = 12,
    /// Decap program: an encapsulated packet for us, decapsulated and passed up.
    PassDecap = 13,
    /// A frame for another host's MAC (flooded to us): left to the kernel, which drops it.
    PassOtherHost = 14,
    /// A new flow of a `maglev` or `ip-hash` VIP forwarded by the hash without a
    /// connection-table entry: the LRU flood guard was on (too many new flows on this CPU).
    TxForwardUnpinned = 15,
    /// An IPv6 extension-header chain the balancer does not forward, to a VIP address: a
    /// routing header with segments left, a hop-by-hop header that is not first, or more than
    /// four extension headers (docs/dataplane.md, "IPv6 extension headers").
    DropExtHeader = 16,
    /// A packet that missed the connection table of a second-chance VIP shortly after its
    /// table flipped, forwarded (GUE) to the current choice carrying the previous one.
    TxSecondChance = 17,
    /// Decap program: a second-chance packet for a flow this host knows (a socket other than
    /// a listener), or a bare SYN: decapsulated and passed up.
    PassSecondChance = 18,
    /// Decap program: a non-SYN second-chance packet without a socket here, sent on towards
    /// the previous backend with one hop less.
    TxSecondChanceRedirect = 19,
    /// Decap program: a second-chance packet without a socket here and no hop left.
    DropHopLimit = 20,
}

pub const REASON_COUNT: u32 = 21;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::PassNonIp,
        Reason::PassNotVip,
        Reason::PassTruncated,
        Reason::PassIcmp,
        Reason::TxForward,
        Reason::TxEchoReply,
        Reason::TxIcmpError,
        Reason::TxTooBig,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropNoBackend,
        Reason::DropTooBig,
        Reason::DropInternal,
        Reason::PassDecap,
        Reason::PassOtherHost,
        Reason::TxForwardUnpinned,
        Reason::DropExtHeader,
        Reason::TxSecondChance,
        Reason::PassSecondChance,
        Reason::TxSecondChanceRedirect,
        Reason::DropHopLimit,
    ];

    /// Stable name used in metrics and tools.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNonIp => "pass_non_ip",
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassIcmp => "pass_icmp",
            Reason::TxForward => "tx_forward",
            Reason::TxEchoReply => "tx_echo_reply",
            Reason::TxIcmpError => "tx_icmp_error",
            Reason::TxTooBig => "tx_too_big",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropFragment => "drop_fragment",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropTooBig => "drop_too_big",
            Reason::DropInternal => "drop_internal",
            Reason::PassDecap => "pass_decap",
            Reason::PassOtherHost => "pass_other_host",
            Reason::TxForwardUnpinned => "tx_forward_unpinned",
            Reason::DropExtHeader => "drop_ext_header",
            Reason::TxSecondChance => "tx_second_chance",
            Reason::PassSecondChance => "pass_second_chance",
            Reason::TxSecondChanceRedirect => "tx_second_chance_redirect",
            Reason::DropHopLimit => "drop_hop_limit",
        }
    }
}

/// Names of the maps and programs in the object, shared so that both sides agree.
pub mod names {
    pub const PROG_BALANCER: &str = "xdp_balancer";
    pub const PROG_DECAP: &str = "xdp_decap";
    pub const PROG_PASS: &str = "xdp_pass";
    pub const PROG_FLOOR: &str = "xdp_floor";
    pub const PROG_HARNESS: &str = "xdp_harness";
    /// `xdp_balancer` while a capture runs (its tail call, loaded for the first capture).
    pub const PROG_BALANCER_CAPTURED: &str = "xdp_balancer_captured";
    /// `xdp_balancer` without the capture flag: the benchmark's baseline for the flag's cost.
    pub const PROG_BALANCER_UNHOOKED: &str = "xdp_balancer_unhooked";

    pub const MAP_VIPS: &str = "VIPS";
    pub const MAP_BACKENDS: &str = "BACKENDS";
    pub const MAP_TABLES: &str = "TABLES";
    pub const MAP_LC_LISTS: &str = "LC_LISTS";
    pub const MAP_LC_CONNS: &str = "LC_CONNS";
    pub const MAP_CONNS: &str = "CONNS";
    pub const MAP_RR_CURSOR: &str = "RR_CURSOR";
    pub const MAP_SETTINGS: &str = "SETTINGS";
    pub const MAP_VIP_STATS: &str = "VIP_STATS";
    pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
    pub const MAP_REASONS: &str = "REASONS";
    pub const MAP_DECAP_ADDRS: &str = "DECAP_ADDRS";
    pub const MAP_VIP_ADDR_FILTER: &str = "VIP_ADDR_FILTER";
    pub const MAP_VIP_MODES: &str = "VIP_MODES";
    pub const MAP_FLOOD_WINDOW: &str = "FLOOD_WINDOW";
    pub const MAP_HARNESS_PACKET: &str = "HARNESS_PACKET";
    pub const MAP_HARNESS_PROGS: &str = "HARNESS_PROGS";
    pub const MAP_CAPTURE_CONF: &str = "CAPTURE_CONF";
    pub const MAP_CAPTURE_RING: &str = "CAPTURE_RING";
    pub const MAP_CAPTURE_SCRATCH: &str = "CAPTURE_SCRATCH";
    pub const MAP_CAPTURE_STATS: &str = "CAPTURE_STATS";
    pub const MAP_CAPTURE_PROGS: &str = "CAPTURE_PROGS";
}

/// The packet the benchmark harness restores before every repeat.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HarnessPacket {
    pub len: u32,
    /// When non-zero: offset of 4 bytes (a source address word) that get a new value on
    /// every run, so that every run is a new flow.
    pub vary_offset: u32,
    /// Run counter used for `vary_offset`.
    pub counter: u32,
    pub _pad: u32,
    pub bytes: [u8; HARNESS_MAX_PACKET],
}

impl Default for HarnessPacket {
    fn default() -> Self {
        Self {
            len: 0,
            vary_offset: 0,
            counter: 0,
            _pad: 0,
            bytes: [0; HARNESS_MAX_PACKET],
        }
    }
}
