//! The shape of the compiled object, checked where no packet test would notice a change:
//! aya's `#[xdp]` wraps a program's body in an inner function, and once the body outgrew
//! LLVM's inlining threshold the entry became a two-instruction call into it, a BPF-to-BPF
//! call on every packet (non-VIP pass went from 28 to 35 ns, every path slower alike).

use lb_dataplane::object;

/// The pipeline is some 4,000 instructions; a wrapper around a call is 2.
const MIN_PIPELINE_INSNS: usize = 1_000;

#[test]
fn programs_carry_their_pipeline_inline() {
    let bytes = object::bytes().expect("the embedded object (run `cargo xtask build-ebpf`)");
    let obj = aya_obj::Object::parse(&bytes).expect("parse the object");
    for (name, min) in [
        (lb_common::names::PROG_BALANCER, MIN_PIPELINE_INSNS),
        (lb_common::names::PROG_DECAP, 100),
    ] {
        let prog = &obj.programs[name];
        let func = &obj.functions[&prog.function_key()];
        assert!(
            func.instructions.len() >= min,
            "{name} has {} instructions: its body is no longer inlined into the entry (mark it \
             #[inline(always)] under #[xdp])",
            func.instructions.len()
        );
    }
}

/// The capture must not multiply the verifier's work. `xdp_balancer` carries only the flag
/// and a tail call (the verifier walks about what it walks without them), and the capture
/// program, loaded for the first capture, walks the pipeline once more with the hook: at most
/// a quarter more. A hook that carried "capturing" through the pipeline as a known value once
/// made the verifier walk every path twice (520,000 instructions, 18 s to load under load).
#[test]
fn the_capture_hook_keeps_verification_small() {
    use lb_dataplane::{Dataplane, LoadOptions};
    crate::fixture::require_root();
    let mut dp = Dataplane::load(LoadOptions {
        bench: true,
        conn_table_size: 1024,
        ..LoadOptions::default()
    })
    .expect("load the object");
    let mut cap = dp.take_capture().expect("capture maps");
    dp.enable_capture(&mut cap)
        .expect("load the capture program");
    let walked = |name: &'static str| {
        dp.xdp(name)
            .expect("program")
            .info()
            .expect("program info")
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (5.16+)")
    };
    let balancer = walked(lb_common::names::PROG_BALANCER);
    let captured = walked(lb_common::names::PROG_BALANCER_CAPTURED);
    let bare = walked(lb_common::names::PROG_BALANCER_UNHOOKED);
    eprintln!(
        "verifier walked {balancer} instructions for xdp_balancer, {captured} for the capture \
         program, {bare} for the pipeline alone"
    );
    assert!(
        balancer <= bare + bare / 20,
        "xdp_balancer: {balancer} instructions walked, {bare} without the capture flag"
    );
    assert!(
        captured <= bare + bare / 4,
        "the capture program: {captured} instructions walked, {bare} without the hook"
    );
}
