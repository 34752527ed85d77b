//! Diagnostics (docs/troubleshooting.md): capture inside the data plane
//! (`POST /v1/capture`, answered with a stream of [`CaptureEvent`] lines) and "where does this
//! flow go" (`GET /v1/vips/{vip}/trace`, answered with a [`Trace`]).

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::IpAddress;

/// Most packets one capture may ask for.
pub const MAX_CAPTURE_COUNT: u64 = 1_000_000;
/// Longest capture, in seconds.
pub const MAX_CAPTURE_SECONDS: f64 = 3600.0;
/// Packets a capture keeps when the request does not say.
pub const DEFAULT_CAPTURE_COUNT: u64 = 1000;
/// Seconds a capture runs when the request does not say.
pub const DEFAULT_CAPTURE_SECONDS: f64 = 30.0;

/// Body of `POST /v1/capture`. Every filter is optional; a capture always stops after `count`
/// packets or `duration_s` seconds, whichever comes first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Only packets of this VIP (its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// Only packets sent to (or decided for) this backend address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IpAddress>)]
    pub backend: Option<IpAddr>,
    /// Only packets whose source is in this prefix (`10.0.0.0/8`, `2001:db8::/32`, an address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Only these reasons (names as in `GET /v1/stats`, e.g. `drop_no_backend`); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Keep one matching packet in N (default 1: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
    /// Bytes kept of each packet (1-2048, default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap_len: Option<u32>,
    /// Stop after this many packets (default 1000, at most 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Stop after this many seconds (default 30, at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Also record every transmitted packet as it left (after rewriting or encapsulation).
    #[serde(default)]
    pub output: bool,
}

/// An interface the data plane is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CaptureInterface {
    pub ifindex: u32,
    pub name: String,
}

/// One line of the `POST /v1/capture` answer (`application/x-ndjson`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CaptureEvent {
    /// First line: the capture runs.
    Started {
        /// The request as lbd understood it (defaults filled in).
        request: CaptureRequest,
        interfaces: Vec<CaptureInterface>,
        /// Other captures ran at the same time: the kernel kept what any of them asked for,
        /// and lbd filtered this one's share.
        shared: bool,
    },
    Packet(CapturedPacket),
    /// Last line: why it stopped and what it counted.
    End(CaptureEnd),
}

/// Where in the program a packet was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CapturePoint {
    /// As it arrived.
    Input,
    /// As the program transmitted it.
    Output,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CapturedPacket {
    /// Nanoseconds since the Unix epoch when the program started on the packet.
    pub ts_unix_ns: u64,
    pub iface: String,
    pub ifindex: u32,
    pub cpu: u32,
    pub rx_queue: u32,
    pub point: CapturePoint,
    /// `DROP`, `PASS`, `TX` (or `ABORTED`).
    pub action: String,
    /// The counter it was counted under (`tx_forward`, `drop_no_backend`, ...).
    pub reason: String,
    /// The VIP it was for (none: not a VIP packet).
    #[serde(default)]
    pub vip: Option<String>,
    /// The backend chosen (none: no backend was).
    #[serde(default)]
    #[schema(value_type = Option<IpAddress>)]
    pub backend: Option<IpAddr>,
    /// The packet's length at this point; `data_hex` holds its first bytes.
    pub len: u32,
    pub data_hex: String,
}

impl CapturedPacket {
    /// The packet bytes (`None` when `data_hex` is not hex).
    pub fn data(&self) -> Option<Vec<u8>> {
        let h = self.data_hex.as_bytes();
        if !h.len().is_multiple_of(2) {
            return None;
        }
        h.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
            .collect()
    }

    /// Lower-case hex of `bytes`.
    pub fn hex(bytes: &[u8]) -> String {
        use std::fmt::Write;
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// Why a capture stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureStop {
    /// `count` packets were captured.
    Count,
    /// `duration_s` ran out.
    Duration,
    /// lbd is shutting down.
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CaptureEnd {
    pub stopped_by: CaptureStop,
    /// Packets sent on this stream.
    pub packets: u64,
    /// Records the ring had no room for while this capture ran (all captures together).
    pub lost_in_ring: u64,
    /// Packets not sent because this stream's reader was too slow.
    pub dropped_slow_reader: u64,
    pub elapsed_s: f64,
}

/// `GET /v1/vips/{vip}/trace?client=ADDR:PORT[&protocol=tcp|udp][&port=N][&first=syn|other]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TraceQuery {
    /// `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
    #[schema(value_type = String)]
    pub client: SocketAddr,
    /// Defaults to the VIP's protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The destination port; required for a VIP of every port (port 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `syn` (default for TCP: a new connection) or `other` (any later packet; always so for
    /// UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

/// A backend as the trace found it: in the data plane and in lbd's model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TraceBackend {
    pub id: u32,
    /// `None` when the slot belongs to no backend lbd knows (a stale entry).
    #[serde(default)]
    #[schema(value_type = Option<IpAddress>)]
    pub address: Option<IpAddr>,
    /// The VIP whose backend it is.
    #[serde(default)]
    pub vip: Option<String>,
    /// The slot is active in the data plane (may receive packets).
    pub active: bool,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub effective_weight: Option<u32>,
    #[serde(default)]
    pub health: Option<String>,
    #[serde(default)]
    pub admin: Option<String>,
    /// Why the backend gets no new flows, when it gets none.
    #[serde(default)]
    pub no_new_flows: Option<String>,
}

/// The flow's connection-table entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TraceEntry {
    pub backend: TraceBackend,
    /// A FIN or RST was seen (a new SYN on these ports starts over).
    pub closing: bool,
    /// The entry's VIP id is still in use.
    pub vip_valid: bool,
    /// Its backend slot is active and of the entry's generation.
    pub backend_usable: bool,
    /// Seconds since the flow's last packet, when the data plane's clock anchor allows.
    #[serde(default)]
    pub idle_s: Option<f64>,
}

/// One CPU's next pick of a weighted-round-robin VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TraceCpu {
    pub cpu: u32,
    pub cursor: u32,
    pub position: u32,
    #[serde(default)]
    pub backend: Option<TraceBackend>,
}

/// A least-connections candidate, in walking order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TraceCandidate {
    pub backend: TraceBackend,
    pub weight: u32,
    pub connections: u64,
}

/// What the algorithm read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TracePick {
    Hashed {
        hash: u32,
        position: u32,
        #[serde(default)]
        backend: Option<TraceBackend>,
    },
    RoundRobin {
        per_cpu: Vec<TraceCpu>,
    },
    LeastConnections {
        start: u32,
        candidates: Vec<TraceCandidate>,
        #[serde(default)]
        backend: Option<TraceBackend>,
    },
    /// The VIP's table is empty (no backend with weight).
    Empty,
}

/// Where the packet goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum TraceDecision {
    /// Its connection-table entry keeps it on this backend.
    Entry { backend: TraceBackend },
    /// The algorithm chooses this backend (and a new entry pins it).
    Algorithm { backend: TraceBackend },
    /// The choice depends on the CPU the packet lands on (weighted round-robin).
    PerCpu { per_cpu: Vec<TraceCpu> },
    /// Dropped: no backend (`drop_no_backend`).
    NoBackend,
    /// Another VIP's lookup takes this flow (a VIP on this very port, before a port-0 VIP).
    OtherVip { vip: String },
    /// No VIP takes the flow: it is passed to the kernel.
    NotAVip,
}

/// Answer of `GET /v1/vips/{vip}/trace`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trace {
    pub vip: String,
    /// `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
    #[schema(value_type = String)]
    pub client: SocketAddr,
    /// `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
    #[schema(value_type = String)]
    pub destination: SocketAddr,
    pub protocol: String,
    /// `syn` or `other`.
    pub first: String,
    pub algorithm: String,
    pub mode: String,
    /// The active table slot (0 or 1) and its length.
    pub slot: u32,
    pub table_len: u32,
    #[serde(default)]
    pub entry: Option<TraceEntry>,
    pub pick: TracePick,
    pub decision: TraceDecision,
    /// The decision in words, step by step.
    pub explanation: Vec<String>,
}
