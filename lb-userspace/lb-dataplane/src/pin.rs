//! Pins under bpffs: the maps and one XDP link per interface, in a directory that carries the
//! map layout version (aya reuses a pinned map without checking its layout, so a layout change
//! must never find old pins).

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};
use lb_common::{LAYOUT_VERSION, names};
use tracing::{info, warn};

use super::DataplaneError;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode; fail if the driver cannot.
    Driver,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
    /// Driver mode, falling back to generic with a warning.
    Auto,
}

/// Maps that hold state worth keeping across restarts.
const PINNED_MAPS: &[&str] = &[
    names::MAP_VIPS,
    names::MAP_BACKENDS,
    names::MAP_TABLES,
    names::MAP_LC_LISTS,
    names::MAP_LC_CONNS,
    names::MAP_CONNS,
    names::MAP_RR_CURSOR,
    names::MAP_SETTINGS,
    names::MAP_VIP_STATS,
    names::MAP_BACKEND_STATS,
    names::MAP_REASONS,
    names::MAP_DECAP_ADDRS,
    names::MAP_VIP_ADDR_FILTER,
    names::MAP_VIP_MODES,
    // The clock anchor converts the entries' jiffies: kept with the table it serves.
    names::MAP_FLOOD_WINDOW,
];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn versioned(dir: &Path) -> PathBuf {
    dir.join(format!("v{LAYOUT_VERSION}"))
}

pub fn map_paths(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let base = versioned(dir).join("maps");
    PINNED_MAPS.iter().map(|n| (*n, base.join(n))).collect()
}

pub fn link_path(dir: &Path, iface: &str) -> PathBuf {
    versioned(dir).join("links").join(iface)
}

fn pin_err(path: &Path, reason: impl Into<String>) -> DataplaneError {
    DataplaneError::Pin {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure `dir` is on a bpffs (mounting one there if needed) and creates the layout dirs.
pub fn prepare(dir: &Path) -> Result<(), DataplaneError> {
    fs::create_dir_all(dir).map_err(|e| pin_err(dir, format!("cannot create: {e}")))?;
    if !is_bpffs(dir) {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| pin_err(dir, "path contains a NUL byte"))?;
        // SAFETY: all strings are NUL-terminated; data is null for bpffs.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(pin_err(
                dir,
                format!(
                    "not a bpffs and mounting one failed: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        info!(dir = %dir.display(), "mounted a bpffs for pins");
    }
    for sub in ["maps", "links"] {
        let p = versioned(dir).join(sub);
        fs::create_dir_all(&p).map_err(|e| pin_err(&p, format!("cannot create: {e}")))?;
    }
    Ok(())
}

/// How the program ended up attached.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attached {
    pub iface: String,
    /// "driver" or "generic".
    pub mode: &'static str,
    /// True when an existing pinned link was taken over (hot restart).
    pub adopted: bool,
}

fn xdp_err(name: &'static str) -> impl Fn(ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program { name, source }
}

pub(super) fn attach(
    xdp: &mut Xdp,
    name: &'static str,
    iface: &str,
    mode: AttachMode,
    dir: &Path,
    record_dir: &Path,
) -> Result<Attached, DataplaneError> {
    let path = link_path(dir, iface);
    // bpffs holds no regular files: the attach mode is recorded beside the state file.
    let mode_file = record_dir.join(format!("xdp-mode.{iface}"));
    if path.exists() {
        let pinned = PinnedLink::from_pin(&path)
            .map_err(|e| pin_err(&path, format!("cannot open pinned link: {e}")))?;
        let fd: FdLink = pinned.into();
        let link =
            XdpLink::try_from(fd).map_err(|e| pin_err(&path, format!("not an XDP link: {e}")))?;
        let id = xdp.attach_to_link(link).map_err(xdp_err(name))?;
        // The pin still names the same link; keep our handle from detaching it on drop.
        let link = xdp.take_link(id).map_err(xdp_err(name))?;
        std::mem::forget(link);
        let recorded = fs::read_to_string(&mode_file).unwrap_or_default();
        let mode = if recorded.trim() == "generic" {
            "generic"
        } else {
            "driver"
        };
        info!(
            iface,
            mode, "took over the pinned XDP link (program replaced atomically)"
        );
        return Ok(Attached {
            iface: iface.into(),
            mode,
            adopted: true,
        });
    }
    let tries: &[(XdpMode, &'static str)] = match mode {
        AttachMode::Driver => &[(XdpMode::Driver, "driver")],
        AttachMode::Generic => &[(XdpMode::Skb, "generic")],
        AttachMode::Auto => &[(XdpMode::Driver, "driver"), (XdpMode::Skb, "generic")],
    };
    let mut last = None;
    for (i, (m, label)) in tries.iter().enumerate() {
        match xdp.attach(iface, *m) {
            Ok(id) => {
                if i > 0 {
                    warn!(
                        iface,
                        "driver-mode XDP failed ({:?}); attached in generic mode, which is much slower",
                        last
                    );
                }
                let link = xdp.take_link(id).map_err(xdp_err(name))?;
                let fd = FdLink::try_from(link).map_err(|e| {
                    pin_err(
                        &path,
                        format!(
                            "the kernel gave a netlink attachment, which cannot be pinned: {e}"
                        ),
                    )
                })?;
                fd.pin(&path)
                    .map_err(|e| pin_err(&path, format!("cannot pin link: {e}")))?;
                if let Err(e) =
                    fs::create_dir_all(record_dir).and_then(|_| fs::write(&mode_file, label))
                {
                    warn!(file = %mode_file.display(), error = %e, "cannot record the attach mode");
                }
                info!(iface, mode = label, "attached and pinned the XDP link");
                return Ok(Attached {
                    iface: iface.into(),
                    mode: label,
                    adopted: false,
                });
            }
            Err(e) => last = Some(e.to_string()),
        }
    }
    Err(pin_err(
        &path,
        format!("cannot attach to {iface}: {}", last.unwrap_or_default()),
    ))
}

/// Detaches every pinned link and removes all pins of this layout: nothing is left behind.
pub fn remove_all(dir: &Path) -> Result<(), DataplaneError> {
    let base = versioned(dir);
    let links = base.join("links");
    if let Ok(entries) = fs::read_dir(&links) {
        for e in entries.flatten() {
            let p = e.path();
            // Unpinning the last reference detaches the program from the interface.
            match PinnedLink::from_pin(&p) {
                Ok(link) => {
                    if let Err(err) = link.unpin() {
                        warn!(path = %p.display(), %err, "cannot unpin link");
                    }
                }
                Err(err) => warn!(path = %p.display(), %err, "cannot open pinned link"),
            }
            let _ = fs::remove_file(&p);
        }
    }
    for (_, p) in map_paths(dir) {
        let _ = fs::remove_file(p);
    }
    let _ = fs::remove_dir(links);
    let _ = fs::remove_dir(base.join("maps"));
    let _ = fs::remove_dir(base);
    Ok(())
}
