//! `cargo xtask build-ebpf`: the XDP object, built with nightly for bpfel-unknown-none and
//! copied to `target/bpf/lb-ebpf.o`, where lb-dataplane's build script embeds it from.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};

use crate::{deps, util};

pub fn object_path() -> PathBuf {
    util::root().join("target/bpf/lb-ebpf.o")
}

pub fn build(release: bool) -> Result<PathBuf> {
    deps::toolchain()?;
    util::step(&format!(
        "building the XDP object ({})",
        if release { "release" } else { "dev" }
    ));
    let mut c = util::nightly_cargo();
    c.arg("build");
    if release {
        c.arg("--release");
    }
    util::run(&mut c)?;
    let profile = if release { "release" } else { "debug" };
    let built = util::root()
        .join("lb-ebpf/target/bpfel-unknown-none")
        .join(profile)
        .join("lb-ebpf");
    let dest = object_path();
    fs::create_dir_all(dest.parent().context("object path has a parent")?)?;
    // Only replace the file when it changed, so cargo does not rebuild lb-userspace for nothing.
    let new = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if fs::read(&dest).ok().as_deref() != Some(new.as_slice()) {
        fs::write(&dest, &new).with_context(|| format!("writing {}", dest.display()))?;
    }
    eprintln!("    object: {} ({} KiB)", dest.display(), new.len() / 1024);
    Ok(dest)
}
