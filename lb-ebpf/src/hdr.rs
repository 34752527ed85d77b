//! Bounds-checked access to packet bytes. Every read goes through `check`, which compares
//! against `data_end` the way the verifier wants to see it.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const TCP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const ICMP_LEN: usize = 8;

/// ICMP "destination unreachable" (code 4: fragmentation needed).
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMPv6 "packet too big".
pub const ICMPV6_PKT_TOOBIG: u8 = 2;

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
///
/// Packet fields are often not aligned to their size (the IP header starts at offset 14).
/// `read_unaligned` would compile to one byte load per byte on BPF (the backend splits every
/// access it cannot prove aligned), so the hot path would cost several times the instructions.
/// A plain typed load is one instruction, and the kernel accepts unaligned *packet* access on
/// machines with efficient unaligned access (x86-64, arm64; the verifier enforces alignment
/// only with BPF_F_STRICT_ALIGNMENT), which is what C XDP programs such as Katran rely on.
/// Only packet addresses come here; stack and map values keep their natural alignment (the
/// `allows-misaligned-mem-access` target feature was tried: it also merges stack stores into
/// misaligned ones, which the verifier always rejects).
#[inline(always)]
pub unsafe fn load<T: Copy>(addr: usize) -> T {
    unsafe { core::ptr::read(addr as *const T) }
}

/// Writes a `T` at an address already proven in bounds by [`check`] (see [`load`]).
#[inline(always)]
pub unsafe fn store<T: Copy>(addr: usize, v: T) {
    unsafe { core::ptr::write(addr as *mut T, v) }
}

#[inline(always)]
pub fn packet_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Swaps source and destination MAC at `eth` (proven in bounds for 12 bytes): the frame goes
/// back where it came from. One u32 and one u16 each way: a `[u8; 6]` copy compiles to a
/// call to `memmove` on BPF.
#[inline(always)]
pub fn swap_macs(eth: usize) {
    unsafe {
        let dst_hi: u32 = load(eth);
        let dst_lo: u16 = load(eth + 4);
        let src_hi: u32 = load(eth + 6);
        let src_lo: u16 = load(eth + 10);
        store(eth, src_hi);
        store(eth + 4, src_lo);
        store(eth + 6, dst_hi);
        store(eth + 10, dst_lo);
    }
}

/// Moves the `L2`-byte link header (with its VLAN tag) forward over the `OUTER`-byte outer IP
/// header, then drops the bytes in front of it. At most 18 bytes move by at least 20: no
/// overlap. Both lengths are constants so the verifier can follow the bounds check.
#[inline(always)]
pub fn strip_outer<const L2: usize, const OUTER: usize>(ctx: &XdpContext) -> bool {
    let Some(start) = check(ctx, 0, L2 + OUTER) else {
        return false;
    };
    unsafe {
        let a: u64 = load(start);
        let b: u32 = load(start + 8);
        let c: u16 = load(start + 12);
        if L2 > ETH_LEN {
            let tag: u32 = load(start + ETH_LEN);
            store(start + OUTER + ETH_LEN, tag);
        }
        store(start + OUTER, a);
        store(start + OUTER + 8, b);
        store(start + OUTER + 12, c);
        bpf_xdp_adjust_head(ctx.ctx, OUTER as i32) == 0
    }
}
