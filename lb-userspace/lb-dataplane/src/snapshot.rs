//! What a daemon must remember so that the next one adopts the pinned maps: which VIP and
//! backend owns which slot. Saved after every change; on start it is
//! checked against the maps, and only what matches is adopted.

use std::net::IpAddr;

use lb_common::{LAYOUT_VERSION, VipKey, user::addr_words};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{
    Maps, Programmer,
    programmer::{BackendSlot, TableContent, VipState},
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgrammerState {
    pub layout: u32,
    pub vips: Vec<VipRecord>,
    pub backends: Vec<BackendRecord>,
    /// Written by daemons whose generations counted slot reuse; generations are now derived
    /// from each backend's identity (`crate::slots`), so this is read and ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<(u32, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRecord {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRecord {
    pub vip: String,
    pub addr: IpAddr,
    pub id: u32,
}

impl Programmer {
    pub fn snapshot(&self) -> ProgrammerState {
        ProgrammerState {
            layout: LAYOUT_VERSION,
            vips: self
                .vips
                .iter()
                .map(|(name, st)| VipRecord {
                    name: name.clone(),
                    addr: st.key.ip(),
                    port: st.key.port_host(),
                    proto: st.key.proto,
                    id: st.meta.id,
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|((vip, addr), slot)| BackendRecord {
                    vip: vip.clone(),
                    addr: *addr,
                    id: slot.id,
                })
                .collect(),
            generations: Vec::new(),
        }
    }

    /// A programmer over maps a previous daemon filled. Records that do not match the maps
    /// are dropped (with a warning); their VIPs and backends are then programmed afresh.
    pub fn adopt(maps: Maps, state: &ProgrammerState) -> Self {
        let mut p = Programmer::new(maps);
        if state.layout != LAYOUT_VERSION {
            warn!(
                found = state.layout,
                want = LAYOUT_VERSION,
                "state file has another map layout; not adopting"
            );
            return p;
        }
        for v in &state.vips {
            let key = VipKey::new(v.addr, v.port, v.proto);
            match p.maps.vip(&key) {
                Some(meta) if meta.id == v.id => {
                    p.free_vip_ids.remove(&v.id);
                    for slot in 0..lb_common::TABLE_SLOTS {
                        p.unknown_slots.insert((v.id, slot));
                    }
                    p.vips.insert(
                        v.name.clone(),
                        VipState {
                            key,
                            meta,
                            content: TableContent::Unknown,
                            generation: 0,
                        },
                    );
                }
                _ => {
                    warn!(vip = %v.name, "VIP in the state file is not in the maps; programming it afresh")
                }
            }
        }
        for b in &state.backends {
            match p.maps.backend(b.id) {
                // Adopted where it is; the next apply moves it to its canonical slot (and
                // generation) if an older lbd put it elsewhere.
                Ok(entry) if entry.addr == addr_words(b.addr) && p.vips.contains_key(&b.vip) => {
                    p.backends
                        .insert((b.vip.clone(), b.addr), BackendSlot { id: b.id, entry });
                }
                _ => {
                    warn!(vip = %b.vip, addr = %b.addr, "backend in the state file does not match the maps")
                }
            }
        }
        p
    }
}
