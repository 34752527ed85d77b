//! Free disk space where the build goes: running out mid-build shows up as a linker crash
//! ("Bus error", "No space left on device") that does not say what to do.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::util;

/// What a full `cargo xtask test` from a fresh clone leaves in `target/` (measured: 3.4 GiB),
/// with some margin.
const TEST_NEEDS_GIB: f64 = 4.5;

/// Bytes available to unprivileged users on the filesystem holding `path`.
fn available_bytes(path: &Path) -> Option<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Warns (does not fail: an existing build needs far less) when the filesystem holding the
/// build directory has less free space than a build from scratch takes.
pub fn warn_if_low() {
    let root = util::root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let probe = if target.exists() { target } else { root };
    let Some(free) = available_bytes(&probe) else {
        return;
    };
    let free_gib = free as f64 / (1u64 << 30) as f64;
    if free_gib < TEST_NEEDS_GIB {
        eprintln!(
            "warning: {free_gib:.1} GiB free under {}; building every test from scratch takes about \
             {TEST_NEEDS_GIB} GiB. If the build dies with `No space left on device` or a linker \
             `Bus error`, free space (`cargo clean` removes old builds) and rerun.",
            probe.display()
        );
    }
}
