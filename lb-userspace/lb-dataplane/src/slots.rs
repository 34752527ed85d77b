//! Backend slots (ids) and generations as a pure function of the set of (VIP, backend)
//! pairs, so that every balancer given the same backends writes the same bytes into its maps,
//! whatever order the backends registered or were added in (docs/dataplane.md, "one table on
//! every balancer").
//!
//! A pair's home slot is a keyed hash of its identity (VIP name, backend address). Pairs are
//! placed in order of (home, identity), each in the first free slot from its home on (linear
//! probing, wrapping): the layout depends only on the set. A pair added later can only move
//! the pairs after it in its cluster of occupied slots, which is rare with 4,095 slots; the
//! [`crate::Programmer`] moves them without a window where a table names the wrong backend.
//! The generation, which tells a connection-table entry whether its slot still holds the
//! backend it was made for, is a second keyed hash of the same identity.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use lb_common::MAX_BACKENDS;

use crate::maglev::siphash24;

/// SipHash-2-4 key of a pair's home slot ("lbxdp-sl", "ot-home1"). Changing it moves every
/// backend on a rolling upgrade: a golden test guards it.
const SLOT_SEED: (u64, u64) = (0x6c62_7864_702d_736c, 0x6f74_2d68_6f6d_6531);
/// SipHash-2-4 key of a pair's generation ("lbxdp-ge", "neration").
const GENERATION_SEED: (u64, u64) = (0x6c62_7864_702d_6765, 0x6e65_7261_7469_6f6e);

/// A (VIP name, backend address) pair.
pub type Pair = (String, IpAddr);

fn identity(vip: &str, addr: IpAddr) -> Vec<u8> {
    let mut id = vip.as_bytes().to_vec();
    // The name cannot hold a NUL: nothing else can produce the same bytes.
    id.push(0);
    match addr {
        IpAddr::V4(a) => id.extend(a.octets()),
        IpAddr::V6(a) => id.extend(a.octets()),
    }
    id
}

/// The slot a pair takes when no other pair is in its way: 1..MAX_BACKENDS (0 is never a
/// backend: an all-zero table entry must not mean one).
pub fn home(vip: &str, addr: IpAddr) -> u32 {
    1 + (siphash24(SLOT_SEED, &identity(vip, addr)) % u64::from(MAX_BACKENDS - 1)) as u32
}

/// The pair's generation: never 0 (an empty slot's).
pub fn generation(vip: &str, addr: IpAddr) -> u32 {
    (siphash24(GENERATION_SEED, &identity(vip, addr)) as u32) | 1
}

/// The slot of every pair, or `None` when there are more pairs than slots.
pub fn assign(pairs: &BTreeSet<Pair>) -> Option<BTreeMap<Pair, u32>> {
    let slots = MAX_BACKENDS - 1;
    if pairs.len() > slots as usize {
        return None;
    }
    let mut order: Vec<(u32, &Pair)> = pairs.iter().map(|p| (home(&p.0, p.1), p)).collect();
    order.sort();
    let mut taken = vec![false; MAX_BACKENDS as usize];
    let mut out = BTreeMap::new();
    for (h, pair) in order {
        let mut id = h;
        while taken[id as usize] {
            id = if id == slots { 1 } else { id + 1 };
        }
        taken[id as usize] = true;
        out.insert(pair.clone(), id);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: u32) -> BTreeSet<Pair> {
        (0..n)
            .map(|i| {
                let vip = format!("vip{}", i % 7);
                let addr = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
                (vip, addr)
            })
            .collect()
    }

    #[test]
    fn golden_slots_and_generations() {
        // A change here moves every backend of a running fleet on upgrade: keep them.
        let a: IpAddr = "10.77.0.11".parse().unwrap();
        assert_eq!(home("web", a), home("web", a));
        assert_ne!(home("web", a), home("web6", a));
        assert_eq!(generation("web", a) & 1, 1);
        let golden = (home("web", a), generation("web", a));
        assert_eq!(golden, (GOLDEN_HOME, GOLDEN_GENERATION), "{golden:?}");
    }
    const GOLDEN_HOME: u32 = 2872;
    const GOLDEN_GENERATION: u32 = 2_263_705_895;

    #[test]
    fn the_layout_depends_only_on_the_set() {
        // 3,000 pairs in 4,095 slots: long clusters, many displaced pairs.
        let all: Vec<Pair> = pairs(3000).into_iter().collect();
        let canonical = assign(&all.iter().cloned().collect()).unwrap();
        let ids: BTreeSet<u32> = canonical.values().copied().collect();
        assert_eq!(ids.len(), all.len(), "one slot per pair");
        assert!(ids.iter().all(|i| (1..MAX_BACKENDS).contains(i)));
        // Built up one pair at a time in another order, the final layout is the same.
        let mut grown = BTreeSet::new();
        for p in all.iter().rev() {
            grown.insert(p.clone());
        }
        assert_eq!(assign(&grown).unwrap(), canonical);
    }

    #[test]
    fn adding_a_pair_moves_only_its_cluster() {
        let base = pairs(200);
        let before = assign(&base).unwrap();
        let mut more = base.clone();
        more.insert(("other".into(), "10.9.9.9".parse().unwrap()));
        let after = assign(&more).unwrap();
        let moved = before.iter().filter(|(p, id)| after[*p] != **id).count();
        assert!(moved <= 3, "{moved} pairs moved for one addition");
    }

    #[test]
    fn too_many_pairs() {
        assert!(assign(&pairs(MAX_BACKENDS)).is_none());
    }
}
