//! VIP lookup: exact (address, port, protocol) first, then the address's port-0 VIP.

use lb_common::{VipKey, VipMeta, addr_filter_bit};

use crate::{
    maps::{VIP_ADDR_FILTER, VIPS},
    parse::Ip,
};

/// False only when `dst` is certainly no VIP address (its filter bit is clear): one array
/// load, which the verifier inlines, instead of the hash lookups.
#[inline(always)]
pub fn maybe_vip_address(dst: &[u32; 4]) -> bool {
    let bit = addr_filter_bit(dst);
    match VIP_ADDR_FILTER.get(bit >> 6) {
        Some(word) => word & (1u64 << (bit & 63)) != 0,
        None => true,
    }
}

#[inline(always)]
pub fn lookup(family: u8, addr: [u32; 4], port: u16, proto: u8) -> Option<VipMeta> {
    let mut key = VipKey {
        addr,
        port,
        proto,
        family,
    };
    if let Some(meta) = unsafe { VIPS.get(&key) } {
        return Some(*meta);
    }
    key.port = 0;
    unsafe { VIPS.get(&key) }.copied()
}

/// Whether the destination address holds any VIP (its `proto == 0` address entry exists).
#[inline(always)]
pub fn is_vip_address(ip: &Ip) -> bool {
    let key = VipKey {
        addr: ip.dst,
        port: 0,
        proto: 0,
        family: ip.family,
    };
    unsafe { VIPS.get(&key) }.is_some()
}
