//! Turns the desired set of VIPs and backends into map contents.
//!
//! Ordering rules that keep packets safe while maps change:
//! - a backend entry is written (active) before any table refers to it;
//! - a VIP's table is written completely into its idle slot, then `VipMeta` (a hash-map value,
//!   replaced atomically by the kernel) flips to that slot;
//! - a backend is marked inactive only after no table refers to it any more, and its slot's
//!   generation changes when the slot is reused, so old connection-table entries re-hash.
//!
//! Only table entries that differ from what the idle slot already holds are written.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use lb_common::{
    AF_INET, Algorithm, BACKEND_F_ACTIVE, Backend, ForwardMode, LcList, MAX_BACKENDS,
    MAX_LC_BACKENDS, MAX_TABLE, MAX_VIPS, TABLE_SLOTS, VipKey, VipMeta, names, user::addr_words,
};

use super::{DataplaneError, Maps};
use crate::{
    maglev::{self, MaglevBackend, TableSize},
    slots::{self, Pair},
    wrr,
};

/// Whether a backend may receive packets at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// Receives new flows in proportion to its weight (none at weight 0: draining) and keeps
    /// its existing flows.
    Active,
    /// Failed or administratively down: no new flows, and existing flows are re-hashed.
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: IpAddr,
    /// MAC of the backend (dsr-l2) or of the next hop towards it (ipip).
    pub mac: [u8; 6],
    /// Effective weight for new flows; 0 drains.
    pub weight: u32,
    pub state: BackendState,
}

/// Second chance for a VIP (docs/dataplane.md, "Second chance"): after each table flip, for
/// `window`, TCP packets that miss the connection table carry the previous table's choice too.
/// The data plane applies it to `maglev` and `ip-hash` VIPs in `ipip` mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecondChance {
    #[default]
    Off,
    On {
        window: Duration,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub name: String,
    pub addr: IpAddr,
    /// 0: every port of the address.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub algorithm: Algorithm,
    pub mode: ForwardMode,
    pub table_size: TableSize,
    pub backends: Vec<BackendSpec>,
    pub second_chance: SecondChance,
}

impl VipSpec {
    pub fn key(&self) -> VipKey {
        VipKey::new(self.addr, self.port, self.proto)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Map(#[from] DataplaneError),
    #[error("VIP {vip}: {source}")]
    Maglev {
        vip: String,
        source: maglev::MaglevError,
    },
    #[error("VIP {vip}: {source}")]
    Wrr { vip: String, source: wrr::WrrError },
    #[error("VIP {vip}: least-connections supports at most {MAX_LC_BACKENDS} backends, got {got}")]
    TooManyLcBackends { vip: String, got: usize },
    #[error("VIP {vip}: backend {backend} is {backend_family} but the VIP is not")]
    FamilyMismatch {
        vip: String,
        backend: IpAddr,
        backend_family: &'static str,
    },
    #[error("too many VIPs (at most {MAX_VIPS})")]
    TooManyVips,
    #[error("too many backends (at most {MAX_BACKENDS} VIP/backend pairs)")]
    TooManyBackends,
    #[error("two VIPs share the key {0}")]
    DuplicateVip(String),
    #[error("backend slots did not settle (a bug: please report it)")]
    SlotsUnsettled,
}

/// What one `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub tables_swapped: usize,
    pub table_entries_written: usize,
    pub backends_written: usize,
}

#[derive(Clone, Debug)]
pub(super) struct VipState {
    pub(super) key: VipKey,
    pub(super) meta: VipMeta,
    /// The content that `meta.slot` holds.
    pub(super) content: TableContent,
    /// Tables this programmer has flipped to for the VIP (1: the first one; 0: adopted and
    /// not rewritten yet): what the dashboard shows as the table generation.
    pub(super) generation: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TableContent {
    Table(Vec<u32>),
    Lc(Box<LcList>),
    /// Adopted from a previous daemon: not known, so never equal to a new table.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    BeforeTable,
    AfterTable,
}

/// One round of [`Programmer::apply`]: the slot of every backend placed in it, and the new
/// backends that wait for theirs to be freed.
#[derive(Debug, Default)]
struct Round {
    ids: BTreeMap<Pair, u32>,
    waiting: BTreeSet<Pair>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BackendSlot {
    pub(super) id: u32,
    pub(super) entry: Backend,
}

/// Keeps the maps equal to the last applied desired state.
pub struct Programmer {
    pub(super) maps: Maps,
    pub(super) vips: BTreeMap<String, VipState>,
    /// Backend slots by (VIP name, address): one slot per pair so that health, weight and
    /// statistics are per VIP.
    pub(super) backends: BTreeMap<(String, IpAddr), BackendSlot>,
    pub(super) free_vip_ids: BTreeSet<u32>,
    /// What each (vip id, slot) of `TABLES` holds, so rewrites touch only changed entries.
    /// Slots missing here (adopted ones) are written in full.
    pub(super) shadow: HashMap<(u32, u32), Vec<u32>>,
    /// Slots whose content is unknown (adopted): the first write covers every entry.
    pub(super) unknown_slots: BTreeSet<(u32, u32)>,
    /// What `VIP_ADDR_FILTER` holds, read from the map on first use (it may be adopted).
    pub(super) addr_filter: Option<Vec<u64>>,
}

impl Programmer {
    pub fn new(maps: Maps) -> Self {
        Self {
            maps,
            vips: BTreeMap::new(),
            backends: BTreeMap::new(),
            free_vip_ids: (0..MAX_VIPS).collect(),
            shadow: HashMap::new(),
            unknown_slots: BTreeSet::new(),
            addr_filter: None,
        }
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    pub fn vip_id(&self, name: &str) -> Option<u32> {
        self.vips.get(name).map(|v| v.meta.id)
    }

    pub fn vip_meta(&self, name: &str) -> Option<VipMeta> {
        self.vips.get(name).map(|v| v.meta)
    }

    /// How many tables this lbd has written for the VIP (each rewrite flips to a new one).
    pub fn table_generation(&self, name: &str) -> Option<u64> {
        self.vips.get(name).map(|v| v.generation)
    }

    pub fn backend_id(&self, vip: &str, addr: IpAddr) -> Option<u32> {
        self.backends.get(&(vip.to_string(), addr)).map(|b| b.id)
    }

    /// Every (VIP name, address) -> backend id currently programmed.
    pub fn backend_ids(&self) -> impl Iterator<Item = (&str, IpAddr, u32)> {
        self.backends
            .iter()
            .map(|((vip, addr), slot)| (vip.as_str(), *addr, slot.id))
    }

    /// Makes the maps match `desired`. On error nothing that packets can see is half done:
    /// tables that were not swapped are still the old ones.
    ///
    /// Backend slots are canonical ([`crate::slots`]): when a backend's slot is held by another
    /// one (which moves, or leaves), the change takes several rounds, each a complete apply
    /// with its own table swaps: the holder moves or leaves first and the waiting backend
    /// joins in a later round, so no table ever names a slot while it holds another backend.
    pub fn apply(&mut self, desired: &[VipSpec]) -> Result<ApplyReport, ProgramError> {
        validate(desired)?;
        let pairs: BTreeSet<Pair> = desired
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| (v.name.clone(), b.addr)))
            .collect();
        let canonical = slots::assign(&pairs).ok_or(ProgramError::TooManyBackends)?;
        let mut report = ApplyReport::default();
        // Each round moves at least one backend towards its slot (or out of a cycle).
        for _ in 0..=pairs.len() {
            let round = self.next_round(&canonical);
            if round.waiting.is_empty() && round.ids == canonical {
                return self.apply_round(desired, &canonical, report);
            }
            let partial: Vec<VipSpec> = desired
                .iter()
                .map(|v| VipSpec {
                    backends: v
                        .backends
                        .iter()
                        .filter(|b| !round.waiting.contains(&(v.name.clone(), b.addr)))
                        .cloned()
                        .collect(),
                    ..v.clone()
                })
                .collect();
            report = self.apply_round(&partial, &round.ids, report)?;
        }
        // Every round places a backend or frees a slot: this is not reached.
        Err(ProgramError::SlotsUnsettled)
    }

    /// Where each listed backend goes in the next round: its canonical slot when free, else
    /// where it is (a new one waits). A cycle of backends holding each other's slots is
    /// broken by moving one of them to a slot nobody holds or wants.
    fn next_round(&self, canonical: &BTreeMap<Pair, u32>) -> Round {
        let held: BTreeMap<u32, &Pair> = self.backends.iter().map(|(k, s)| (s.id, k)).collect();
        let mut round = Round::default();
        let mut progress = false;
        let mut stuck: Option<&Pair> = None;
        for (pair, &want) in canonical {
            let now = self.backends.get(pair).map(|s| s.id);
            if now == Some(want) || !held.contains_key(&want) {
                progress |= now != Some(want);
                round.ids.insert(pair.clone(), want);
                continue;
            }
            match now {
                Some(id) => {
                    stuck.get_or_insert(pair);
                    round.ids.insert(pair.clone(), id);
                }
                None => {
                    round.waiting.insert(pair.clone());
                }
            }
        }
        // Backends that leave free their slots this round: that is progress too.
        progress |= self.backends.keys().any(|k| !canonical.contains_key(k));
        if !progress && let Some(pair) = stuck {
            let wanted: BTreeSet<u32> = canonical.values().copied().collect();
            if let Some(spare) =
                (1..MAX_BACKENDS).find(|i| !held.contains_key(i) && !wanted.contains(i))
            {
                round.ids.insert(pair.clone(), spare);
            }
        }
        round
    }

    /// Makes the maps match `desired` with backends in the slots `ids` gives.
    fn apply_round(
        &mut self,
        desired: &[VipSpec],
        ids: &BTreeMap<Pair, u32>,
        mut report: ApplyReport,
    ) -> Result<ApplyReport, ProgramError> {
        let wanted: BTreeMap<&str, &VipSpec> =
            desired.iter().map(|v| (v.name.as_str(), v)).collect();

        // VIPs removed, or whose key changed (treated as remove + add).
        let gone: Vec<String> = self
            .vips
            .iter()
            .filter(|(name, st)| wanted.get(name.as_str()).is_none_or(|v| v.key() != st.key))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.remove_vip(&name)?;
            report.vips_removed += 1;
        }

        // The data plane passes traffic whose filter bit is clear: set the bits of new
        // addresses before their entries exist, clear stale ones only after they are gone.
        let mut addrs: Vec<[u32; 4]> = self.vips.values().map(|v| v.key.addr).collect();
        addrs.extend(desired.iter().map(|v| v.key().addr));
        self.sync_addr_filter(&addrs)?;

        for vip in desired {
            // Activations before the table that uses them, deactivations after the table that
            // no longer does; a moved backend's old slot is emptied once the table is swapped.
            let moved = self.write_backends(vip, ids, Phase::BeforeTable, &mut report)?;
            self.write_vip(vip, &mut report)?;
            self.write_backends(vip, ids, Phase::AfterTable, &mut report)?;
            for old in moved {
                self.clear_slot(old)?;
            }
            self.retire_backends(vip)?;
        }
        self.sync_address_entries()?;
        let addrs: Vec<[u32; 4]> = self.vips.values().map(|v| v.key.addr).collect();
        self.sync_addr_filter(&addrs)?;
        Ok(report)
    }

    /// Makes `VIP_ADDR_FILTER` hold exactly the bits of `addrs`, writing changed words only.
    fn sync_addr_filter(&mut self, addrs: &[[u32; 4]]) -> Result<(), ProgramError> {
        let mut want = vec![0u64; lb_common::ADDR_FILTER_WORDS as usize];
        for a in addrs {
            let bit = lb_common::addr_filter_bit(a);
            want[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        let have = match self.addr_filter.take() {
            Some(h) => h,
            None => self.maps.addr_filter()?,
        };
        let mut now = have.clone();
        for (i, (w, h)) in want.iter().zip(&have).enumerate() {
            if w != h {
                self.maps.set_addr_filter_word(i as u32, *w)?;
                now[i] = *w;
            }
        }
        self.addr_filter = Some(now);
        Ok(())
    }

    /// Writes the backend entries of `vip` in the slots `ids` gives; returns the slots that
    /// backends left for another (to empty once no table names them).
    fn write_backends(
        &mut self,
        vip: &VipSpec,
        ids: &BTreeMap<Pair, u32>,
        phase: Phase,
        report: &mut ApplyReport,
    ) -> Result<Vec<u32>, ProgramError> {
        let mut moved = Vec::new();
        for b in &vip.backends {
            let key = (vip.name.clone(), b.addr);
            let current = self.backends.get(&key).map(|s| s.entry.flags);
            let flags = match (b.state, phase) {
                (BackendState::Active, _) => BACKEND_F_ACTIVE,
                (BackendState::Down, Phase::AfterTable) => 0,
                // Still referenced by the old table until the swap: keep what it has.
                (BackendState::Down, Phase::BeforeTable) => current.unwrap_or(0),
            };
            let id = *ids.get(&key).ok_or(ProgramError::TooManyBackends)?;
            let old = self.backends.get(&key).map(|s| s.id);
            if let Some(old) = old
                && old != id
            {
                moved.push(old);
            }
            let entry = Backend {
                addr: addr_words(b.addr),
                mac: b.mac,
                family: lb_common::user::family_of(b.addr),
                flags,
                generation: slots::generation(&vip.name, b.addr),
            };
            let unchanged =
                old == Some(id) && self.backends.get(&key).map(|s| s.entry) == Some(entry);
            if !unchanged {
                self.maps
                    .backends
                    .set(id, entry, 0)
                    .map_err(|source| DataplaneError::Map {
                        name: names::MAP_BACKENDS,
                        source,
                    })?;
                report.backends_written += 1;
            }
            self.backends.insert(key, BackendSlot { id, entry });
        }
        Ok(moved)
    }

    /// Backends of `vip` that are no longer listed: inactive (their flows re-hash), slot freed.
    fn retire_backends(&mut self, vip: &VipSpec) -> Result<(), ProgramError> {
        let listed: BTreeSet<IpAddr> = vip.backends.iter().map(|b| b.addr).collect();
        let stale: Vec<(String, IpAddr)> = self
            .backends
            .keys()
            .filter(|(name, addr)| name == &vip.name && !listed.contains(addr))
            .cloned()
            .collect();
        for key in stale {
            self.release_backend(&key)?;
        }
        Ok(())
    }

    fn release_backend(&mut self, key: &(String, IpAddr)) -> Result<(), ProgramError> {
        if let Some(slot) = self.backends.remove(key) {
            self.clear_slot(slot.id)?;
        }
        Ok(())
    }

    /// Empties a slot no table names any more (all zero: inactive, generation 0, as on a
    /// balancer that never used it).
    fn clear_slot(&mut self, id: u32) -> Result<(), ProgramError> {
        self.maps
            .backends
            .set(id, Backend::default(), 0)
            .map_err(|source| DataplaneError::Map {
                name: names::MAP_BACKENDS,
                source,
            })?;
        Ok(())
    }

    fn content_for(&self, vip: &VipSpec) -> Result<TableContent, ProgramError> {
        let ids: Vec<(u32, &BackendSpec)> = vip
            .backends
            .iter()
            .filter(|b| b.state == BackendState::Active && b.weight > 0)
            .filter_map(|b| {
                self.backends
                    .get(&(vip.name.clone(), b.addr))
                    .map(|s| (s.id, b))
            })
            .collect();
        match vip.algorithm {
            Algorithm::Maglev | Algorithm::IpHash => {
                if ids.is_empty() {
                    return Ok(TableContent::Table(Vec::new()));
                }
                let keys: Vec<Vec<u8>> = ids.iter().map(|(_, b)| identity(b.addr)).collect();
                let input: Vec<MaglevBackend> = ids
                    .iter()
                    .zip(&keys)
                    .map(|((id, b), key)| MaglevBackend {
                        id: *id,
                        key,
                        weight: b.weight,
                    })
                    .collect();
                maglev::build(&input, vip.table_size)
                    .map(TableContent::Table)
                    .map_err(|source| ProgramError::Maglev {
                        vip: vip.name.clone(),
                        source,
                    })
            }
            Algorithm::WeightedRoundRobin => {
                if ids.is_empty() {
                    return Ok(TableContent::Table(Vec::new()));
                }
                let input: Vec<(u32, u32)> = ids.iter().map(|(id, b)| (*id, b.weight)).collect();
                wrr::sequence(&input, MAX_TABLE as usize)
                    .map(TableContent::Table)
                    .map_err(|source| ProgramError::Wrr {
                        vip: vip.name.clone(),
                        source,
                    })
            }
            Algorithm::LeastConnections => {
                let mut list = LcList::default();
                for (i, (id, b)) in ids.iter().enumerate().take(MAX_LC_BACKENDS) {
                    list.backends[i] = *id;
                    list.weights[i] = b.weight;
                }
                Ok(TableContent::Lc(Box::new(list)))
            }
        }
    }

    fn write_vip(&mut self, vip: &VipSpec, report: &mut ApplyReport) -> Result<(), ProgramError> {
        let content = self.content_for(vip)?;
        let table_len = match &content {
            TableContent::Table(t) => t.len() as u32,
            TableContent::Lc(l) => l.weights.iter().take_while(|&&w| w > 0).count() as u32,
            TableContent::Unknown => 0,
        };
        let existing = self.vips.get(&vip.name).cloned();
        let (id, slot) = match &existing {
            Some(st) => {
                let unchanged = st.content == content
                    && st.meta.algo == vip.algorithm as u8
                    && st.meta.mode == vip.mode as u8
                    && st.meta.flags == second_chance_flags(vip.second_chance);
                if unchanged {
                    return Ok(());
                }
                (st.meta.id, st.meta.slot ^ 1)
            }
            None => {
                let id = self
                    .free_vip_ids
                    .pop_first()
                    .ok_or(ProgramError::TooManyVips)?;
                report.vips_added += 1;
                (id, 0)
            }
        };
        match &content {
            TableContent::Table(t) => {
                report.table_entries_written += self.write_slot(id, slot, t)?
            }
            TableContent::Unknown => {}
            TableContent::Lc(l) => self
                .maps
                .lc_lists
                .set(id * TABLE_SLOTS + slot, **l, 0)
                .map_err(|source| DataplaneError::Map {
                    name: names::MAP_LC_LISTS,
                    source,
                })?,
        }
        // The flip below opens the second-chance window: the slot it leaves keeps the
        // previous table, which the data plane hashes into until the window ends.
        let (prev_len, second_chance_until) = match (&existing, vip.second_chance) {
            (Some(st), SecondChance::On { window }) => (
                st.meta.table_len,
                Maps::coarse_now_ns().saturating_add(window.as_nanos() as u64),
            ),
            _ => (0, 0),
        };
        let meta = VipMeta {
            id,
            slot,
            table_len,
            algo: vip.algorithm as u8,
            mode: vip.mode as u8,
            flags: second_chance_flags(vip.second_chance),
            _pad: 0,
            prev_len,
            _pad2: 0,
            second_chance_until,
        };
        let key = vip.key();
        // Before the VIP entry: no flow of this id exists yet (entries of an earlier VIP that
        // had the id name backend slots whose generation has moved on, so they are unusable).
        self.maps
            .set_vip_mode(id, lb_common::VIP_MODE_VALID | vip.mode as u32)?;
        self.maps
            .vips
            .insert(key, meta, 0)
            .map_err(|source| DataplaneError::Map {
                name: names::MAP_VIPS,
                source,
            })?;
        report.tables_swapped += 1;
        let generation = existing.map_or(0, |st| st.generation) + 1;
        self.vips.insert(
            vip.name.clone(),
            VipState {
                key,
                meta,
                content,
                generation,
            },
        );
        Ok(())
    }

    fn write_slot(&mut self, id: u32, slot: u32, table: &[u32]) -> Result<usize, ProgramError> {
        let unknown = self.unknown_slots.remove(&(id, slot));
        let mut shadow = self.shadow.remove(&(id, slot)).unwrap_or_default();
        if shadow.len() < table.len() {
            shadow.resize(table.len(), 0);
        }
        if unknown {
            // Force every entry to be written: u32::MAX is never a backend id.
            shadow.iter_mut().for_each(|e| *e = u32::MAX);
        }
        let mut written = 0;
        let result = (|| {
            for (pos, (&want, have)) in table.iter().zip(shadow.iter_mut()).enumerate() {
                if want != *have {
                    self.maps.write_table_entry(id, slot, pos as u32, want)?;
                    *have = want;
                    written += 1;
                }
            }
            Ok::<_, DataplaneError>(())
        })();
        self.shadow.insert((id, slot), shadow);
        result?;
        Ok(written)
    }

    fn remove_vip(&mut self, name: &str) -> Result<(), ProgramError> {
        let Some(st) = self.vips.remove(name) else {
            return Ok(());
        };
        // A missing key is fine: nothing to remove.
        let _ = self.maps.vips.remove(&st.key);
        // Established flows of this VIP stop being forwarded from the connection table.
        self.maps.set_vip_mode(st.meta.id, 0)?;
        self.free_vip_ids.insert(st.meta.id);
        let stale: Vec<(String, IpAddr)> = self
            .backends
            .keys()
            .filter(|(vip, _)| vip == name)
            .cloned()
            .collect();
        for key in stale {
            self.release_backend(&key)?;
        }
        Ok(())
    }

    /// One `proto == 0` entry per address that has a VIP (ICMP and fragment handling).
    fn sync_address_entries(&mut self) -> Result<(), ProgramError> {
        let wanted: BTreeSet<VipKey> = self
            .vips
            .values()
            .map(|v| VipKey {
                port: 0,
                proto: 0,
                ..v.key
            })
            .collect();
        let present: Vec<VipKey> = self
            .maps
            .vips
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.proto == 0)
            .collect();
        for k in present.iter().filter(|k| !wanted.contains(k)) {
            let _ = self.maps.vips.remove(k);
        }
        for k in wanted.iter().filter(|k| !present.contains(k)) {
            self.maps
                .vips
                .insert(k, VipMeta::default(), 0)
                .map_err(|source| DataplaneError::Map {
                    name: names::MAP_VIPS,
                    source,
                })?;
        }
        Ok(())
    }
}

/// The stable identity Maglev permutes on: the backend's address bytes.
fn identity(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn validate(desired: &[VipSpec]) -> Result<(), ProgramError> {
    if desired.len() > MAX_VIPS as usize {
        return Err(ProgramError::TooManyVips);
    }
    let mut keys = BTreeSet::new();
    for vip in desired {
        if !keys.insert(vip.key()) {
            return Err(ProgramError::DuplicateVip(format!(
                "{}:{}/{}",
                vip.addr, vip.port, vip.proto
            )));
        }
        let family = lb_common::user::family_of(vip.addr);
        for b in &vip.backends {
            if lb_common::user::family_of(b.addr) != family {
                return Err(ProgramError::FamilyMismatch {
                    vip: vip.name.clone(),
                    backend: b.addr,
                    backend_family: if lb_common::user::family_of(b.addr) == AF_INET {
                        "IPv4"
                    } else {
                        "IPv6"
                    },
                });
            }
        }
        if vip.algorithm == Algorithm::LeastConnections && vip.backends.len() > MAX_LC_BACKENDS {
            return Err(ProgramError::TooManyLcBackends {
                vip: vip.name.clone(),
                got: vip.backends.len(),
            });
        }
    }
    Ok(())
}

fn second_chance_flags(sc: SecondChance) -> u8 {
    match sc {
        SecondChance::Off => 0,
        SecondChance::On { .. } => lb_common::VIP_F_SECOND_CHANCE,
    }
}
