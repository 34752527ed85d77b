//! Capture inside the data plane, seen from userspace (`lb_common::capture` has the layout):
//! the filter as a type, the kernel's configuration made from it, the records read from the
//! ring buffer, and the same filter applied again in userspace (several captures can share the
//! one ring: the kernel then keeps what any of them wants, and each takes its own).

use std::{
    fmt,
    net::IpAddr,
    os::fd::{AsFd, BorrowedFd},
    str::FromStr,
};

use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues, ProgramArray, RingBuf};
use lb_common::{
    AF_INET, AF_INET6, Reason,
    capture::{
        CAPTURE_F_OUTPUT, CAPTURE_FLAG, CAPTURE_HEADER_LEN, CAPTURE_MAX_SNAP, CAPTURE_NONE,
        CAPTURE_POINT_OUTPUT, CAPTURE_STAT_COUNT, CAPTURE_STAT_LOST, CAPTURE_STAT_MATCHED,
        CAPTURE_STAT_WRITTEN, CaptureConfig, CaptureHeader, CaptureRecord,
    },
    names,
    user::addr_words,
};

use crate::{DataplaneError, XdpAction};

/// Default bytes kept of each packet: every header of a TCP/UDP packet over IPv6 in IPv6, and
/// the start of its payload.
pub const DEFAULT_SNAP_LEN: u32 = 256;

/// An address prefix (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    fn max_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// The mask as the data plane's network-order words (IPv4 in word 0 alone).
    fn mask_words(&self) -> [u32; 4] {
        let words = if self.addr.is_ipv4() { 1 } else { 4 };
        std::array::from_fn(|i| {
            if i >= words {
                return 0;
            }
            let bits = (self.len as u32).saturating_sub(i as u32 * 32).min(32);
            u32::MAX.checked_shl(32 - bits).unwrap_or(0).to_be()
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let (a, b, m) = (addr_words(ip), addr_words(self.addr), self.mask_words());
        (0..4).all(|i| a[i] & m[i] == b[i] & m[i])
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = Self::max_len(addr);
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix length {l:?} must be 0-{max}"))?,
            None => max,
        };
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which packets a capture keeps. `None` and empty mean "any".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureFilter {
    pub vip_id: Option<u32>,
    /// Any of these backend slots (one address can be a backend of several VIPs).
    pub backend_ids: Vec<u32>,
    pub client: Option<Prefix>,
    pub reasons: Vec<Reason>,
    /// Keep one matching packet in this many (1: all).
    pub sample_every: u32,
    /// Bytes of each packet (1..=2048).
    pub snap_len: u32,
    /// Also record each transmitted packet as it left.
    pub output: bool,
}

impl Default for CaptureFilter {
    fn default() -> Self {
        Self {
            vip_id: None,
            backend_ids: Vec::new(),
            client: None,
            reasons: Vec::new(),
            sample_every: 1,
            snap_len: DEFAULT_SNAP_LEN,
            output: false,
        }
    }
}

impl CaptureFilter {
    /// The kernel's configuration for this filter alone (capture on).
    pub fn config(&self) -> CaptureConfig {
        let mut c = CaptureConfig {
            flags: if self.output { CAPTURE_F_OUTPUT } else { 0 },
            snap_len: self.snap_len.clamp(1, CAPTURE_MAX_SNAP),
            sample_every: self.sample_every.max(1),
            vip_id: self.vip_id.unwrap_or(CAPTURE_NONE),
            // The kernel compares one slot; more are told apart in userspace.
            backend_id: match self.backend_ids.as_slice() {
                [one] => *one,
                _ => CAPTURE_NONE,
            },
            reasons: self.reasons.iter().fold(0, |m, r| m | 1u64 << (*r as u32)),
            ..Default::default()
        };
        if let Some(p) = &self.client {
            let mask = p.mask_words();
            let addr = addr_words(p.addr);
            c.client_mask = mask;
            c.client = std::array::from_fn(|i| addr[i] & mask[i]);
            c.client_family = if p.addr.is_ipv4() { AF_INET } else { AF_INET6 } as u32;
        }
        c
    }

    /// The least filter that keeps everything any of `filters` keeps (what the kernel does
    /// while several captures share the ring; each then filters and samples its own).
    pub fn union(filters: &[&CaptureFilter]) -> CaptureFilter {
        let Some((first, rest)) = filters.split_first() else {
            return CaptureFilter::default();
        };
        if rest.is_empty() {
            return (*first).clone();
        }
        let same = |f: &dyn Fn(&CaptureFilter) -> bool| filters.iter().all(|x| f(x));
        CaptureFilter {
            vip_id: first.vip_id.filter(|v| same(&|f| f.vip_id == Some(*v))),
            backend_ids: if same(&|f| f.backend_ids == first.backend_ids) {
                first.backend_ids.clone()
            } else if filters.iter().any(|f| f.backend_ids.is_empty()) {
                Vec::new()
            } else {
                let mut all: Vec<u32> =
                    filters.iter().flat_map(|f| f.backend_ids.clone()).collect();
                all.sort_unstable();
                all.dedup();
                all
            },
            client: first.client.filter(|c| same(&|f| f.client == Some(*c))),
            reasons: if filters.iter().any(|f| f.reasons.is_empty()) {
                Vec::new()
            } else {
                let mut all: Vec<Reason> = filters.iter().flat_map(|f| f.reasons.clone()).collect();
                all.sort_by_key(|r| *r as u32);
                all.dedup();
                all
            },
            sample_every: 1,
            snap_len: filters.iter().map(|f| f.snap_len).max().unwrap_or(1),
            output: filters.iter().any(|f| f.output),
        }
    }

    /// Whether a record passes this filter (the kernel's test, made again in userspace).
    pub fn matches(&self, p: &CapturedPacket) -> bool {
        if p.point == Point::Output && !self.output {
            return false;
        }
        if self.vip_id.is_some_and(|v| p.vip_id != Some(v)) {
            return false;
        }
        if !self.backend_ids.is_empty()
            && !p.backend_id.is_some_and(|b| self.backend_ids.contains(&b))
        {
            return false;
        }
        if !self.reasons.is_empty() && !p.reason.is_some_and(|r| self.reasons.contains(&r)) {
            return false;
        }
        if let Some(c) = &self.client
            && !p.source().is_some_and(|s| c.contains(s))
        {
            return false;
        }
        true
    }
}

/// Where in the program a record was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Point {
    /// As the packet arrived.
    Input,
    /// As the program transmitted it (after rewriting or encapsulation).
    Output,
}

/// One record of the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedPacket {
    /// CLOCK_MONOTONIC nanoseconds when the program started on the packet.
    pub mono_ns: u64,
    /// The packet's length at this point; `data` holds its first bytes.
    pub pkt_len: u32,
    pub ifindex: u32,
    pub rx_queue: u32,
    pub cpu: u32,
    pub vip_id: Option<u32>,
    pub backend_id: Option<u32>,
    pub action: XdpAction,
    /// `None` for a reason this program does not know (a newer data plane).
    pub reason: Option<Reason>,
    pub point: Point,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("capture record of {0} bytes is shorter than its {CAPTURE_HEADER_LEN}-byte header")]
    Short(usize),
    #[error("capture record claims {claimed} bytes of packet but carries {have}")]
    Length { claimed: u32, have: usize },
}

impl CapturedPacket {
    /// Decodes one record as the data plane wrote it.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        let head = bytes
            .get(..CAPTURE_HEADER_LEN)
            .ok_or(RecordError::Short(bytes.len()))?;
        // SAFETY: CaptureHeader is plain old data of exactly CAPTURE_HEADER_LEN bytes.
        let h: CaptureHeader = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
        let data = bytes
            .get(CAPTURE_HEADER_LEN..CAPTURE_HEADER_LEN + h.cap_len as usize)
            .ok_or(RecordError::Length {
                claimed: h.cap_len,
                have: bytes.len() - CAPTURE_HEADER_LEN,
            })?;
        let id = |v: u32| (v != CAPTURE_NONE).then_some(v);
        Ok(Self {
            mono_ns: h.ts_ns,
            pkt_len: h.pkt_len,
            ifindex: h.ifindex,
            rx_queue: h.rx_queue,
            cpu: h.cpu,
            vip_id: id(h.vip_id),
            backend_id: id(h.backend_id),
            action: XdpAction::from_code(h.action),
            reason: Reason::from_index(h.reason),
            point: if h.point == CAPTURE_POINT_OUTPUT as u32 {
                Point::Output
            } else {
                Point::Input
            },
            data: data.to_vec(),
        })
    }

    /// The source address of an IP packet (behind at most one VLAN tag).
    pub fn source(&self) -> Option<IpAddr> {
        let d = &self.data;
        let l3 = crate::packet::l3_offset(d)?;
        let ethertype = u16::from_be_bytes([*d.get(l3 - 2)?, *d.get(l3 - 1)?]);
        match ethertype {
            0x0800 => {
                let b: [u8; 4] = d.get(l3 + 12..l3 + 16)?.try_into().ok()?;
                Some(IpAddr::from(b))
            }
            0x86dd => {
                let b: [u8; 16] = d.get(l3 + 8..l3 + 24)?.try_into().ok()?;
                Some(IpAddr::from(b))
            }
            _ => None,
        }
    }
}

/// Counters of the capture since it (re)started, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CaptureCounters {
    /// Packets that passed the kernel's filter (before sampling).
    pub matched: u64,
    /// Records written to the ring.
    pub written: u64,
    /// Records the ring had no room for: the reader fell behind.
    pub lost: u64,
}

/// The capture's maps: its flag and filter, counters and the ring. Only one reader may own
/// the ring (the consumer position lives in the map itself), so this is taken out of
/// [`crate::Maps`] once.
pub struct CaptureMaps {
    /// The object's globals: `CAPTURE_ON` alone.
    flag: Array<MapData, u32>,
    /// `xdp_balancer_captured`, the balancer's tail call while a capture runs.
    progs: ProgramArray<MapData>,
    program_set: bool,
    conf: Array<MapData, CaptureConfig>,
    stats: PerCpuArray<MapData, u64>,
    scratch: PerCpuArray<MapData, CaptureRecord>,
    ring: RingBuf<MapData>,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl CaptureMaps {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            flag: crate::maps::take(ebpf, CAPTURE_FLAG)?,
            progs: crate::maps::take(ebpf, names::MAP_CAPTURE_PROGS)?,
            program_set: false,
            conf: crate::maps::take(ebpf, names::MAP_CAPTURE_CONF)?,
            stats: crate::maps::take(ebpf, names::MAP_CAPTURE_STATS)?,
            scratch: crate::maps::take(ebpf, names::MAP_CAPTURE_SCRATCH)?,
            ring: crate::maps::take(ebpf, names::MAP_CAPTURE_RING)?,
        })
    }

    /// Turns the capture on with `filter`: counters (and the sampling count) start from
    /// zero, records left in the ring by an earlier capture are discarded.
    pub fn start(&mut self, filter: &CaptureFilter) -> Result<(), DataplaneError> {
        if !self.program_set {
            return Err(DataplaneError::CaptureProgram);
        }
        self.set_flag(false)?;
        while self.ring.next().is_some() {}
        for i in 0..CAPTURE_STAT_COUNT {
            zero_per_cpu(&mut self.stats, i, 0u64, names::MAP_CAPTURE_STATS)?;
        }
        // Disarms every CPU's record (an earlier capture may have stopped between a packet's
        // start and its verdict).
        // SAFETY: CaptureRecord is plain old data; all zeroes is a valid value.
        let empty: CaptureRecord = unsafe { std::mem::zeroed() };
        zero_per_cpu(&mut self.scratch, 0, empty, names::MAP_CAPTURE_SCRATCH)?;
        self.refilter(filter)?;
        self.set_flag(true)
    }

    /// Whether [`crate::Dataplane::enable_capture`] installed the capture program.
    pub fn ready(&self) -> bool {
        self.program_set
    }

    pub(crate) fn set_program(
        &mut self,
        fd: &aya::programs::ProgramFd,
    ) -> Result<(), DataplaneError> {
        self.progs
            .set(0, fd, 0)
            .map_err(map_err(names::MAP_CAPTURE_PROGS))?;
        self.program_set = true;
        Ok(())
    }

    /// Changes the filter of a running capture (counters and ring kept).
    pub fn refilter(&mut self, filter: &CaptureFilter) -> Result<(), DataplaneError> {
        self.conf
            .set(0, filter.config(), 0)
            .map_err(map_err(names::MAP_CAPTURE_CONF))
    }

    /// Turns the capture off: from the next packet on, nothing is recorded.
    pub fn stop(&mut self) -> Result<(), DataplaneError> {
        self.set_flag(false)
    }

    pub fn running(&self) -> Result<bool, DataplaneError> {
        Ok(self.flag.get(&0, 0).map_err(map_err(CAPTURE_FLAG))? != 0)
    }

    fn set_flag(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.flag
            .set(0, u32::from(on), 0)
            .map_err(map_err(CAPTURE_FLAG))
    }

    /// The counters since the capture started.
    pub fn counters(&self) -> Result<CaptureCounters, DataplaneError> {
        let sum = |i: u32| -> Result<u64, DataplaneError> {
            Ok(self
                .stats
                .get(&i, 0)
                .map_err(map_err(names::MAP_CAPTURE_STATS))?
                .iter()
                .sum())
        };
        Ok(CaptureCounters {
            matched: sum(CAPTURE_STAT_MATCHED)?,
            written: sum(CAPTURE_STAT_WRITTEN)?,
            lost: sum(CAPTURE_STAT_LOST)?,
        })
    }

    /// The next record in the ring, if any (poll the descriptor for more).
    pub fn next_record(&mut self) -> Option<Result<CapturedPacket, RecordError>> {
        self.ring.next().map(|item| CapturedPacket::parse(&item))
    }
}

impl AsFd for CaptureMaps {
    /// The ring's descriptor: readable when records are waiting.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl std::os::fd::AsRawFd for CaptureMaps {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

/// Sets every CPU's value at `index` to `value`.
fn zero_per_cpu<T: aya::Pod>(
    map: &mut PerCpuArray<MapData, T>,
    index: u32,
    value: T,
    name: &'static str,
) -> Result<(), DataplaneError> {
    let err = map_err(name);
    let cpus = map.get(&index, 0).map_err(&err)?.len();
    let values = PerCpuValues::try_from(vec![value; cpus]).map_err(|io_error| {
        err(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "per-CPU values",
            io_error,
        }))
    })?;
    map.set(index, values, 0).map_err(&err)
}

/// CLOCK_MONOTONIC nanoseconds (the records' clock) as nanoseconds since the Unix epoch.
pub fn mono_to_unix_ns(mono_ns: u64) -> u64 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer; both clocks exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let offset = read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC);
    (mono_ns as i128 + offset).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: Prefix = "10.77.0.0/24".parse().unwrap();
        assert!(p.contains("10.77.0.9".parse().unwrap()));
        assert!(!p.contains("10.77.1.9".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let h: Prefix = "10.77.0.9".parse().unwrap();
        assert_eq!(h.len, 32);
        assert!(h.contains("10.77.0.9".parse().unwrap()));
        assert!(!h.contains("10.77.0.8".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: Prefix = "fd77::/64".parse().unwrap();
        assert!(v6.contains("fd77::10".parse().unwrap()));
        assert!(!v6.contains("fd78::10".parse().unwrap()));
        let v6h: Prefix = "fd77::10/127".parse().unwrap();
        assert!(v6h.contains("fd77::11".parse().unwrap()));
        assert!(!v6h.contains("fd77::12".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd77::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn union_keeps_what_any_keeps() {
        let a = CaptureFilter {
            vip_id: Some(1),
            reasons: vec![Reason::DropNoBackend],
            sample_every: 10,
            snap_len: 64,
            ..Default::default()
        };
        let b = CaptureFilter {
            vip_id: Some(1),
            reasons: vec![Reason::TxForward],
            snap_len: 512,
            output: true,
            ..Default::default()
        };
        let u = CaptureFilter::union(&[&a, &b]);
        assert_eq!(u.vip_id, Some(1));
        assert_eq!(u.reasons, vec![Reason::TxForward, Reason::DropNoBackend]);
        assert_eq!((u.sample_every, u.snap_len, u.output), (1, 512, true));
        let c = CaptureFilter::default();
        let u = CaptureFilter::union(&[&a, &c]);
        assert_eq!((u.vip_id, u.reasons.len()), (None, 0));
        assert_eq!(CaptureFilter::union(&[&a]), a);
    }

    #[test]
    fn records_are_checked_before_use() {
        assert_eq!(CapturedPacket::parse(&[0; 10]), Err(RecordError::Short(10)));
        let mut r = vec![0u8; CAPTURE_HEADER_LEN + 4];
        r[12..16].copy_from_slice(&9u32.to_ne_bytes()); // cap_len
        assert!(matches!(
            CapturedPacket::parse(&r),
            Err(RecordError::Length { claimed: 9, .. })
        ));
        r[12..16].copy_from_slice(&4u32.to_ne_bytes());
        r[24..28].copy_from_slice(&CAPTURE_NONE.to_ne_bytes()); // vip
        r[32..36].copy_from_slice(&3u32.to_ne_bytes()); // action TX
        r[36..40].copy_from_slice(&10u32.to_ne_bytes()); // drop_no_backend
        let p = CapturedPacket::parse(&r).unwrap();
        assert_eq!(
            (p.vip_id, p.backend_id, p.action, p.reason, p.data.len()),
            (None, Some(0), XdpAction::Tx, Some(Reason::DropNoBackend), 4)
        );
    }
}
