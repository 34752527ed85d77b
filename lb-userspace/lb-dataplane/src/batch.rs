//! `BPF_MAP_LOOKUP_BATCH` (Linux 5.6), which aya does not wrap.
//!
//! The sweep reads the whole connection table every second. Element by element that is two
//! syscalls per flow (next key, then lookup): at 100,000 flows, a tenth of a core spent in
//! lbd, on the same CPUs that forward. A batch reads thousands of elements per syscall.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Elements per syscall. A hash map returns whole buckets, so a bucket holding more than this
/// fails with ENOSPC; the caller then falls back to the element-wise walk.
pub const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`; the kernel zero-fills the rest of the union.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the size passed; the buffers
    // it points to are owned by the caller and sized for `attr.count` elements.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every element of the hash map `fd` (a snapshot per bucket: the data plane may insert and
/// the LRU evict while it is read). `K` and `V` must be the map's exact key and value types.
pub fn lookup_all<K: Pod + Default, V: Pod + Default>(
    fd: BorrowedFd<'_>,
) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // The position token is opaque (a bucket index for hash maps); 8 bytes covers it.
    let mut position = 0u64;
    let mut next = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &position as *const u64 as u64
            },
            out_batch: &mut next as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = (attr.count as usize).min(CHUNK);
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        match result {
            Ok(()) => {}
            // The end of the map: `count` says how many of this last call are valid.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        position = next;
        first = false;
    }
}
