//! Capture inside the data plane (`lbctl capture`): what `xdp_balancer` saw and did, written to
//! a ring buffer while a capture runs. Off, it costs every packet one load of one global
//! variable (`CAPTURE_ON`, in the object's `.bss`: see [`CAPTURE_FLAG`]); on, `xdp_balancer`
//! tail-calls `xdp_balancer_captured` (`CAPTURE_PROGS`), the same pipeline that copies the
//! packet's first bytes as received and, at the verdict, gives the record the action, reason,
//! VIP and backend, applies the filters (`CAPTURE_CONF`) and the sampling, and writes it to the
//! ring.
//!
//! These maps are not pinned: a restarted daemon loads fresh ones, so a capture never outlives
//! the process that started it.

/// "No VIP" / "no backend" in a record, and "any" in a filter.
pub const CAPTURE_NONE: u32 = u32::MAX;

/// Most bytes of a packet one record holds.
pub const CAPTURE_MAX_SNAP: u32 = 2048;

/// Bytes always copied into the scratch record when the packet has them (whatever the snap
/// length), so that the client-prefix filter can read the source address behind a VLAN tag.
pub const CAPTURE_PARSE_BYTES: u32 = 64;

/// Default size of the ring buffer (bytes; a power of two, a multiple of the page size).
pub const CAPTURE_RING_BYTES: u32 = 4 << 20;

/// `CaptureConfig::flags`: also record the packet as it leaves (after rewriting or
/// encapsulation), as a second record, for packets sent back out (XDP_TX).
pub const CAPTURE_F_OUTPUT: u32 = 1;

/// `CaptureHeader::point`: the packet as it arrived.
pub const CAPTURE_POINT_INPUT: u8 = 0;
/// `CaptureHeader::point`: the packet as the program sent it (XDP_TX).
pub const CAPTURE_POINT_OUTPUT: u8 = 1;

/// Indexes of `CAPTURE_STATS` (per-CPU counters, cleared by whoever starts a capture).
pub const CAPTURE_STAT_MATCHED: u32 = 0;
pub const CAPTURE_STAT_WRITTEN: u32 = 1;
/// Records the ring had no room for (the reader fell behind).
pub const CAPTURE_STAT_LOST: u32 = 2;
pub const CAPTURE_STAT_COUNT: u32 = 3;

/// The map holding the capture flag: the object's global variables (`.bss`, one entry of
/// one u32, `CAPTURE_ON`: 0 no capture). Userspace writes the filters first, then the flag.
pub const CAPTURE_FLAG: &str = ".bss";

/// `CAPTURE_CONF[0]`: the running capture's filters, read only while the flag is set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// `CAPTURE_F_*`.
    pub flags: u32,
    /// Bytes of each packet to keep (1..=`CAPTURE_MAX_SNAP`).
    pub snap_len: u32,
    /// Keep one matching packet in this many (0 or 1: every one), counted per CPU.
    pub sample_every: u32,
    /// Only this VIP id (`CAPTURE_NONE`: any, including packets for no VIP).
    pub vip_id: u32,
    /// Only this backend id (`CAPTURE_NONE`: any).
    pub backend_id: u32,
    /// One bit per `Reason` (bit `reason as u32`); 0: every reason.
    pub reasons: u64,
    /// Only sources inside this prefix (network order words, masked) when `client_family` is
    /// set; IPv4 in word 0.
    pub client: [u32; 4],
    pub client_mask: [u32; 4],
    /// `AF_INET`, `AF_INET6`, or 0 for any source (non-IP packets included).
    pub client_family: u32,
}

/// The head of every record in the ring, followed by `cap_len` bytes of the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureHeader {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the program started on the packet.
    pub ts_ns: u64,
    /// Length of the packet at this point (its linear part).
    pub pkt_len: u32,
    /// Bytes of it that follow this header.
    pub cap_len: u32,
    pub ifindex: u32,
    pub rx_queue: u32,
    /// VIP id, or `CAPTURE_NONE` when the packet was not found to be for a VIP.
    pub vip_id: u32,
    /// Backend id chosen, or `CAPTURE_NONE`.
    pub backend_id: u32,
    /// XDP action (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3).
    pub action: u32,
    /// `Reason` as u32.
    pub reason: u32,
    /// `CAPTURE_POINT_*`.
    pub point: u32,
    pub cpu: u32,
}

/// Size of [`CaptureHeader`] in the ring.
pub const CAPTURE_HEADER_LEN: usize = core::mem::size_of::<CaptureHeader>();

/// This CPU's record being built (`CAPTURE_SCRATCH`, per-CPU): the header, then the bytes
/// (what goes to the ring), then whether the packet being processed was kept at its start.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureRecord {
    pub hdr: CaptureHeader,
    pub data: [u8; CAPTURE_MAX_SNAP as usize],
    /// 1 from the start of a packet the capture kept until its verdict is recorded (a packet
    /// whose start could not be kept gets no record).
    pub armed: u32,
    pub _pad: u32,
}

const _: () = assert!(CAPTURE_HEADER_LEN == 48 && CAPTURE_HEADER_LEN.is_multiple_of(8));
