//! "Where does this flow go": the backend a flow's next packet gets, and why, computed from the
//! live maps with the data plane's own procedure (`lb-ebpf/src/select.rs`), step by step: the
//! connection table, the VIP lookup, the algorithm with its table slot (or its per-CPU
//! cursors, or its least-connections candidates) and the backend entry's state.
//!
//! Nothing is written: tracing a flow neither creates its entry nor moves a cursor. The one
//! input the trace cannot know is the LRU flood guard's state at the moment the packet comes
//! (a flooded CPU forwards a `maglev`/`ip-hash` SYN by the hash even when an entry exists).

use lb_common::{
    Algorithm, BACKEND_F_ACTIVE, Backend, CONN_F_CLOSING, ConnEntry, FlowKey, IPPROTO_TCP,
    MAX_LC_BACKENDS, MAX_TABLE, TABLE_SLOTS, VIP_MODE_VALID, VipKey, VipMeta,
    hash::{flow_hash, source_hash},
    names,
};

use crate::{DataplaneError, Maps};

/// The first packet a trace is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstPacket {
    /// A bare TCP SYN: a new connection (the data plane skips the table lookup, and a SYN
    /// that finds an open entry is a retransmission that keeps it).
    Syn,
    /// Any other packet (UDP, or TCP without SYN): the connection table first.
    Other,
}

/// The connection-table entry of the flow, as the data plane would judge it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryTrace {
    pub backend_id: u32,
    pub vip_id: u32,
    /// A FIN or RST was seen: a SYN on these ports opens a new connection.
    pub closing: bool,
    /// The entry's VIP id is still in use (`VIP_MODES`).
    pub vip_valid: bool,
    /// Its backend slot is active and of the entry's generation.
    pub backend_usable: bool,
    /// `bpf_jiffies64()` of the flow's last packet.
    pub last_seen_jiffies: u64,
}

/// One CPU's next weighted-round-robin pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPick {
    pub cpu: u32,
    pub cursor: u32,
    pub position: u32,
    pub backend_id: Option<u32>,
}

/// A least-connections candidate, in the order the data plane walks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub backend_id: u32,
    pub weight: u32,
    pub connections: u64,
}

/// What the algorithm reads for this flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlgorithmTrace {
    /// `maglev` (5-tuple hash) or `ip-hash` (source hash): one table position.
    Hashed {
        hash: u32,
        position: u32,
        backend_id: Option<u32>,
    },
    /// `weighted-round-robin`: each CPU walks the period from its own cursor.
    RoundRobin { per_cpu: Vec<CpuPick> },
    /// `least-connections`: the walk starts at `start` and takes the fewest connections per
    /// unit of weight.
    LeastConnections {
        start: u32,
        candidates: Vec<Candidate>,
        backend_id: Option<u32>,
    },
    /// The VIP has no table (no backend with weight).
    Empty,
}

/// Where the packet goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Its connection-table entry keeps it on that backend.
    Entry { backend_id: u32 },
    /// The algorithm's choice (and a new entry for it).
    Algorithm { backend_id: u32 },
    /// The algorithm's choice depends on the CPU the packet lands on.
    PerCpu {
        backend_ids: Vec<(u32, Option<u32>)>,
    },
    /// Dropped as `drop_no_backend`.
    NoBackend,
    /// No VIP at all takes the flow: it is passed to the kernel untouched.
    NotAVip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowTrace {
    pub first_packet: FirstPacket,
    /// The VIP the data plane's lookup finds for the flow (exact port, then port 0).
    pub vip: Option<VipMeta>,
    pub algorithm: Option<Algorithm>,
    /// The active table slot and the length of its table (or candidate list).
    pub slot: u32,
    pub table_len: u32,
    pub entry: Option<EntryTrace>,
    pub pick: AlgorithmTrace,
    pub decision: Decision,
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl Maps {
    /// The VIP the data plane finds for `flow`: (address, port, protocol), then port 0.
    pub fn lookup_vip(&self, flow: &FlowKey) -> Option<VipMeta> {
        let mut key = VipKey {
            addr: flow.dst,
            port: flow.dport,
            proto: flow.proto,
            family: flow.family,
        };
        self.vip(&key).or_else(|| {
            key.port = 0;
            self.vip(&key)
        })
    }

    fn usable(&self, id: u32, generation: u32) -> Result<bool, DataplaneError> {
        let b = self.backend(id)?;
        Ok(b.flags & BACKEND_F_ACTIVE != 0 && b.generation == generation)
    }

    fn entry_trace(&self, e: &ConnEntry) -> Result<EntryTrace, DataplaneError> {
        let mode = self.vip_mode(e.vip_id as u32)?;
        Ok(EntryTrace {
            backend_id: e.backend as u32,
            vip_id: e.vip_id as u32,
            closing: e.flags & CONN_F_CLOSING != 0,
            vip_valid: mode & VIP_MODE_VALID != 0,
            backend_usable: self.usable(e.backend as u32, e.generation)?,
            last_seen_jiffies: e.last_seen,
        })
    }

    fn table_at(&self, vip: &VipMeta, pos: u32) -> Result<u32, DataplaneError> {
        self.table_entry(vip.id, vip.slot & 1, pos)
    }

    /// What `select::pick` reads for the flow, without moving any cursor.
    fn pick_trace(&self, flow: &FlowKey, vip: &VipMeta) -> Result<AlgorithmTrace, DataplaneError> {
        let len = vip.table_len;
        if len == 0 || len > MAX_TABLE {
            return Ok(AlgorithmTrace::Empty);
        }
        let Some(algo) = Algorithm::from_u8(vip.algo) else {
            return Ok(AlgorithmTrace::Empty);
        };
        Ok(match algo {
            Algorithm::Maglev | Algorithm::IpHash => {
                let hash = if algo == Algorithm::Maglev {
                    flow_hash(flow)
                } else {
                    source_hash(flow)
                };
                let position = hash % len;
                AlgorithmTrace::Hashed {
                    hash,
                    position,
                    backend_id: Some(self.table_at(vip, position)?),
                }
            }
            Algorithm::WeightedRoundRobin => {
                let cursors = self
                    .rr_cursor
                    .get(&vip.id, 0)
                    .map_err(map_err(names::MAP_RR_CURSOR))?;
                let cpus = aya::util::online_cpus().unwrap_or_default();
                let mut per_cpu = Vec::new();
                for (cpu, cursor) in cursors.iter().enumerate() {
                    if !cpus.is_empty() && !cpus.contains(&(cpu as u32)) {
                        continue;
                    }
                    let position = cursor % len;
                    per_cpu.push(CpuPick {
                        cpu: cpu as u32,
                        cursor: *cursor,
                        position,
                        backend_id: Some(self.table_at(vip, position)?),
                    });
                }
                AlgorithmTrace::RoundRobin { per_cpu }
            }
            Algorithm::LeastConnections => self.least_connections_trace(flow, vip, len)?,
        })
    }

    fn least_connections_trace(
        &self,
        flow: &FlowKey,
        vip: &VipMeta,
        len: u32,
    ) -> Result<AlgorithmTrace, DataplaneError> {
        let list = self
            .lc_lists
            .get(&(vip.id * TABLE_SLOTS + (vip.slot & 1)), 0)
            .map_err(map_err(names::MAP_LC_LISTS))?;
        let n = len.min(MAX_LC_BACKENDS as u32);
        let start = flow_hash(flow) % n;
        let mut candidates = Vec::new();
        let mut best: Option<(u32, u64, u64)> = None;
        for i in 0..n {
            let j = ((start + i) % n) as usize;
            let (id, weight) = (list.backends[j], list.weights[j]);
            let conns = self.lc_connections(id).unwrap_or(0);
            candidates.push(Candidate {
                backend_id: id,
                weight,
                connections: conns,
            });
            if weight == 0 {
                continue;
            }
            // conns / weight < best_conns / best_weight, as the data plane compares it.
            let better = match best {
                None => true,
                Some((_, bc, bw)) => conns.wrapping_mul(bw) < bc.wrapping_mul(weight as u64),
            };
            if better {
                best = Some((id, conns, weight as u64));
            }
        }
        Ok(AlgorithmTrace::LeastConnections {
            start,
            candidates,
            backend_id: best.map(|b| b.0),
        })
    }

    /// Whether a backend slot may take new flows (`select::new_flow`'s check).
    fn active(&self, id: u32) -> Result<bool, DataplaneError> {
        let b: Backend = self.backend(id)?;
        Ok(b.flags & BACKEND_F_ACTIVE != 0)
    }

    /// Traces `flow` (client to VIP) whose first packet is `first`, against the live maps.
    pub fn trace(&self, flow: &FlowKey, first: FirstPacket) -> Result<FlowTrace, DataplaneError> {
        let first = if flow.proto == IPPROTO_TCP {
            first
        } else {
            FirstPacket::Other
        };
        let entry = match self.conn(flow) {
            Some(e) => Some(self.entry_trace(&e)?),
            None => None,
        };
        let vip = self.lookup_vip(flow);
        let mut trace = FlowTrace {
            first_packet: first,
            vip,
            algorithm: vip.and_then(|v| Algorithm::from_u8(v.algo)),
            slot: vip.map(|v| v.slot & 1).unwrap_or(0),
            table_len: vip.map(|v| v.table_len).unwrap_or(0),
            entry,
            pick: AlgorithmTrace::Empty,
            decision: Decision::NotAVip,
        };
        // Established flows first (`select::established`): never for a bare SYN.
        if first == FirstPacket::Other
            && let Some(e) = &entry
            && e.vip_valid
            && e.backend_usable
        {
            trace.decision = Decision::Entry {
                backend_id: e.backend_id,
            };
            if let Some(v) = &vip {
                trace.pick = self.pick_trace(flow, v)?;
            }
            return Ok(trace);
        }
        let Some(v) = vip else {
            return Ok(trace);
        };
        trace.pick = self.pick_trace(flow, &v)?;
        let picked = match &trace.pick {
            AlgorithmTrace::Hashed { backend_id, .. }
            | AlgorithmTrace::LeastConnections { backend_id, .. } => vec![(None, *backend_id)],
            AlgorithmTrace::RoundRobin { per_cpu } => per_cpu
                .iter()
                .map(|c| (Some(c.cpu), c.backend_id))
                .collect(),
            AlgorithmTrace::Empty => vec![(None, None)],
        };
        // `select::new_flow`: the pick must be active; a SYN finding an open, usable entry is
        // a retransmission and keeps it.
        let mut outcome = Vec::new();
        for (cpu, id) in picked {
            let chosen = match id {
                Some(id) if self.active(id)? => match &entry {
                    Some(e) if first == FirstPacket::Syn && !e.closing && e.backend_usable => {
                        Some((true, e.backend_id))
                    }
                    _ => Some((false, id)),
                },
                _ => None,
            };
            outcome.push((cpu, chosen));
        }
        // The same choice on every CPU is one choice.
        if outcome.windows(2).all(|w| w[0].1 == w[1].1)
            && let Some((_, c)) = outcome.first().copied()
        {
            outcome = vec![(None, c)];
        }
        trace.decision = match outcome.as_slice() {
            [(None, Some((true, id)))] => Decision::Entry { backend_id: *id },
            [(None, Some((false, id)))] => Decision::Algorithm { backend_id: *id },
            [(None, None)] => Decision::NoBackend,
            many => {
                let ids: Vec<(u32, Option<u32>)> = many
                    .iter()
                    .map(|(cpu, c)| (cpu.unwrap_or(0), c.map(|(_, id)| id)))
                    .collect();
                if ids.iter().all(|(_, id)| id.is_none()) {
                    Decision::NoBackend
                } else {
                    Decision::PerCpu { backend_ids: ids }
                }
            }
        };
        Ok(trace)
    }
}
