//! Reading the pinned maps back, independently of lbd.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use lb_common::{
    BACKEND_F_ACTIVE, Backend, ConnEntry, FloodWindow, FlowKey, MAX_BACKENDS, MAX_TABLE,
    TABLE_SLOTS, VipKey, VipMeta, user::words_addr,
};

fn open(pins: &Path, name: &str) -> MapData {
    MapData::from_pin(
        pins.join(format!("v{}/maps", lb_common::LAYOUT_VERSION))
            .join(name),
    )
    .unwrap_or_else(|e| panic!("pinned map {name}: {e}"))
}

fn backends(pins: &Path) -> Array<MapData, Backend> {
    Array::try_from(Map::Array(open(pins, "BACKENDS"))).expect("BACKENDS")
}

pub fn vip_exists(pins: &Path, addr: IpAddr, port: u16, proto: u8) -> bool {
    let vips: HashMap<MapData, VipKey, VipMeta> =
        HashMap::try_from(Map::HashMap(open(pins, "VIPS"))).expect("VIPS");
    vips.get(&VipKey::new(addr, port, proto), 0).is_ok()
}

/// The distinct backend addresses in the VIP's active table, sorted.
pub fn table_backends(pins: &Path, vip: std::net::Ipv4Addr, port: u16) -> Vec<String> {
    let vips: HashMap<MapData, VipKey, VipMeta> =
        HashMap::try_from(Map::HashMap(open(pins, "VIPS"))).expect("VIPS");
    let meta = vips
        .get(&VipKey::new(IpAddr::V4(vip), port, 6), 0)
        .expect("VIP in the map");
    let tables: Array<MapData, u32> =
        Array::try_from(Map::Array(open(pins, "TABLES"))).expect("TABLES");
    let base = (meta.id * TABLE_SLOTS + meta.slot) * MAX_TABLE;
    let ids: BTreeSet<u32> = (0..meta.table_len)
        .step_by(7)
        .filter_map(|i| tables.get(&(base + i), 0).ok())
        .collect();
    let be = backends(pins);
    let mut out: Vec<String> = ids
        .into_iter()
        .filter_map(|id| be.get(&id, 0).ok())
        .map(|b| words_addr(b.addr, b.family).to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

pub fn backend_active(pins: &Path, addr: &str) -> bool {
    let want: IpAddr = addr.parse().expect("ip");
    let be = backends(pins);
    (0..MAX_BACKENDS)
        .filter_map(|i| be.get(&i, 0).ok())
        .any(|b| {
            b.family != 0 && words_addr(b.addr, b.family) == want && b.flags & BACKEND_F_ACTIVE != 0
        })
}

/// The MAC the data plane writes for `addr` (the first slot holding it), if any slot does.
pub fn backend_mac(pins: &Path, addr: &str) -> Option<[u8; 6]> {
    let want: IpAddr = addr.parse().expect("ip");
    let be = backends(pins);
    (0..MAX_BACKENDS)
        .filter_map(|i| be.get(&i, 0).ok())
        .find(|b| b.family != 0 && words_addr(b.addr, b.family) == want)
        .map(|b| b.mac)
}

/// The backend id (slot of `BACKENDS`) that holds `addr`, if any.
pub fn backend_id(pins: &Path, addr: &str) -> Option<u32> {
    let want: IpAddr = addr.parse().expect("ip");
    let be = backends(pins);
    (0..MAX_BACKENDS).find(|i| {
        be.get(i, 0)
            .is_ok_and(|b| b.family != 0 && words_addr(b.addr, b.family) == want)
    })
}

/// The pinned connection table.
pub fn conns(pins: &Path) -> HashMap<MapData, FlowKey, ConnEntry> {
    HashMap::try_from(Map::LruHashMap(open(pins, "CONNS"))).expect("CONNS")
}

/// The data plane's clock anchor (latest over CPUs): (jiffies, coarse monotonic ns).
pub fn clock_anchor(pins: &Path) -> Option<(u64, u64)> {
    let fw: PerCpuArray<MapData, FloodWindow> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pins, "FLOOD_WINDOW"))).expect("FLOOD_WINDOW");
    let per_cpu = fw.get(&0, 0).ok()?;
    per_cpu
        .iter()
        .filter(|w| w.anchor_ns != 0)
        .max_by_key(|w| w.anchor_ns)
        .map(|w| (w.anchor_jiffies, w.anchor_ns))
}

/// How many entries of the VIP's active table each backend address holds (empty when the
/// VIP has no table: no backend takes new flows).
pub fn table_counts(
    pins: &Path,
    vip: IpAddr,
    port: u16,
    proto: u8,
) -> std::collections::BTreeMap<String, u32> {
    let vips: HashMap<MapData, VipKey, VipMeta> =
        HashMap::try_from(Map::HashMap(open(pins, "VIPS"))).expect("VIPS");
    let meta = vips
        .get(&VipKey::new(vip, port, proto), 0)
        .expect("VIP in the map");
    let tables: Array<MapData, u32> =
        Array::try_from(Map::Array(open(pins, "TABLES"))).expect("TABLES");
    let base = (meta.id * TABLE_SLOTS + meta.slot) * MAX_TABLE;
    let mut by_id: std::collections::BTreeMap<u32, u32> = Default::default();
    for i in 0..meta.table_len {
        if let Ok(id) = tables.get(&(base + i), 0) {
            *by_id.entry(id).or_default() += 1;
        }
    }
    let be = backends(pins);
    by_id
        .into_iter()
        .filter_map(|(id, n)| {
            be.get(&id, 0)
                .ok()
                .map(|b| (words_addr(b.addr, b.family).to_string(), n))
        })
        .collect()
}
