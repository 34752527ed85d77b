//! The flow hash used to index lookup tables. Both sides compute it (the data plane on every new
//! flow, userspace in tools and tests), and it has no per-node seed: two balancers with the same
//! config pick the same backend for a flow, so flows survive a failover between nodes.

use crate::{AF_INET, FlowKey};

const SEED: u64 = 0x5851_f42d_4c95_7f2d;

/// Finaliser of MurmurHash3 (64-bit): every input bit affects every output bit.
#[inline(always)]
const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[inline(always)]
const fn absorb(h: u64, word: u64) -> u64 {
    fmix64(h ^ word).wrapping_add(0x9e37_79b9_7f4a_7c15)
}

#[inline(always)]
const fn addr_hash(mut h: u64, a: &[u32; 4]) -> u64 {
    h = absorb(h, ((a[0] as u64) << 32) | a[1] as u64);
    absorb(h, ((a[2] as u64) << 32) | a[3] as u64)
}

/// Hash of the 5-tuple (used by `maglev`). IPv4 takes a shorter path (both addresses in one
/// word: two mixing rounds instead of five), which the data plane pays on every new flow.
#[inline(always)]
pub const fn flow_hash(k: &FlowKey) -> u32 {
    let ports = ((k.sport as u64) << 32)
        | ((k.dport as u64) << 16)
        | ((k.proto as u64) << 8)
        | k.family as u64;
    let h = if k.family == AF_INET {
        absorb(SEED, ((k.src[0] as u64) << 32) | k.dst[0] as u64)
    } else {
        addr_hash(addr_hash(SEED, &k.src), &k.dst)
    };
    (fmix64(h ^ ports) >> 32) as u32
}

/// Hash of the source address only (used by `ip-hash`).
#[inline(always)]
pub const fn source_hash(k: &FlowKey) -> u32 {
    let h = if k.family == AF_INET {
        absorb(SEED ^ AF_INET as u64, k.src[0] as u64)
    } else {
        addr_hash(SEED ^ k.family as u64, &k.src)
    };
    (fmix64(h) >> 32) as u32
}
