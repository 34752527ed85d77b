//! The forwarding state a balancer's pinned maps hold: each VIP's key, id, algorithm, mode
//! and active table, and every backend slot. Equal on every balancer given the same VIPs and
//! backends (canonical slots, [`crate::slots`]; Maglev depends only on addresses), whatever
//! order they came in; `lbctl forwarding` prints it and a digest, and the BGP lab compares
//! the balancers with it. Which of a VIP's two table slots is active, the idle slot, the
//! connection table and the counters are each node's own history and left out.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{Backend, MAX_BACKENDS, MAX_TABLE, TABLE_SLOTS, VipKey, VipMeta, names};
use serde::Serialize;

use crate::{DataplaneError, maglev::siphash24, pin};

/// SipHash-2-4 key of the digests ("lbxdp-fw", "d-digest").
const DIGEST_SEED: (u64, u64) = (0x6c62_7864_702d_6677, 0x642d_6469_6765_7374);

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipForwarding {
    /// `10.77.0.100:80/6`.
    pub key: String,
    pub id: u32,
    pub algorithm: u8,
    pub mode: u8,
    pub table_len: u32,
    /// Digest of the active table's `table_len` entries (backend ids).
    pub table_digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSlotView {
    pub id: u32,
    pub address: String,
    pub active: bool,
    pub generation: u32,
    pub mac: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForwardingState {
    pub vips: Vec<VipForwarding>,
    /// Every slot that is not all zero.
    pub backends: Vec<BackendSlotView>,
    /// Digest of all the above and of every backend slot's bytes (all 4,096).
    pub digest: String,
}

fn open(dir: &Path, name: &'static str) -> Result<Map, DataplaneError> {
    let path = pin::map_paths(dir)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p)
        .ok_or(DataplaneError::MissingMap(name))?;
    let data = MapData::from_pin(&path).map_err(|source| DataplaneError::Map { name, source })?;
    Map::from_map_data(data).map_err(|source| DataplaneError::Map { name, source })
}

fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: the map types are plain `repr(C)` data without padding holes that matter here
    // (the kernel holds them as bytes too); reading them as bytes is what the map does.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn hex(x: u64) -> String {
    format!("{x:016x}")
}

/// Reads the forwarding state from the maps pinned under `dir` (lbd's `pin_dir`).
pub fn read_pinned(dir: &Path) -> Result<ForwardingState, DataplaneError> {
    let err = |name| move |source| DataplaneError::Map { name, source };
    let vips: HashMap<MapData, VipKey, VipMeta> =
        HashMap::try_from(open(dir, names::MAP_VIPS)?).map_err(err(names::MAP_VIPS))?;
    let backends: Array<MapData, Backend> =
        Array::try_from(open(dir, names::MAP_BACKENDS)?).map_err(err(names::MAP_BACKENDS))?;
    let tables: Array<MapData, u32> =
        Array::try_from(open(dir, names::MAP_TABLES)?).map_err(err(names::MAP_TABLES))?;
    let mut all = Vec::new();
    let mut out = Vec::new();
    let mut entries: Vec<(VipKey, VipMeta)> = vips
        .iter()
        .filter_map(Result::ok)
        // The port-0 address entries only route ICMP: no table.
        .filter(|(k, _)| k.proto != 0)
        .collect();
    entries.sort_by_key(|(k, _)| (k.family, k.addr, k.port, k.proto));
    for (k, meta) in entries {
        let len = meta.table_len.min(MAX_TABLE);
        let base = (meta.id * TABLE_SLOTS + (meta.slot & 1)) * MAX_TABLE;
        let mut table = Vec::with_capacity(len as usize * 4);
        for pos in 0..len {
            let id = tables
                .get(&(base + pos), 0)
                .map_err(err(names::MAP_TABLES))?;
            table.extend(id.to_le_bytes());
        }
        let v = VipForwarding {
            key: format!("{}:{}/{}", k.ip(), k.port_host(), k.proto),
            id: meta.id,
            algorithm: meta.algo,
            mode: meta.mode,
            table_len: meta.table_len,
            table_digest: hex(siphash24(DIGEST_SEED, &table)),
        };
        all.extend(format!("{v:?}").into_bytes());
        out.push(v);
    }
    let mut slots = Vec::new();
    for id in 0..MAX_BACKENDS {
        let b = backends.get(&id, 0).map_err(err(names::MAP_BACKENDS))?;
        all.extend_from_slice(bytes_of(&b));
        if b != Backend::default() {
            let m = b.mac;
            slots.push(BackendSlotView {
                id,
                address: lb_common::user::words_addr(b.addr, b.family).to_string(),
                active: b.flags & lb_common::BACKEND_F_ACTIVE != 0,
                generation: b.generation,
                mac: format!(
                    "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    m[0], m[1], m[2], m[3], m[4], m[5]
                ),
            });
        }
    }
    Ok(ForwardingState {
        vips: out,
        backends: slots,
        digest: hex(siphash24(DIGEST_SEED, &all)),
    })
}
