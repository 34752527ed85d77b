//! Embeds the eBPF object when `cargo xtask build-ebpf` has produced it, so `lbd` is a single
//! self-contained binary. Without it the crate still builds (clippy, unit tests) and the
//! loader explains how to build the object.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lb_embedded_object)");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let object = manifest.join("../../target/bpf/lb-ebpf.o");
    println!("cargo::rerun-if-changed={}", object.display());
    if object.exists() {
        println!("cargo::rustc-cfg=lb_embedded_object");
        println!("cargo::rustc-env=LB_EBPF_OBJECT_PATH={}", object.display());
    }
}
