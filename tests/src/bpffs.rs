//! A private BPF file system for pins.
//!
//! `ip netns exec` gives each command its own `/sys`, so pins under the root namespace's
//! `/sys/fs/bpf` are invisible to programs started inside a lab namespace. A bpffs mounted at a
//! path of our own (outside `/sys`) is visible everywhere, and being a separate instance it
//! never mixes with pins of other labs or of the machine.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{LabError, Result};

/// `BPF_FS_MAGIC` from `linux/magic.h`, the `f_type` of a bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A mounted bpffs; unmounted (lazily, `MNT_DETACH`) on drop.
#[derive(Debug)]
pub struct BpfFs {
    path: PathBuf,
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        LabError::io(
            format!("mount point {}", path.display()),
            std::io::Error::other("path contains a NUL byte"),
        )
    })
}

impl BpfFs {
    /// Creates `path` (and parents) and mounts a fresh bpffs there, mode 0700.
    pub fn mount(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        std::fs::create_dir_all(&path)
            .map_err(|e| LabError::io(format!("creating {}", path.display()), e))?;
        let target = cstring(&path)?;
        let fstype = c"bpf";
        let data = c"mode=0700";
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(LabError::io(
                format!("mount -t bpf bpf {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self { path })
    }

    /// The mount point: pin under it (`PATH/lbd/v1/...`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` is the root of a bpffs.
    pub fn is_bpffs(path: &Path) -> bool {
        let Ok(c) = cstring(path) else { return false };
        // SAFETY: statfs fills the zeroed struct; the path is a valid C string.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        let is_bpf = rc == 0 && st.f_type as i64 == BPF_FS_MAGIC;
        is_bpf
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Ok(c) = cstring(&self.path) {
            // SAFETY: valid C string; MNT_DETACH never blocks.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
