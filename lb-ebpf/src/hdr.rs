//! Bounds-checked access to packet bytes. Every read goes through `check`, which compares
//! against `data_end` the way the verifier wants to see it.

use aya_ebpf::programs::XdpContext;

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const TCP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const ICMP_LEN: usize = 8;

/// Address of `len` bytes at `off`, if they are inside the packet.
#[inline(always)]
pub fn check(ctx: &XdpContext, off: usize, len: usize) -> Option<usize> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + len > end {
        return None;
    }
    Some(start + off)
}

/// Reads a `T` at an address already proven in bounds by [`check`].
#[inline(always)]
pub unsafe fn load<T: Copy>(addr: usize) -> T {
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

#[inline(always)]
pub unsafe fn store<T: Copy>(addr: usize, v: T) {
    unsafe { core::ptr::write_unaligned(addr as *mut T, v) }
}

#[inline(always)]
pub fn packet_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}
