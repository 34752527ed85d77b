//! Typed, owned handles on every map of the object, and the readers/writers over them.

use std::os::fd::AsFd;

use aya::{
    Ebpf,
    maps::{Array, HashMap, IterableMap, MapData, MapError, PerCpuArray, ProgramArray},
    programs::ProgramFd,
};
use lb_common::{
    Backend, ConnEntry, FloodWindow, FlowKey, HARNESS_MAX_PACKET, HarnessPacket, LcList, MAX_TABLE,
    Reason, Settings, TABLE_SLOTS, TrafficStats, VipKey, VipMeta, names,
};

use super::{DataplaneError, batch};

/// The connection table and the clock anchor, apart from [`Maps`] (see [`Maps::conn_table`]).
/// Every operation is a map syscall, which the kernel makes safe against the data plane and
/// other users of the same maps: an entry read may be gone or refreshed by the time it is
/// acted on, as with [`Maps::conns`].
pub struct ConnTable {
    conns: HashMap<MapData, FlowKey, ConnEntry>,
    flood_window: PerCpuArray<MapData, FloodWindow>,
}

impl ConnTable {
    /// Every entry, in batches (element by element where the kernel cannot batch).
    pub fn entries(&self) -> Vec<(FlowKey, ConnEntry)> {
        read_conns(&self.conns)
    }

    /// [`ConnTable::entries`] through `BPF_MAP_LOOKUP_BATCH` only (Linux 5.6), without the
    /// fallback.
    pub fn entries_batched(&self) -> std::io::Result<Vec<(FlowKey, ConnEntry)>> {
        batch::lookup_all(self.conns.map().fd().as_fd())
    }

    /// Removes `flows`; returns how many were there (the LRU may have evicted some meanwhile).
    /// One syscall per flow (`BPF_MAP_DELETE_BATCH` answered EFAULT on this kernel), but once
    /// in a flow's life, where reading is once per sweep.
    pub fn remove(&mut self, flows: &[FlowKey]) -> usize {
        flows
            .iter()
            .filter(|f| self.conns.remove(f).is_ok())
            .count()
    }

    /// See [`Maps::clock_anchor`].
    pub fn clock_anchor(&self) -> Option<(u64, u64)> {
        anchor_of(&self.flood_window)
    }
}

fn read_conns(map: &HashMap<MapData, FlowKey, ConnEntry>) -> Vec<(FlowKey, ConnEntry)> {
    batch::lookup_all(map.map().fd().as_fd()).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "batch lookup of the connection table failed; walking it");
        map.iter().filter_map(Result::ok).collect()
    })
}

fn anchor_of(map: &PerCpuArray<MapData, FloodWindow>) -> Option<(u64, u64)> {
    let per_cpu = map.get(&0, 0).ok()?;
    per_cpu
        .iter()
        .filter(|w| w.anchor_ns != 0)
        .max_by_key(|w| w.anchor_ns)
        .map(|w| (w.anchor_jiffies, w.anchor_ns))
}

/// A new typed handle on the kernel map behind `data`, through a duplicated descriptor.
fn reopen<T>(data: &MapData, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
        map_err(name)(MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error,
        }))
    })?;
    let map = MapData::from_fd(fd)
        .and_then(aya::maps::Map::from_map_data)
        .map_err(map_err(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// Counters summed over every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficTotals {
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
}

pub struct Maps {
    pub(crate) vips: HashMap<MapData, VipKey, VipMeta>,
    pub(crate) backends: Array<MapData, Backend>,
    pub(crate) tables: Array<MapData, u32>,
    pub(crate) lc_lists: Array<MapData, LcList>,
    pub(crate) lc_conns: Array<MapData, u64>,
    pub(crate) conns: HashMap<MapData, FlowKey, ConnEntry>,
    pub(crate) rr_cursor: PerCpuArray<MapData, u32>,
    flood_window: PerCpuArray<MapData, FloodWindow>,
    pub(crate) settings: Array<MapData, Settings>,
    pub(crate) vip_stats: PerCpuArray<MapData, TrafficStats>,
    pub(crate) backend_stats: PerCpuArray<MapData, TrafficStats>,
    pub(crate) reasons: PerCpuArray<MapData, u64>,
    pub(crate) decap_addrs: HashMap<MapData, VipKey, u32>,
    addr_filter: Array<MapData, u64>,
    vip_modes: Array<MapData, u32>,
    harness_packet: Array<MapData, HarnessPacket>,
    harness_progs: ProgramArray<MapData>,
}

pub(crate) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            vips: take(ebpf, names::MAP_VIPS)?,
            backends: take(ebpf, names::MAP_BACKENDS)?,
            tables: take(ebpf, names::MAP_TABLES)?,
            lc_lists: take(ebpf, names::MAP_LC_LISTS)?,
            lc_conns: take(ebpf, names::MAP_LC_CONNS)?,
            conns: take(ebpf, names::MAP_CONNS)?,
            rr_cursor: take(ebpf, names::MAP_RR_CURSOR)?,
            flood_window: take(ebpf, names::MAP_FLOOD_WINDOW)?,
            settings: take(ebpf, names::MAP_SETTINGS)?,
            vip_stats: take(ebpf, names::MAP_VIP_STATS)?,
            backend_stats: take(ebpf, names::MAP_BACKEND_STATS)?,
            reasons: take(ebpf, names::MAP_REASONS)?,
            decap_addrs: take(ebpf, names::MAP_DECAP_ADDRS)?,
            addr_filter: take(ebpf, names::MAP_VIP_ADDR_FILTER)?,
            vip_modes: take(ebpf, names::MAP_VIP_MODES)?,
            harness_packet: take(ebpf, names::MAP_HARNESS_PACKET)?,
            harness_progs: take(ebpf, names::MAP_HARNESS_PROGS)?,
        })
    }

    /// Writes the settings; `jiffies_per_s` (the flood window) is filled in here when 0.
    pub fn set_settings(&mut self, s: &Settings) -> Result<(), DataplaneError> {
        let mut s = *s;
        if s.jiffies_per_s == 0 {
            s.jiffies_per_s = (1_000_000_000 / Self::jiffy_ns()) as u32;
        }
        self.settings
            .set(0, s, 0)
            .map_err(map_err(names::MAP_SETTINGS))
    }

    /// The whole VIP address filter (`ADDR_FILTER_WORDS` words).
    pub(crate) fn addr_filter(&self) -> Result<Vec<u64>, DataplaneError> {
        (0..lb_common::ADDR_FILTER_WORDS)
            .map(|i| {
                self.addr_filter
                    .get(&i, 0)
                    .map_err(map_err(names::MAP_VIP_ADDR_FILTER))
            })
            .collect()
    }

    pub(crate) fn set_addr_filter_word(&mut self, i: u32, word: u64) -> Result<(), DataplaneError> {
        self.addr_filter
            .set(i, word, 0)
            .map_err(map_err(names::MAP_VIP_ADDR_FILTER))
    }

    /// `VIP_MODES[id]`: `VIP_MODE_VALID | mode`, or 0 when the id is free.
    pub fn vip_mode(&self, id: u32) -> Result<u32, DataplaneError> {
        self.vip_modes
            .get(&id, 0)
            .map_err(map_err(names::MAP_VIP_MODES))
    }

    /// What established flows of VIP `id` are forwarded with: `VIP_MODE_VALID | mode`, or 0
    /// when the id is free (its flows then fall through to the VIP lookup).
    pub(crate) fn set_vip_mode(&mut self, id: u32, value: u32) -> Result<(), DataplaneError> {
        self.vip_modes
            .set(id, value, 0)
            .map_err(map_err(names::MAP_VIP_MODES))
    }

    /// Addresses the decap program accepts as outer destination.
    pub fn add_decap_address(&mut self, addr: std::net::IpAddr) -> Result<(), DataplaneError> {
        self.decap_addrs
            .insert(VipKey::address(addr), 1, 0)
            .map_err(map_err(names::MAP_DECAP_ADDRS))
    }

    pub(crate) fn write_table_entry(
        &mut self,
        vip_id: u32,
        slot: u32,
        pos: u32,
        backend: u32,
    ) -> Result<(), DataplaneError> {
        let index = (vip_id * TABLE_SLOTS + slot) * MAX_TABLE + pos;
        self.tables
            .set(index, backend, 0)
            .map_err(map_err(names::MAP_TABLES))
    }

    /// Reads one table entry (tests and tools).
    pub fn table_entry(&self, vip_id: u32, slot: u32, pos: u32) -> Result<u32, DataplaneError> {
        let index = (vip_id * TABLE_SLOTS + slot) * MAX_TABLE + pos;
        self.tables
            .get(&index, 0)
            .map_err(map_err(names::MAP_TABLES))
    }

    pub fn vip(&self, key: &VipKey) -> Option<VipMeta> {
        self.vips.get(key, 0).ok()
    }

    pub fn backend(&self, id: u32) -> Result<Backend, DataplaneError> {
        self.backends
            .get(&id, 0)
            .map_err(map_err(names::MAP_BACKENDS))
    }

    pub fn lc_connections(&self, id: u32) -> Result<u64, DataplaneError> {
        self.lc_conns
            .get(&id, 0)
            .map_err(map_err(names::MAP_LC_CONNS))
    }

    pub fn set_lc_connections(&mut self, id: u32, n: u64) -> Result<(), DataplaneError> {
        self.lc_conns
            .set(id, n, 0)
            .map_err(map_err(names::MAP_LC_CONNS))
    }

    pub fn conn(&self, flow: &FlowKey) -> Option<ConnEntry> {
        self.conns.get(flow, 0).ok()
    }

    /// Every connection-table entry (a snapshot; the LRU may change while it is read).
    /// Read in batches; element by element where the kernel cannot batch.
    pub fn conns(&self) -> Vec<(FlowKey, ConnEntry)> {
        read_conns(&self.conns)
    }

    /// The data plane's latest clock anchor over every CPU: (jiffies, coarse monotonic ns)
    /// read together on a new flow. None before the first new flow (no entry exists then).
    pub fn clock_anchor(&self) -> Option<(u64, u64)> {
        anchor_of(&self.flood_window)
    }

    /// A second, independent handle on the connection table and the clock anchor (duplicated
    /// file descriptors of the same kernel maps), so the sweep can walk and prune the table
    /// without borrowing `Maps`, i.e. without lbd's lock.
    pub fn conn_table(&self) -> Result<ConnTable, DataplaneError> {
        Ok(ConnTable {
            conns: reopen(self.conns.map(), names::MAP_CONNS)?,
            flood_window: reopen(self.flood_window.map(), names::MAP_FLOOD_WINDOW)?,
        })
    }

    /// Monotonic time as `bpf_ktime_get_coarse_ns` sees it (the clock of the anchor).
    pub fn coarse_now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer; CLOCK_MONOTONIC_COARSE always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Length of a jiffy: the coarse clocks' resolution is the tick (1/HZ).
    pub fn jiffy_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer; CLOCK_MONOTONIC_COARSE always exists on Linux.
        unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        // HZ is 100 to 1000; anything else is not a tick (assume HZ 250).
        if (1_000_000..=10_000_000).contains(&ns) {
            ns
        } else {
            4_000_000
        }
    }

    /// An entry's last-seen time as `CLOCK_MONOTONIC_COARSE` nanoseconds: its jiffies placed
    /// on the anchor's line (jiffies advance with the monotonic clock, one per `tick_ns`).
    pub fn last_seen_ns(anchor: (u64, u64), tick_ns: u64, entry: &ConnEntry) -> u64 {
        let (aj, ans) = anchor;
        let delta = entry.last_seen as i128 - aj as i128;
        (ans as i128 + delta * tick_ns as i128).max(0) as u64
    }

    fn totals(
        map: &PerCpuArray<MapData, TrafficStats>,
        id: u32,
        name: &'static str,
    ) -> Result<TrafficTotals, DataplaneError> {
        let per_cpu = map.get(&id, 0).map_err(map_err(name))?;
        Ok(per_cpu
            .iter()
            .fold(TrafficTotals::default(), |acc, s| TrafficTotals {
                packets: acc.packets + s.packets,
                bytes: acc.bytes + s.bytes,
                new_conns: acc.new_conns + s.new_conns,
            }))
    }

    pub fn vip_totals(&self, vip_id: u32) -> Result<TrafficTotals, DataplaneError> {
        Self::totals(&self.vip_stats, vip_id, names::MAP_VIP_STATS)
    }

    pub fn backend_totals(&self, backend_id: u32) -> Result<TrafficTotals, DataplaneError> {
        Self::totals(&self.backend_stats, backend_id, names::MAP_BACKEND_STATS)
    }

    /// Count of each pass/drop/tx reason, summed over CPUs.
    pub fn reasons(&self) -> Result<Vec<(Reason, u64)>, DataplaneError> {
        Reason::ALL
            .iter()
            .map(|&r| {
                let per_cpu = self
                    .reasons
                    .get(&(r as u32), 0)
                    .map_err(map_err(names::MAP_REASONS))?;
                Ok((r, per_cpu.iter().sum()))
            })
            .collect()
    }

    pub fn reason(&self, r: Reason) -> Result<u64, DataplaneError> {
        let per_cpu = self
            .reasons
            .get(&(r as u32), 0)
            .map_err(map_err(names::MAP_REASONS))?;
        Ok(per_cpu.iter().sum())
    }

    pub(super) fn set_harness_packet(
        &mut self,
        packet: &[u8],
        vary_offset: u32,
    ) -> Result<(), DataplaneError> {
        // The run counter carries on across re-arming, so "new flow" runs never reuse a source.
        let counter = self
            .harness_packet
            .get(&0, 0)
            .map(|h| h.counter)
            .unwrap_or(0);
        let mut h = HarnessPacket {
            len: packet.len() as u32,
            vary_offset,
            counter,
            ..Default::default()
        };
        let n = packet.len().min(HARNESS_MAX_PACKET);
        h.bytes[..n].copy_from_slice(&packet[..n]);
        self.harness_packet
            .set(0, h, 0)
            .map_err(map_err(names::MAP_HARNESS_PACKET))
    }

    pub(super) fn set_harness_target(&mut self, fd: &ProgramFd) -> Result<(), DataplaneError> {
        self.harness_progs
            .set(0, fd, 0)
            .map_err(map_err(names::MAP_HARNESS_PROGS))
    }
}
