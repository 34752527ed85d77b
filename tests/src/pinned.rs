//! A balancer's pinned maps read back directly, independently of lbd (what the packets see):
//! which backends a VIP's active lookup table holds.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{Backend, TABLE_SLOTS, VipKey, VipMeta, user::words_addr};

use crate::error::{LabError, Result};

fn open(pins: &Path, name: &str) -> Result<MapData> {
    let path = pins
        .join(format!("v{}/maps", lb_common::LAYOUT_VERSION))
        .join(name);
    MapData::from_pin(&path).map_err(|e| LabError::Option {
        option: format!("pinned map {}", path.display()),
        reason: e.to_string(),
    })
}

fn map_error(name: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Option {
        option: format!("pinned map {name}"),
        reason: e.to_string(),
    }
}

/// How many entries of the VIP's active table each backend address holds (empty when the
/// VIP has no table: no backend takes new flows). `pins`: lbd's `pin_dir`.
pub fn table_counts(
    pins: &Path,
    vip: IpAddr,
    port: u16,
    proto: u8,
) -> Result<BTreeMap<String, u32>> {
    let vips: HashMap<MapData, VipKey, VipMeta> =
        HashMap::try_from(Map::HashMap(open(pins, "VIPS")?)).map_err(|e| map_error("VIPS", e))?;
    let meta = vips
        .get(&VipKey::new(vip, port, proto), 0)
        .map_err(|e| map_error("VIPS", format!("{vip} port {port}: {e}")))?;
    let tables: Array<MapData, u32> =
        Array::try_from(Map::Array(open(pins, "TABLES")?)).map_err(|e| map_error("TABLES", e))?;
    let base = (meta.id * TABLE_SLOTS + meta.slot) * lb_common::MAX_TABLE;
    let mut by_id: BTreeMap<u32, u32> = BTreeMap::new();
    for i in 0..meta.table_len {
        if let Ok(id) = tables.get(&(base + i), 0) {
            *by_id.entry(id).or_default() += 1;
        }
    }
    let backends: Array<MapData, Backend> = Array::try_from(Map::Array(open(pins, "BACKENDS")?))
        .map_err(|e| map_error("BACKENDS", e))?;
    Ok(by_id
        .into_iter()
        .filter_map(|(id, n)| {
            backends
                .get(&id, 0)
                .ok()
                .map(|b| (words_addr(b.addr, b.family).to_string(), n))
        })
        .collect())
}
