//! Where the compiled XDP object comes from.

use std::{borrow::Cow, path::PathBuf};

/// Environment variable naming an object file to load instead of the embedded one.
pub const OBJECT_ENV: &str = "LB_EBPF_OBJECT";

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("cannot read eBPF object {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no eBPF object: this binary was built before `cargo xtask build-ebpf` ran; run it, then rebuild (or set {OBJECT_ENV}=PATH)"
    )]
    NotBuilt,
}

#[cfg(lb_embedded_object)]
static EMBEDDED: &[u8] = aya::include_bytes_aligned!(env!("LB_EBPF_OBJECT_PATH"));

/// The object bytes: `$LB_EBPF_OBJECT` if set, else the object embedded at build time.
pub fn bytes() -> Result<Cow<'static, [u8]>, ObjectError> {
    if let Some(path) = std::env::var_os(OBJECT_ENV) {
        let path = PathBuf::from(path);
        return std::fs::read(&path)
            .map(Cow::Owned)
            .map_err(|source| ObjectError::Read { path, source });
    }
    embedded().map(Cow::Borrowed).ok_or(ObjectError::NotBuilt)
}

#[cfg(lb_embedded_object)]
fn embedded() -> Option<&'static [u8]> {
    Some(EMBEDDED)
}

#[cfg(not(lb_embedded_object))]
fn embedded() -> Option<&'static [u8]> {
    None
}
